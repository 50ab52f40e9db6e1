package relay

import (
	"net/http"
	"strings"
	"testing"

	"github.com/switchboard-relay/switchboard/internal/auth"
)

// FuzzCallerKey: whatever subject, X-Forwarded-For and remote address arrive, the caller key names a subject
// exactly when the caller has one, and an address key is one trimmed element without commas.
func FuzzCallerKey(f *testing.F) {
	f.Add("alice", "192.0.2.1, 198.51.100.7", "10.0.0.1:5", true)
	f.Add("", "", "10.0.0.1:5", false)
	f.Add(auth.AnonymousSubject, " , ,", "[2001:db8::1]:443", true)
	f.Add("", "x,", "no-port", true)
	f.Fuzz(func(t *testing.T, subject, xff, remote string, hop bool) {
		r := &http.Request{Header: http.Header{}, RemoteAddr: remote}
		if xff != "" {
			r.Header["X-Forwarded-For"] = []string{xff}
		}
		k := callerKey(r, subject, hop)
		named := subject != "" && subject != auth.AnonymousSubject
		if named != strings.HasPrefix(k, "sub:") {
			t.Fatalf("callerKey(subject %q) = %q", subject, k)
		}
		if named {
			return
		}
		ip, ok := strings.CutPrefix(k, "ip:")
		if !ok {
			t.Fatalf("key %q is neither a subject nor an address", k)
		}
		// Without a usable X-Forwarded-For the key is the connection's own address, which a socket never writes
		// with commas.
		if hop && strings.Contains(ip, ",") && !strings.Contains(remote, ",") {
			t.Fatalf("address key %q from X-Forwarded-For %q holds a list", k, xff)
		}
	})
}
