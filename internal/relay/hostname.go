package relay

import (
	"encoding/base32"
	"errors"
	"net"
	"net/http"
	"net/url"
	"strings"
)

// Host mode (Config.HostsDomain): a host is reached at its own origin, LABEL.DOMAIN, with its paths unchanged.
//
// The name of a host id is:
//   - the id itself when it is a plain DNS label: 1 to 63 bytes of a-z, 0-9 and '-', neither first nor last byte
//     '-', and no "--" anywhere ("laptop-1" → "laptop-1");
//   - otherwise "x--" followed by the id's bytes in lowercase base32hex without padding (RFC 4648 §7), cut into
//     labels of at most 60 characters, every label after the first prefixed "c--" instead ("org:laptop" →
//     "x--dtp6eejcc5o78rrg").
//
// Both forms are DNS labels (a-z, 0-9, '-'), so every valid id has a name, and the name decodes back to exactly that
// id: plain names contain no "--", encoded ones start with "x--", and a name is accepted only in the form HostName
// would give (so each host has one origin). Continuation labels start with "c--" and never name a host on their
// own, so no host's name is a parent domain of another's: a host cannot set a Domain cookie that reaches another.
// An id of 38 bytes or more that is not plain takes several labels; a wildcard certificate for *.DOMAIN covers
// only single-label names (docs/browsers.md).

// labelEncoding is base32hex in lowercase, without padding: its alphabet is made of DNS label characters.
var labelEncoding = base32.NewEncoding("0123456789abcdefghijklmnopqrstuv").WithPadding(base32.NoPadding)

const (
	encodedPrefix      = "x--"
	continuationPrefix = "c--"
	labelPayload       = 60 // 63, the DNS label limit, less the 3-byte prefix
)

// HostName returns the DNS name, relative to the hosts domain, of host id (see the mapping above).
func HostName(id string) string {
	if plainLabel(id) {
		return id
	}
	enc := labelEncoding.EncodeToString([]byte(id))
	var b strings.Builder
	for i := 0; len(enc) > 0; i++ {
		n := min(len(enc), labelPayload)
		if i == 0 {
			b.WriteString(encodedPrefix)
		} else {
			b.WriteString("." + continuationPrefix)
		}
		b.WriteString(enc[:n])
		enc = enc[n:]
	}
	return b.String()
}

// HostIDFromName returns the host id whose HostName is name (compared in lowercase), or false.
func HostIDFromName(name string) (string, bool) {
	if name == "" || len(name) > 253 {
		return "", false
	}
	name = strings.ToLower(name)
	if plainLabel(name) {
		return name, true
	}
	if !strings.HasPrefix(name, encodedPrefix) {
		return "", false
	}
	var enc strings.Builder
	for i, label := range strings.Split(name, ".") {
		prefix := continuationPrefix
		if i == 0 {
			prefix = encodedPrefix
		}
		payload, ok := strings.CutPrefix(label, prefix)
		if !ok || payload == "" || len(payload) > labelPayload {
			return "", false
		}
		enc.WriteString(payload)
	}
	raw, err := labelEncoding.DecodeString(enc.String())
	if err != nil {
		return "", false
	}
	id := string(raw)
	if !validHostID(id) || HostName(id) != name { // canonical form only: one origin per host
		return "", false
	}
	return id, true
}

// plainLabel reports whether s is its own name: a DNS label of a-z, 0-9 and '-' with no "--" and no '-' at
// either end.
func plainLabel(s string) bool {
	if s == "" || len(s) > 63 || s[0] == '-' || s[len(s)-1] == '-' || strings.Contains(s, "--") {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

// target is where a client exchange goes: a host, the escaped path (and nothing else) to forward, and in path mode
// the prefix the host's pages live under.
type target struct {
	id     string
	rest   string
	prefix string // "/hosts/{id as sent}" in path mode; "" in host mode
	// slashless is a path-mode request for "/hosts/{id}" exactly: it is redirected to "/hosts/{id}/".
	slashless bool
}

// hostOfRequest returns the request's host name without port and trailing dot, in lowercase.
func hostOfRequest(r *http.Request) string {
	h := r.Host
	if hh, _, err := net.SplitHostPort(h); err == nil {
		h = hh
	}
	return strings.ToLower(strings.TrimSuffix(h, "."))
}

// hostModeName returns the part of r's Host before ".DOMAIN" when r is addressed to a host in host mode.
func (s *Server) hostModeName(r *http.Request) (string, bool) {
	d := s.cfg.HostsDomain
	if d == "" {
		return "", false
	}
	h := hostOfRequest(r)
	name, ok := strings.CutSuffix(h, "."+d)
	return name, ok && name != ""
}

// resolve finds the target of a client exchange, by host name in host mode or by path. found is false when the
// request is for the relay itself; err is set for a host name or id that names no valid host.
func (s *Server) resolve(r *http.Request) (tg target, found bool, ok bool) {
	if name, isHost := s.hostModeName(r); isHost {
		id, valid := HostIDFromName(name)
		return target{id: id, rest: r.URL.EscapedPath()}, true, valid
	}
	p := r.URL.EscapedPath()
	if !strings.HasPrefix(p, hostsPrefix) {
		return target{}, false, false
	}
	id, rest, err := splitHostPath(p)
	if err != nil || !validHostID(id) {
		return target{}, true, false
	}
	// The prefix is "/hosts/{id as sent}": a slice of the path, no allocation on the hot path.
	n := len(p) - len(rest)
	if !strings.Contains(p[len(hostsPrefix):], "/") {
		return target{id: id, rest: rest, prefix: p, slashless: true}, true, true
	}
	return target{id: id, rest: rest, prefix: p[:n]}, true, true
}

// hostURLs returns a host's base URLs as seen from r: in host mode (when configured) and in path mode.
func (s *Server) hostURLs(r *http.Request, id string) (hostURL, pathURL string) {
	scheme := s.clientProto(r)
	pathURL = scheme + "://" + r.Host + hostsPrefix + url.PathEscape(id) + "/"
	if d := s.cfg.HostsDomain; d != "" {
		port := ""
		if _, p, err := net.SplitHostPort(r.Host); err == nil && p != "" {
			port = ":" + p
		}
		hostURL = scheme + "://" + HostName(id) + "." + d + port + "/"
	}
	return hostURL, pathURL
}

// isHostModeRequest reports whether r is addressed to a host by name (host mode).
func (s *Server) isHostModeRequest(r *http.Request) bool {
	_, ok := s.hostModeName(r)
	return ok
}

// validDomain reports whether d is a DNS name of labels of a-z, 0-9 and '-' (lowercase, no trailing dot).
func validDomain(d string) bool {
	if d == "" || len(d) > 200 {
		return false
	}
	for label := range strings.SplitSeq(d, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-') {
				return false
			}
		}
	}
	return true
}

// CheckHostsDomain reports whether d can be Config.HostsDomain: a DNS name of labels of a-z, 0-9 and '-' (case and
// a trailing dot do not matter).
func CheckHostsDomain(d string) error {
	if !validDomain(strings.ToLower(strings.Trim(d, "."))) {
		return errors.New("want a DNS name such as hosts.example.com (labels of a-z, 0-9 and '-')")
	}
	return nil
}
