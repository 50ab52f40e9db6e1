package cli

import (
	"bufio"
	"bytes"
	"net/http"
	"net/textproto"
	"reflect"
	"testing"
)

// FuzzParseHeaders: an --upstream-header value either fails with an error or parses to a header that survives
// the wire unchanged: written as HTTP/1.1 and read back by net/textproto (which refuses bad names and values).
func FuzzParseHeaders(f *testing.F) {
	for _, s := range []string{
		"X-Pre-Shared: abc", "bad header", "X: a\r\nInjected: yes", "X:", "x-lower:\tv\t", ": v", "X(: v",
		"X: a\x00b", "X: caf\xc3\xa9", "Content-Length: 5", "host: example.com", "X: a: b",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, kv string) {
		h, err := parseHeaders([]string{kv})
		if err != nil {
			return
		}
		if len(h) != 1 {
			t.Fatalf("%q parsed to %d headers", kv, len(h))
		}
		var wire bytes.Buffer
		if err := h.Write(&wire); err != nil {
			t.Fatal(err)
		}
		wire.WriteString("\r\n")
		back, err := textproto.NewReader(bufio.NewReader(&wire)).ReadMIMEHeader()
		if err != nil {
			t.Fatalf("%q parsed to %v, which does not read back: %v", kv, h, err)
		}
		if !reflect.DeepEqual(http.Header(back), h) {
			t.Fatalf("%q parsed to %v, read back as %v", kv, h, back)
		}
		for k := range h {
			switch k {
			case "Host", "Content-Length", "Transfer-Encoding", "Connection":
				t.Fatalf("%q: accepted a fixed %s", kv, k)
			}
		}
	})
}

// TestParseHeaders: the accepted forms and the refused ones.
func TestParseHeaders(t *testing.T) {
	for _, tc := range []struct {
		in   string
		name string // "" when refused
		val  string
	}{
		{"X-Pre-Shared: abc", "X-Pre-Shared", "abc"},
		{"x-lower:\t two words \t", "X-Lower", "two words"},
		{"X-Empty:", "X-Empty", ""},
		{"X-Colon: a: b", "X-Colon", "a: b"},
		{"X-Utf8: café", "X-Utf8", "café"},
		{"no colon", "", ""},
		{": no name", "", ""},
		{"X Space: v", "", ""},
		{"X(: v", "", ""},
		{"X: a\r\nInjected: yes", "", ""},
		{"X: a\x00b", "", ""},
		{"Host: example.com", "", ""},
		{"content-length: 5", "", ""},
		{"Connection: close", "", ""},
	} {
		h, err := parseHeaders([]string{tc.in})
		if tc.name == "" {
			if err == nil {
				t.Fatalf("parseHeaders(%q) = %v, want an error", tc.in, h)
			}
			continue
		}
		if err != nil || len(h) != 1 || h.Get(tc.name) != tc.val {
			t.Fatalf("parseHeaders(%q) = %v, %v; want %s: %q", tc.in, h, err, tc.name, tc.val)
		}
	}
}
