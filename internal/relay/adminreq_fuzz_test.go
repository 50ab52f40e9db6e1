package relay

import (
	"strings"
	"testing"
	"time"
)

// FuzzAdminRequests feeds arbitrary bodies to the admin API's request parsers and arbitrary strings to the agent
// version parser: none panics, and what they accept is within bounds (a ban up to maxBan, a revocation of one jti
// or sub, bounded, ending in the future within maxRevocation; a version that compares consistently).
func FuzzAdminRequests(f *testing.F) {
	for _, s := range []string{``, `{}`, `{"ban":"10m"}`, `{"ban":"-1s"}`, `{"ban":"9999999h"}`, `{"jti":"a","for":"1h"}`,
		`{"sub":"s","until":"2030-01-02T15:04:05Z"}`, `{"sub":"s","for":"1h","until":"2030-01-02T15:04:05Z"}`, `{"x":1}`,
		`{"ban":"1s"}{"ban":"2s"}`, `1.2.3`, `v1.2.3-rc.1+b`, `01.2.3`, `1.2`, `dev`} {
		f.Add([]byte(s))
	}
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	floor, _ := parseAgentVersion("1.2.0")
	f.Fuzz(func(t *testing.T, body []byte) {
		if d, err := parseKick(body); err == nil && (d < 0 || d > maxBan) {
			t.Fatalf("kick %q: ban %v out of bounds", body, d)
		}
		if rv, err := parseRevoke(body, now); err == nil {
			if (rv.TokenID == "") == (rv.Subject == "") || len(rv.TokenID) > 256 || len(rv.Subject) > 256 {
				t.Fatalf("revoke %q: %+v names not exactly one bounded jti or sub", body, rv)
			}
			if !rv.Until.After(now) || rv.Until.Sub(now) > maxRevocation {
				t.Fatalf("revoke %q: until %v out of bounds", body, rv.Until)
			}
		}
		v, err := parseAgentVersion(string(body))
		if err != nil {
			return
		}
		if v.less(v) {
			t.Fatalf("version %q sorts before itself", body)
		}
		if v.less(floor) && floor.less(v) {
			t.Fatalf("version %q both before and after %v", body, floor)
		}
		if !strings.Contains(string(body), ".") {
			t.Fatalf("version %q accepted without dots", body)
		}
	})
}
