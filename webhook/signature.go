package webhook

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// SignatureHeader is the header that carries a delivery's signature:
//
//	Switchboard-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>
const SignatureHeader = "Switchboard-Signature"

// The errors Verify returns; classify with errors.Is.
var (
	// ErrSignatureFormat: the header is missing, malformed, or has no v1 signature.
	ErrSignatureFormat = errors.New("webhook: malformed signature header")
	// ErrSignatureMismatch: no v1 signature in the header matches the body and secret.
	ErrSignatureMismatch = errors.New("webhook: signature does not match")
	// ErrSignatureExpired: the signature matches but its timestamp is further than the tolerance from now.
	ErrSignatureExpired = errors.New("webhook: signature timestamp outside tolerance")
)

// maxSignatureHeader bounds the header Verify parses; a real one is under 100 bytes.
const maxSignatureHeader = 4096

// Sign returns the Switchboard-Signature header value for body sent at t. The relay signs every delivery with it;
// tests of a receiver can use it to make signed requests.
func Sign(secret, body []byte, t time.Time) string {
	ts := strconv.FormatInt(t.Unix(), 10)
	return "t=" + ts + ",v1=" + hex.EncodeToString(mac(secret, ts, body))
}

func mac(secret []byte, ts string, body []byte) []byte {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(ts))
	m.Write([]byte{'.'})
	m.Write(body)
	return m.Sum(nil)
}

// Verify checks a Switchboard-Signature header against the raw request body and the shared secret (the relay's
// --webhook-secret). It accepts the header if one of its v1 values is the HMAC-SHA256 of "<t>.<body>" and t is
// within tolerance of the current time (tolerance 0 skips the time check; 5 minutes is a good value: it bounds
// replays of a captured request while allowing for clock skew). Retries are signed afresh, so a late delivery still
// carries a current t. Unknown keys are ignored, so a header may later carry other schemes next to v1; several v1
// values are allowed (one per secret, during a rotation). Headers longer than 4 KiB are refused unread.
//
// Verify the body exactly as received, before decoding it. It returns nil, or an error wrapping
// ErrSignatureFormat, ErrSignatureMismatch or ErrSignatureExpired.
func Verify(secret []byte, header string, body []byte, tolerance time.Duration) error {
	return verifyAt(header, body, secret, tolerance, time.Now())
}

func verifyAt(header string, body, secret []byte, tolerance time.Duration, now time.Time) error {
	ts, sigs, err := parseSignature(header)
	if err != nil {
		return err
	}
	t, _ := strconv.ParseInt(ts, 10, 64) // parseSignature checked it
	want := mac(secret, ts, body)
	ok := false
	for _, s := range sigs {
		if hmac.Equal(s, want) {
			ok = true
		}
	}
	if !ok {
		return ErrSignatureMismatch
	}
	if tolerance > 0 {
		skew := now.Sub(time.Unix(t, 0))
		if skew > tolerance || skew < -tolerance {
			return fmt.Errorf("%w: t=%d is %v from now", ErrSignatureExpired, t, skew.Round(time.Second))
		}
	}
	return nil
}

// parseSignature splits "t=<digits>,v1=<hex>[,v1=<hex>...][,other=...]" into the timestamp (as sent, which is
// what was signed) and the decoded v1 signatures.
func parseSignature(header string) (ts string, sigs [][]byte, err error) {
	if header == "" {
		return "", nil, fmt.Errorf("%w: empty", ErrSignatureFormat)
	}
	if len(header) > maxSignatureHeader {
		return "", nil, fmt.Errorf("%w: %d bytes", ErrSignatureFormat, len(header))
	}
	for part := range strings.SplitSeq(header, ",") {
		k, v, found := strings.Cut(strings.TrimSpace(part), "=")
		if !found {
			return "", nil, fmt.Errorf("%w: element without '='", ErrSignatureFormat)
		}
		switch k {
		case "t":
			if ts != "" {
				return "", nil, fmt.Errorf("%w: two timestamps", ErrSignatureFormat)
			}
			if !decimal(v) {
				return "", nil, fmt.Errorf("%w: timestamp is not decimal seconds", ErrSignatureFormat)
			}
			ts = v
		case "v1":
			if len(v) != 2*sha256.Size {
				return "", nil, fmt.Errorf("%w: v1 is %d hex digits, want %d", ErrSignatureFormat, len(v), 2*sha256.Size)
			}
			b, err := hex.DecodeString(v)
			if err != nil {
				return "", nil, fmt.Errorf("%w: v1 is not hex", ErrSignatureFormat)
			}
			sigs = append(sigs, b)
		}
	}
	if ts == "" {
		return "", nil, fmt.Errorf("%w: no t=", ErrSignatureFormat)
	}
	if len(sigs) == 0 {
		return "", nil, fmt.Errorf("%w: no v1=", ErrSignatureFormat)
	}
	return ts, sigs, nil
}

// decimal reports whether s is 1–18 ASCII digits (fits an int64 without overflow).
func decimal(s string) bool {
	if s == "" || len(s) > 18 {
		return false
	}
	for i := range len(s) {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}
