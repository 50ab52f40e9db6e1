package reply

import (
	"net/http"
	"net/http/httptest"
	"testing"
)

type noter struct {
	http.ResponseWriter
	codes []string
}

func (n *noter) NoteCode(code string) { n.codes = append(n.codes, code) }

type wrapper struct{ http.ResponseWriter }

func (w wrapper) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// TestError: the body's shape, Retry-After on statuses that invite a retry, and the code reaching a noter under a
// wrapper.
func TestError(t *testing.T) {
	for _, tc := range []struct {
		status     int
		retryAfter string
	}{
		{http.StatusNotFound, ""},
		{http.StatusServiceUnavailable, "2"},
		{http.StatusTooManyRequests, "2"},
	} {
		rec := httptest.NewRecorder()
		n := &noter{ResponseWriter: rec}
		Error(wrapper{n}, tc.status, CodeNotFound, "no such host")
		if rec.Code != tc.status {
			t.Errorf("status %d, want %d", rec.Code, tc.status)
		}
		if got, want := rec.Body.String(), `{"error":{"code":"not_found","message":"no such host"}}`+"\n"; got != want {
			t.Errorf("body %q, want %q", got, want)
		}
		if got := rec.Header().Get("Retry-After"); got != tc.retryAfter {
			t.Errorf("status %d: Retry-After %q, want %q", tc.status, got, tc.retryAfter)
		}
		if got := rec.Header().Get("Cache-Control"); got != "no-store" {
			t.Errorf("Cache-Control %q", got)
		}
		if len(n.codes) != 1 || n.codes[0] != CodeNotFound {
			t.Errorf("noted %q, want [not_found]", n.codes)
		}
	}
}
