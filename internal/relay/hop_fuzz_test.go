package relay

import (
	"net/http"
	"net/url"
	"testing"
	"time"
)

// FuzzVerifyHop: any Switchboard-Hop header, subject header, method and URI is refused unless it carries the
// signature of exactly that method, URI and subject; a request signed by signHop always verifies, with its
// subject intact.
func FuzzVerifyHop(f *testing.F) {
	now := time.Unix(1_800_000_000, 0)
	f.Add("B,1800000000,00", "", "GET", "/hosts/h/x", "alice")
	f.Add("", "bob", "POST", "/hosts/h", "")
	f.Add(",,", "%zz", "GET", "/", "a,b")
	f.Add("a,b,c,d", "x+y", "GET", "/hosts/h/x?y=1", "x y")
	s := &Server{cfg: Config{Replica: "A", ClusterSecret: []byte("fuzz-secret")}}
	f.Fuzz(func(t *testing.T, hop, hopSubject, method, uri, subject string) {
		r := &http.Request{Method: method, RequestURI: uri, Header: http.Header{}}
		r.Header.Set(headerHop, hop)
		r.Header.Set(headerHopSubject, hopSubject)
		if _, _, err := s.verifyHop(r, now); err == nil {
			// Only a correct MAC may pass: recompute it from what verifyHop must have parsed.
			sub, _ := url.QueryUnescape(hopSubject)
			ok := false
			for i := len(hop) - 1; i >= 0 && !ok; i-- {
				if hop[i] != ',' {
					continue
				}
				for j := i - 1; j > 0; j-- {
					if hop[j] == ',' {
						ok = hop[i+1:] == hopMAC(s.cfg.ClusterSecret, hop[:j], hop[j+1:i], method, uri, sub)
						break
					}
				}
				break
			}
			if !ok {
				t.Fatalf("verifyHop accepted %q subject %q for %s %s", hop, hopSubject, method, uri)
			}
		}
		// A request this replica signs verifies.
		u, err := url.ParseRequestURI(uri)
		if err != nil || method == "" || !validMethod(method) {
			return
		}
		out := &http.Request{Method: method, URL: u, Header: http.Header{}}
		s.signHop(out, subject)
		in := &http.Request{Method: method, RequestURI: out.URL.RequestURI(), Header: out.Header}
		from, got, err := s.verifyHop(in, time.Now())
		if err != nil || from != "A" || got != subject {
			t.Fatalf("signed %s %s subject %q: verified as %q %q, %v", method, uri, subject, from, got, err)
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
