package relay

import (
	"bufio"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/switchboard-relay/switchboard/internal/auth"
)

// newBenchServer is a Server for benchmarks of the request path; it starts nothing.
func newBenchServer(tb testing.TB) *Server {
	tb.Helper()
	s, err := New(Config{Verifier: auth.AllowAll()})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = s.Close() })
	return s
}

// clientRequest is a typical proxied client request, as the relay's http.Server hands it over.
func clientRequest() *http.Request {
	r := httptest.NewRequest("GET", "http://relay.example/hosts/org%3Amachine/trpc/user.get?batch=1&access_token=abc.def.ghi&input=%7B%7D", nil)
	r.Header.Set("Authorization", "Bearer abc.def.ghi")
	r.Header.Set("Accept", "application/json")
	r.Header.Set("User-Agent", "bench/1.0")
	r.Header.Set("X-Switchboard-Subject", "forged")
	r.Header.Set("Cookie", "a=b")
	return r
}

func BenchmarkSplitHostPath(b *testing.B) {
	for _, p := range []string{"/hosts/org:machine/trpc/user.get", "/hosts/org%3Amachine/a/b/c"} {
		b.Run(strings.ReplaceAll(p, "/", "_"), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, _, err := splitHostPath(p); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkRequestHead measures the relay's writing of a proxied request's head to the host: header policy,
// forwarding headers, subject, request-target without the access token.
func BenchmarkRequestHead(b *testing.B) {
	s := newBenchServer(b)
	in := clientRequest()
	ex := &exchange{path: "/trpc/user.get", subject: "alice"}
	bw := bufio.NewWriterSize(io.Discard, 4<<10)
	b.ReportAllocs()
	for b.Loop() {
		s.writeRequestHead(bw, in, ex, requestTarget(ex.path, in.URL), false)
		_ = bw.Flush()
	}
}

// BenchmarkUpgradeRequest measures building the request sent to the host for a WebSocket upgrade.
func BenchmarkUpgradeRequest(b *testing.B) {
	s := newBenchServer(b)
	in := clientRequest()
	in.Header.Set("Connection", "Upgrade")
	in.Header.Set("Upgrade", "websocket")
	in.Header.Set("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
	in.Header.Set("Sec-WebSocket-Version", "13")
	ex := &exchange{path: "/term", subject: "alice"}
	b.ReportAllocs()
	for b.Loop() {
		out := s.upgradeRequest(in, ex)
		if out.Header.Get("Upgrade") != "websocket" {
			b.Fatal("upgrade header lost")
		}
	}
}

// FuzzSplitHostPath checks that any escaped request path splits into a forwarded path that starts with "/" and is
// exactly the tail of the input after the host id.
func FuzzSplitHostPath(f *testing.F) {
	for _, s := range []string{"/hosts/org:m/a", "/hosts/org%3Am", "/hosts/a//b", "/hosts/%zz/x", "/hosts/", "/hosts/a%2Fb/c%2F"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, p string) {
		if !strings.HasPrefix(p, hostsPrefix) {
			return
		}
		id, rest, err := splitHostPath(p)
		if !strings.HasPrefix(rest, "/") {
			t.Fatalf("splitHostPath(%q) rest = %q, want a leading /", p, rest)
		}
		if err != nil {
			return
		}
		tail := strings.TrimPrefix(p, hostsPrefix)
		if rest != "/" && !strings.HasSuffix(tail, rest) {
			t.Fatalf("splitHostPath(%q) rest = %q, not the input's tail", p, rest)
		}
		if strings.Contains(id, "/") && !strings.Contains(strings.ToLower(tail), "%2f") {
			t.Fatalf("splitHostPath(%q) id = %q contains / though the input has no escaped one", p, id)
		}
	})
}
