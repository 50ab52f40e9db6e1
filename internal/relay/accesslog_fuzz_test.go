package relay

import (
	"bufio"
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"unicode/utf8"
)

// FuzzAccessLine: whatever request line a client sends and whatever subject a token carries, the access log line
// is one line of valid JSON, its path has no query string and at most accessMaxPath bytes, and the query's bytes
// (where a token may travel) are not in it unless the path itself holds them.
func FuzzAccessLine(f *testing.F) {
	f.Add("GET", "/hosts/h/x?access_token=secret", "alice")
	f.Add("POST", "/hosts/org%3Am/a%0Ab?q=1", "bob\n{\"x\":1}")
	f.Add("GET", "/hosts/h/"+strings.Repeat("é", 700), "\xff\xfe")
	f.Fuzz(func(t *testing.T, method, reqTarget, subject string) {
		req, err := http.ReadRequest(bufio.NewReader(strings.NewReader(method + " " + reqTarget + " HTTP/1.1\r\nHost: relay\r\n\r\n")))
		if err != nil {
			return
		}
		id := req.URL.Path
		_, _, e := (&Server{}).startAccess(httptest.NewRecorder(), req, target{id: id})
		e.subject = subject
		b := e.line("r", 200, 1)
		if b == nil {
			t.Fatal("no line")
		}
		if bytes.IndexByte(b, '\n') != len(b)-1 || !utf8.Valid(b) {
			t.Fatalf("not one UTF-8 line: %q", b)
		}
		var l struct {
			Path    string `json:"path"`
			HostID  string `json:"host_id"`
			Subject string `json:"subject"`
		}
		if err := json.Unmarshal(b, &l); err != nil {
			t.Fatalf("%q: %v", b, err)
		}
		if len(l.Path) > accessMaxPath || len(l.HostID) > 128 || strings.Contains(l.Path, "?") && !strings.Contains(req.URL.EscapedPath(), "?") {
			t.Fatalf("path %q of %q", l.Path, reqTarget)
		}
		if q := req.URL.RawQuery; len(q) >= 8 && !strings.Contains(req.URL.EscapedPath(), q) && !strings.Contains(subject, q) &&
			!strings.Contains(method, q) && !strings.Contains(id, q) && bytes.Contains(b, []byte(q)) {
			t.Fatalf("the query %q is in the line %q", q, b)
		}
	})
}
