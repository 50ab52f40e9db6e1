package relay

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/switchboard-relay/switchboard/internal/directory"
)

// Bodies of the admin API's POST requests, and the agent versions --min-agent-version compares. Everything here
// reads what a caller sent: each parser is bounded and has a fuzz target (adminreq_fuzz_test.go).

// maxAdminBody bounds the body of an admin request.
const maxAdminBody = 4 << 10

// maxBan bounds a ban; maxRevocation bounds how far ahead a revocation may end. Longer ones are refused, so the
// directory holds nothing for ever.
const (
	maxBan        = 365 * 24 * time.Hour
	maxRevocation = 366 * 24 * time.Hour
)

// kickRequest is the body of POST /v1/admin/hosts/{id}/kick: {"ban": "10m"} (a Go duration), or empty.
type kickRequest struct {
	Ban string `json:"ban"`
}

// parseKick reads a kick body and returns the ban's duration (0: none).
func parseKick(body []byte) (time.Duration, error) {
	var k kickRequest
	if err := decodeAdminBody(body, &k); err != nil {
		return 0, err
	}
	if k.Ban == "" {
		return 0, nil
	}
	d, err := parseAdminDuration(k.Ban)
	if err != nil {
		return 0, fmt.Errorf("ban: %w", err)
	}
	if d > maxBan {
		return 0, fmt.Errorf("ban: at most %v", maxBan)
	}
	return d, nil
}

// revokeRequest is the body of POST /v1/admin/revoke: {"jti": "…"} or {"sub": "…"}, with "until" (RFC 3339) or
// "for" (a Go duration from now).
type revokeRequest struct {
	JTI   string `json:"jti"`
	Sub   string `json:"sub"`
	Until string `json:"until"`
	For   string `json:"for"`
}

// parseRevoke reads a revoke body into a revocation, relative to now.
func parseRevoke(body []byte, now time.Time) (directory.Revocation, error) {
	var q revokeRequest
	if err := decodeAdminBody(body, &q); err != nil {
		return directory.Revocation{}, err
	}
	return q.revocation(now)
}

// revocation checks q and makes it a revocation, relative to now.
func (q revokeRequest) revocation(now time.Time) (directory.Revocation, error) {
	rv := directory.Revocation{TokenID: q.JTI, Subject: q.Sub}
	switch {
	case (q.JTI == "") == (q.Sub == ""):
		return rv, errors.New("give one of jti and sub")
	case len(q.JTI) > 256 || len(q.Sub) > 256:
		return rv, errors.New("jti and sub are at most 256 bytes")
	case (q.Until == "") == (q.For == ""):
		return rv, errors.New("give one of until (RFC 3339) and for (a duration)")
	case q.Until != "":
		u, err := time.Parse(time.RFC3339, q.Until)
		if err != nil {
			return rv, errors.New("until must be an RFC 3339 time, such as 2030-01-02T15:04:05Z")
		}
		rv.Until = u
	default:
		d, err := parseAdminDuration(q.For)
		if err != nil {
			return rv, fmt.Errorf("for: %w", err)
		}
		rv.Until = now.Add(d)
	}
	switch {
	case !rv.Until.After(now):
		return rv, errors.New("until is not in the future")
	case rv.Until.Sub(now) > maxRevocation:
		return rv, fmt.Errorf("until is more than %v ahead; a token that lives longer should be refused by its issuer", maxRevocation)
	}
	rv.Until = rv.Until.UTC().Truncate(time.Millisecond) // the directory's precision
	return rv, nil
}

// decodeAdminBody decodes one JSON object of known fields into v; an empty body leaves v as it is.
func decodeAdminBody(body []byte, v any) error {
	if len(bytes.TrimSpace(body)) == 0 {
		return nil
	}
	d := json.NewDecoder(bytes.NewReader(body))
	d.DisallowUnknownFields()
	if err := d.Decode(v); err != nil {
		return fmt.Errorf("body is not the JSON object expected: %w", err)
	}
	if _, err := d.Token(); err != io.EOF {
		return errors.New("body holds more than one JSON value")
	}
	return nil
}

// parseAdminDuration reads a positive Go duration ("90s", "10m", "24h").
func parseAdminDuration(s string) (time.Duration, error) {
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		return 0, fmt.Errorf("%q is not a positive duration such as 10m or 24h", truncateText(s, 32))
	}
	return d, nil
}

// truncateText shortens s quoted in an error, at a character boundary, and marks the cut.
func truncateText(s string, n int) string {
	if len(s) > n {
		return truncate(s, n) + "…"
	}
	return s
}

// agentVersion is a version an agent sent: MAJOR.MINOR.PATCH, with an optional "v" and an optional pre-release
// ("-rc.1") or build ("+x") suffix. A pre-release sorts before its release.
type agentVersion struct {
	num [3]uint64
	pre bool
}

// parseAgentVersion reads an agent version; "dev", empty and anything else unparsable fail.
func parseAgentVersion(s string) (agentVersion, error) {
	var v agentVersion
	s = strings.TrimPrefix(s, "v")
	if i := strings.IndexByte(s, '+'); i >= 0 {
		s = s[:i]
	}
	if i := strings.IndexByte(s, '-'); i >= 0 {
		s, v.pre = s[:i], true
	}
	parts := strings.Split(s, ".")
	if len(parts) != 3 {
		return v, fmt.Errorf("version %q is not MAJOR.MINOR.PATCH", truncateText(s, 32))
	}
	for i, p := range parts {
		if p == "" || len(p) > 9 || strings.TrimLeft(p, "0123456789") != "" {
			return v, fmt.Errorf("version %q is not MAJOR.MINOR.PATCH", truncateText(s, 32))
		}
		v.num[i], _ = strconv.ParseUint(p, 10, 64)
	}
	return v, nil
}

// less reports whether v sorts before w.
func (v agentVersion) less(w agentVersion) bool {
	for i := range v.num {
		if v.num[i] != w.num[i] {
			return v.num[i] < w.num[i]
		}
	}
	return v.pre && !w.pre
}

// CheckAgentVersion validates a --min-agent-version value.
func CheckAgentVersion(s string) error {
	_, err := parseAgentVersion(s)
	return err
}
