package relay

import (
	"net/http"
	"strings"
	"testing"
)

func TestFoldHeaderName(t *testing.T) {
	for _, tc := range []struct {
		name     string
		reserved bool
	}{
		{"X-Switchboard-Subject", true}, {"X_Switchboard_Subject", true}, {"x_SWITCHBOARD-subject", true},
		{"X-Switchboard-Anything", true}, {"Authorization", true}, {"authorization", true}, {"Proxy_Authorization", true},
		{"X_Forwarded_For", true}, {"X-Forwarded-Port", true}, {"Forwarded", true}, {"X_Real_IP", true},
		{"Switchboard-Hop", true}, {"Switchboard_Hop_Subject", true}, {"Transfer_Encoding", true}, {"Te", true},
		{"Authorization_", false}, {"X-Switchboardsubject", false}, {"Switchboard-Signature", false},
		{"Content-Type", false}, {"X-Request-Id", false}, {"Forwarded-By", false},
	} {
		if got := reservedHeader(tc.name); got != tc.reserved {
			t.Errorf("reservedHeader(%q) = %v, want %v", tc.name, got, tc.reserved)
		}
	}
}

func TestStripReservedKeepsProxyHopHeaders(t *testing.T) {
	h := http.Header{
		"Connection": {"Upgrade"}, "Upgrade": {"websocket"}, "Te": {"trailers"}, "Transfer_encoding": {"chunked"},
		"X_switchboard_subject": {"admin"}, "X-Switchboard-Subject": {"admin"}, "Content-Type": {"text/plain"},
	}
	stripReserved(h)
	want := http.Header{"Connection": {"Upgrade"}, "Upgrade": {"websocket"}, "Te": {"trailers"}, "Content-Type": {"text/plain"}}
	if len(h) != len(want) {
		t.Fatalf("after stripReserved: %v, want %v", h, want)
	}
	for k := range want {
		if _, ok := h[k]; !ok {
			t.Fatalf("after stripReserved: %v, want %v", h, want)
		}
	}
	tr := http.Header{"Te": {"trailers"}, "Authorization": {"x"}, "X-Ok": {"1"}}
	stripReservedTrailers(tr)
	if len(tr) != 1 || tr.Get("X-Ok") != "1" {
		t.Fatalf("after stripReservedTrailers: %v", tr)
	}
}

// FuzzStripReserved: whatever header names a client sends, none that a CGI/WSGI gateway would read as a reserved
// name survives stripReserved, except the exact hop-by-hop names the proxy machinery itself manages; and no other
// name is removed.
func FuzzStripReserved(f *testing.F) {
	f.Add("X_Switchboard_Subject", "x-forwarded-for", "Content-Type")
	f.Add("AUTHORIZATION", "Switchboard_Hop", "Te")
	f.Add("x_real_ip", "Transfer_Encoding", "X-Request-Id")
	f.Fuzz(func(t *testing.T, a, b, c string) {
		h := http.Header{}
		for _, k := range []string{a, b, c} {
			h[k] = []string{"v"}
			h[http.CanonicalHeaderKey(k)] = []string{"v"}
		}
		stripReserved(h)
		for k := range h {
			f := strings.ToLower(strings.ReplaceAll(k, "_", "-"))
			lookAlike := strings.HasPrefix(f, "x-switchboard-") || strings.HasPrefix(f, "x-forwarded-") ||
				strings.HasPrefix(f, "switchboard-hop-") || f == "switchboard-hop" || f == "authorization" ||
				f == "proxy-authorization" || f == "forwarded" || f == "x-real-ip"
			if lookAlike {
				t.Fatalf("%q survived stripReserved", k)
			}
			if reservedHeader(k) && strings.ContainsRune(k, '_') {
				t.Fatalf("look-alike %q survived stripReserved", k)
			}
		}
		for _, k := range []string{a, b, c} {
			if !reservedHeader(k) {
				if _, ok := h[k]; !ok {
					t.Fatalf("%q is not reserved but was removed", k)
				}
			}
		}
	})
}
