package cli

import (
	"strings"
	"testing"
)

// FuzzParseHeaders: --upstream-header values parse to well-formed headers or fail with an error.
func FuzzParseHeaders(f *testing.F) {
	f.Add("X-Pre-Shared: abc")
	f.Add("bad header")
	f.Add("X: a\r\nInjected: yes")
	f.Fuzz(func(t *testing.T, kv string) {
		h, err := parseHeaders([]string{kv})
		if err != nil {
			return
		}
		for k, vs := range h {
			if k == "" || strings.ContainsAny(k, " \t\r\n:") {
				t.Fatalf("accepted header name %q from %q", k, kv)
			}
			for _, v := range vs {
				if strings.ContainsAny(v, "\r\n") {
					t.Fatalf("accepted header value %q from %q", v, kv)
				}
			}
		}
	})
}
