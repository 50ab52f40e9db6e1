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
	f.Add("0", "/00000"+strings.Repeat("\xa9", 40)+"\xc3", "0")
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
		// A byte that is not UTF-8 comes back from JSON as U+FFFD, three bytes: the host id's bound is in runes.
		if len(l.Path) > accessMaxPath || utf8.RuneCountInString(l.HostID) > 128 || strings.Contains(l.Path, "?") && !strings.Contains(req.URL.EscapedPath(), "?") {
			t.Fatalf("path %q of %q", l.Path, reqTarget)
		}
		// The query's bytes are in no field, unless that field's own source holds them. Fields are compared
		// decoded, one by one, so bytes that only meet across a field boundary in the JSON do not count.
		q := req.URL.RawQuery
		if len(q) < 8 {
			return
		}
		var fields map[string]any
		if err := json.Unmarshal(b, &fields); err != nil {
			t.Fatal(err)
		}
		sources := map[string]string{"path": req.URL.EscapedPath(), "host_id": id, "subject": subject, "method": method}
		for k, v := range fields {
			if s, ok := v.(string); ok && strings.Contains(s, q) && !strings.Contains(sources[k], q) {
				t.Fatalf("the query %q is in the field %s of %q", q, k, b)
			}
		}
	})
}
