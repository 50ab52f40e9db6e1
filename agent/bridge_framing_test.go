package agent

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/switchboard-relay/switchboard/internal/tunnel"
)

// smuggled is a whole response (44 bytes) an upstream sends as a body; if the bridge took it for the next answer
// on a pooled connection, another client would read "PWNED!".
const smuggled = "HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nPWNED!"

// TestBridgeLowercaseHeadIsNotHead: methods are case-sensitive, so "head" is an ordinary method whose answer has a
// body; the bridge copies it to its own client instead of leaving it on a pooled connection for the next one.
func TestBridgeLowercaseHeadIsNotHead(t *testing.T) {
	release, written := make(chan struct{}), make(chan struct{})
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == "head" {
			w.Header().Set("Content-Length", itoa(len(smuggled)))
			w.WriteHeader(http.StatusOK)
			w.(http.Flusher).Flush()
			<-release
			_, _ = io.WriteString(w, smuggled)
			w.(http.Flusher).Flush()
			close(written)
			return
		}
		_, _ = io.WriteString(w, "victim")
	})}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan struct{})
	go func() { defer close(served); _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close(); <-served })
	e := startBridgeEnv(t, "http://"+ln.Addr().String(), UpstreamOptions{})

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	resp, err := e.client.Do(newReq(t, "head", "/upload/evil.txt", nil).WithContext(ctx))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	close(release)
	<-written
	for range 3 {
		if _, body := e.do(t, newReq(t, http.MethodGet, "/account", nil)); body != "victim" {
			t.Fatalf("the next client got %q", body)
		}
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil || string(body) != smuggled {
		t.Fatalf("the head request's own body: %q, %v", body, err)
	}
}

// TestBridgeBodylessAnswerAnnouncingBody: a HEAD answer that announces a body leaves the upstream connection's
// framing in doubt; the bridge closes it rather than pool it, so bytes the upstream sends after it reach no one.
func TestBridgeBodylessAnswerAnnouncingBody(t *testing.T) {
	release, written := make(chan struct{}), make(chan struct{})
	var conns atomic.Int32
	up := rawUpstream(t, func(br *bufio.Reader, c net.Conn) {
		first := conns.Add(1) == 1
		for {
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			if req.Method == http.MethodHead && first {
				_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 44\r\n\r\n")
				<-release
				_, _ = io.WriteString(c, smuggled) // a non-conforming upstream's body to a HEAD
				close(written)
				continue
			}
			_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nvictim")
		}
	})
	e := startBridgeEnv(t, up, UpstreamOptions{})
	resp, _ := e.do(t, newReq(t, http.MethodHead, "/file", nil))
	if resp.StatusCode != http.StatusOK || resp.ContentLength != 44 {
		t.Fatalf("HEAD: %d, length %d", resp.StatusCode, resp.ContentLength)
	}
	close(release)
	<-written
	for range 3 {
		if _, body := e.do(t, newReq(t, http.MethodGet, "/account", nil)); body != "victim" {
			t.Fatalf("the next client got %q", body)
		}
	}
}

// TestBridgeReplay: a request whose pooled connection dies before any answer is sent again on a new one only if
// it may be sent twice (an idempotent method, or an idempotency key); otherwise the client gets 502
// upstream_unreachable and the upstream saw it once.
func TestBridgeReplay(t *testing.T) {
	for _, tc := range []struct {
		name, method string
		header       http.Header
		wantSent     int32
		wantStatus   int
	}{
		{name: "POST", method: http.MethodPost, wantSent: 1, wantStatus: http.StatusBadGateway},
		{name: "PUT", method: http.MethodPut, wantSent: 1, wantStatus: http.StatusBadGateway},
		{name: "lowercase get", method: "get", wantSent: 1, wantStatus: http.StatusBadGateway},
		{name: "POST with Idempotency-Key", method: http.MethodPost, header: http.Header{"Idempotency-Key": {"k1"}},
			wantSent: 2, wantStatus: http.StatusOK},
		{name: "POST with X-Idempotency-Key", method: http.MethodPost,
			header: http.Header{"X-Idempotency-Key": {"k2"}}, wantSent: 2, wantStatus: http.StatusOK},
		{name: "OPTIONS", method: http.MethodOptions, wantSent: 2, wantStatus: http.StatusOK},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var sent atomic.Int32
			up := rawUpstream(t, func(br *bufio.Reader, c net.Conn) {
				for {
					req, err := http.ReadRequest(br)
					if err != nil {
						return
					}
					_, _ = io.Copy(io.Discard, req.Body)
					if req.URL.Path == "/act" && sent.Add(1) == 1 {
						return // acted on it, then died before answering
					}
					_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
				}
			})
			e := startBridgeEnv(t, up, UpstreamOptions{})
			e.do(t, newReq(t, http.MethodGet, "/warm", nil)) // leaves a pooled connection the upstream keeps open
			req := newReq(t, tc.method, "/act", strings.NewReader("amount=100"))
			for k, v := range tc.header {
				req.Header[k] = v
			}
			resp, body := e.do(t, req)
			if n := sent.Load(); n != tc.wantSent {
				t.Fatalf("the upstream received the request %d times, want %d", n, tc.wantSent)
			}
			if resp.StatusCode != tc.wantStatus {
				t.Fatalf("status %d %q, want %d", resp.StatusCode, body, tc.wantStatus)
			}
			if tc.wantStatus == http.StatusBadGateway {
				if !strings.Contains(body, `"upstream_unreachable"`) ||
					resp.Header.Get(tunnel.HeaderUpstreamError) != tunnel.UpstreamUnreachable {
					t.Fatalf("502 without the unreachable marks: %v %q", resp.Header, body)
				}
				// The stream stays usable: the request was read whole.
				if _, body := e.do(t, newReq(t, http.MethodGet, "/after", nil)); body != "ok" {
					t.Fatalf("after the 502: %q", body)
				}
			}
		})
	}
}
