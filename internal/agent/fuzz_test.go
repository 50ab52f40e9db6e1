package agent

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"testing"
)

// FuzzDialError: whatever body a refusing relay (or a proxy in front of it) sends, the agent explains the refusal
// without panicking and keeps the status.
func FuzzDialError(f *testing.F) {
	f.Add(403, []byte(`{"error":{"code":"forbidden","message":"no"}}`))
	f.Add(502, []byte(`<html>bad gateway</html>`))
	f.Add(429, []byte(`{"error":`))
	f.Fuzz(func(t *testing.T, status int, body []byte) {
		resp := &http.Response{StatusCode: status, Body: io.NopCloser(bytes.NewReader(body))}
		err := dialError(resp, errors.New("handshake failed"))
		var de *DialError
		if !errors.As(err, &de) {
			t.Fatalf("not a DialError: %v", err)
		}
		if status != 0 && de.Status != status {
			t.Fatalf("status %d became %d", status, de.Status)
		}
		_ = err.Error()
	})
}
