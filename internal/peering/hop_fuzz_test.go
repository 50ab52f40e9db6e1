package peering

import (
	"errors"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

// FuzzVerifyHop: any Switchboard-Hop header, subject header, method, URI, Host and X-Forwarded-For is refused unless
// it carries the signature of exactly those; a request signed by Sign always verifies, with its subject intact,
// once: sent again it is refused as a replay, and with its forwarding headers or Host changed it is refused.
func FuzzVerifyHop(f *testing.F) {
	now := time.Unix(1_800_000_000, 0)
	f.Add("B,1800000000,00112233445566778899aabbccddeeff,00", "", "GET", "/hosts/h/x", "relay", "", "alice")
	f.Add("", "bob", "POST", "/hosts/h", "relay:443", "10.0.0.1", "")
	f.Add(",,,", "%zz", "GET", "/", "", "a, b", "a,b")
	f.Add("a,b,c,d,e", "x+y", "GET", "/hosts/h/x?y=1", "[::1]:80", "1.2.3.4", "x y")
	f.Fuzz(func(t *testing.T, hop, hopSubject, method, uri, host, xff, subject string) {
		s := NewSigner("A", []byte("fuzz-secret"), 1<<10)
		r := &http.Request{Method: method, RequestURI: uri, Host: host, Header: http.Header{}}
		r.Header.Set(HeaderHop, hop)
		r.Header.Set(HeaderHopSubject, hopSubject)
		if xff != "" {
			r.Header.Set("X-Forwarded-For", xff)
		}
		if _, _, err := s.Verify(r, now); err == nil {
			// Only a correct MAC may pass: recompute it from what Verify must have parsed.
			sub, _ := url.QueryUnescape(hopSubject)
			parts := strings.Split(hop, ",")
			ok := len(parts) >= 4
			if ok {
				n := len(parts)
				from := strings.Join(parts[:n-3], ",")
				ok = parts[n-1] == hopMAC(s.secret, from, parts[n-3], parts[n-2], method, uri, host, sub, r.Header)
			}
			if !ok {
				t.Fatalf("Verify accepted %q subject %q for %s %s host %q", hop, hopSubject, method, uri, host)
			}
		}
		// A request this replica signs verifies, once.
		u, err := url.ParseRequestURI(uri)
		if err != nil || method == "" || !validMethod(method) {
			return
		}
		out := &http.Request{Method: method, URL: u, Host: host, Header: http.Header{}}
		if xff != "" {
			out.Header.Set("X-Forwarded-For", xff)
		}
		s.Sign(out, subject)
		in := &http.Request{Method: method, RequestURI: out.URL.RequestURI(), Host: host, Header: out.Header}
		from, got, err := s.Verify(in, time.Now())
		if err != nil || from != "A" || got != subject {
			t.Fatalf("signed %s %s subject %q: verified as %q %q, %v", method, uri, subject, from, got, err)
		}
		if _, _, err := s.Verify(in, time.Now()); !errors.Is(err, ErrHopReplayed) {
			t.Fatalf("signed %s %s sent twice: %v, want ErrHopReplayed", method, uri, err)
		}
		// Changed forwarding headers or Host (with a fresh signature's nonce, so the replay check is not what fails).
		s.Sign(out, subject)
		forged := out.Header.Clone()
		forged.Add("X-Forwarded-For", "203.0.113.66")
		in = &http.Request{Method: method, RequestURI: out.URL.RequestURI(), Host: host, Header: forged}
		if _, _, err := s.Verify(in, time.Now()); !errors.Is(err, ErrHopSignature) {
			t.Fatalf("signed %s %s with an X-Forwarded-For added: %v, want ErrHopSignature", method, uri, err)
		}
		in = &http.Request{Method: method, RequestURI: out.URL.RequestURI(), Host: host + "x", Header: out.Header}
		if _, _, err := s.Verify(in, time.Now()); !errors.Is(err, ErrHopSignature) {
			t.Fatalf("signed %s %s with another Host: %v, want ErrHopSignature", method, uri, err)
		}
	})
}

// validMethod reports whether m is an HTTP token (what a request line can carry).
func validMethod(m string) bool {
	for i := 0; i < len(m); i++ {
		c := m[i]
		if c <= ' ' || c >= 0x7f || c == ',' || c == '"' || c == '(' || c == ')' || c == ':' || c == '/' {
			return false
		}
	}
	return true
}
