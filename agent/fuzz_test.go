package agent

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"testing"
)

// FuzzDialError: whatever body a refusing relay (or a proxy in front of it) sends, the agent explains the refusal
// without panicking, keeps the status and the cause, and reads at most 1 KiB of the body into the explanation.
func FuzzDialError(f *testing.F) {
	f.Add(403, []byte(`{"error":{"code":"forbidden","message":"no"}}`))
	f.Add(502, []byte(`<html>bad gateway</html>`))
	f.Add(429, []byte(`{"error":`))
	f.Add(503, []byte(`{"error":{"code":"draining","message":"\u0000\n"}} trailing`))
	f.Add(0, []byte(`{}`))
	f.Add(-1, []byte(nil))
	cause := errors.New("handshake failed")
	f.Fuzz(func(t *testing.T, status int, body []byte) {
		resp := &http.Response{StatusCode: status, Body: io.NopCloser(bytes.NewReader(body))}
		err := dialError(resp, cause)
		var de *DialError
		if !errors.As(err, &de) {
			t.Fatalf("not a DialError: %v", err)
		}
		if de.Status != status || !errors.Is(err, cause) {
			t.Fatalf("status %d became %d, cause %v", status, de.Status, de.Err)
		}
		if len(de.Code)+len(de.Message) > 1024 && de.Message != http.StatusText(status) {
			t.Fatalf("explanation of %d bytes from a %d-byte body", len(de.Code)+len(de.Message), len(body))
		}
		if status != 0 && de.Message == "" && http.StatusText(status) != "" {
			t.Fatalf("no message for status %d", status)
		}
		if err.Error() == "" {
			t.Fatal("empty error text")
		}
	})
}
