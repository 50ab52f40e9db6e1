package relay_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha1"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/switchboard-relay/switchboard/internal/relay"
)

// wsURL is the WebSocket URL of path on the env's host.
func (e proxyEnv) wsURL(path string) string {
	return "ws" + strings.TrimPrefix(e.base, "http") + path
}

// dialWS dials a WebSocket through the relay, with token as a bearer header when not empty, and extra headers.
func dialWS(t testing.TB, url, token string, extra ...string) (*websocket.Conn, *http.Response, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	opts := &websocket.DialOptions{HTTPHeader: http.Header{}, HTTPClient: newClient(t)}
	for i := 0; i+1 < len(extra); i += 2 {
		opts.HTTPHeader.Set(extra[i], extra[i+1])
	}
	if token != "" {
		opts.HTTPHeader.Set("Authorization", "Bearer "+token)
	}
	c, resp, err := websocket.Dial(ctx, url, opts)
	if c != nil {
		c.SetReadLimit(-1)
		t.Cleanup(func() { _ = c.CloseNow() })
	}
	return c, resp, err
}

// echoUpstream is a WebSocket upstream that echoes every message with its type. A text message "close N" makes it
// close with code N. It reports the request it saw and the close status it got from the client.
type echoUpstream struct {
	requests chan *http.Request
	closed   chan websocket.StatusCode
}

func newEchoUpstream() *echoUpstream {
	return &echoUpstream{requests: make(chan *http.Request, 1), closed: make(chan websocket.StatusCode, 1)}
}

func (u *echoUpstream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	u.requests <- r.Clone(context.Background())
	c, err := websocket.Accept(w, r, nil)
	if err != nil {
		return
	}
	defer c.CloseNow()
	c.SetReadLimit(-1)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for {
		typ, msg, err := c.Read(ctx)
		if err != nil {
			u.closed <- websocket.CloseStatus(err)
			return
		}
		var code int
		if typ == websocket.MessageText {
			if _, err := fmt.Sscanf(string(msg), "close %d", &code); err == nil {
				_ = c.Close(websocket.StatusCode(code), "bye")
				return
			}
		}
		if err := c.Write(ctx, typ, msg); err != nil {
			return
		}
	}
}

func TestWebSocketFramesBothWays(t *testing.T) {
	for _, kind := range hostKinds {
		t.Run(string(kind), func(t *testing.T) {
			up := newEchoUpstream()
			e := startProxy(t, kind, up, nil, nil)
			c, _, err := dialWS(t, e.wsURL("/echo?x=1"), e.token,
				"X-Switchboard-Subject", "mallory", "X-Forwarded-For", "203.0.113.9")
			if err != nil {
				t.Fatalf("dial: %v", err)
			}
			r := waitChan(t, up.requests, 5*time.Second, "the upgrade at the upstream")
			for k, want := range map[string]string{
				"X-Switchboard-Subject": "alice",
				"X-Forwarded-For":       "127.0.0.1",
				"X-Forwarded-Proto":     "http",
				"X-Forwarded-Host":      strings.TrimPrefix(e.relay.URL, "http://"),
			} {
				if got := r.Header.Values(k); strings.Join(got, ",") != want {
					t.Errorf("header %s at the upstream = %q, want %q", k, got, want)
				}
			}
			if got := r.Header.Get("Authorization"); got != "" {
				t.Errorf("Authorization reached the upstream: %q", got)
			}
			if got := r.URL.RequestURI(); got != "/echo?x=1" {
				t.Errorf("upstream got %q, want /echo?x=1", got)
			}
			big := make([]byte, 256<<10)
			for i := range big {
				big[i] = byte(i * 7)
			}
			msgs := []struct {
				typ  websocket.MessageType
				data []byte
			}{
				{websocket.MessageText, []byte("hello")},
				{websocket.MessageBinary, []byte{0, 1, 2, 0xff, 0xfe, 0x80}},
				{websocket.MessageText, []byte("")},
				{websocket.MessageText, []byte("grüße ✓")},
				{websocket.MessageBinary, big},
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			for i, m := range msgs {
				if err := c.Write(ctx, m.typ, m.data); err != nil {
					t.Fatalf("write %d: %v", i, err)
				}
				typ, got, err := c.Read(ctx)
				if err != nil {
					t.Fatalf("read %d: %v", i, err)
				}
				if typ != m.typ || !bytes.Equal(got, m.data) {
					t.Fatalf("message %d: got %v of %d bytes, want %v of %d bytes", i, typ, len(got), m.typ, len(m.data))
				}
			}
			if err := c.Close(websocket.StatusNormalClosure, ""); err != nil {
				t.Fatalf("close: %v", err)
			}
			if got := waitChan(t, up.closed, 5*time.Second, "the close at the upstream"); got != websocket.StatusNormalClosure {
				t.Fatalf("upstream saw close %d, want 1000", got)
			}
		})
	}
}

func TestWebSocketCloseCodesKept(t *testing.T) {
	for _, kind := range hostKinds {
		t.Run(string(kind)+"/upstream_closes", func(t *testing.T) {
			e := startProxy(t, kind, newEchoUpstream(), nil, nil)
			c, _, err := dialWS(t, e.wsURL("/"), e.token)
			if err != nil {
				t.Fatalf("dial: %v", err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := c.Write(ctx, websocket.MessageText, []byte("close 4000")); err != nil {
				t.Fatal(err)
			}
			_, _, err = c.Read(ctx)
			if got := websocket.CloseStatus(err); got != 4000 {
				t.Fatalf("client saw close %d (%v), want 4000", got, err)
			}
			var ce websocket.CloseError
			if errors.As(err, &ce) && ce.Reason != "bye" {
				t.Fatalf("close reason = %q, want bye", ce.Reason)
			}
		})
		t.Run(string(kind)+"/client_closes", func(t *testing.T) {
			up := newEchoUpstream()
			e := startProxy(t, kind, up, nil, nil)
			c, _, err := dialWS(t, e.wsURL("/"), e.token)
			if err != nil {
				t.Fatalf("dial: %v", err)
			}
			if err := c.Close(4001, "done here"); err != nil {
				t.Fatalf("close: %v", err)
			}
			if got := waitChan(t, up.closed, 5*time.Second, "the close at the upstream"); got != 4001 {
				t.Fatalf("upstream saw close %d, want 4001", got)
			}
		})
		t.Run(string(kind)+"/client_vanishes", func(t *testing.T) {
			up := newEchoUpstream()
			e := startProxy(t, kind, up, nil, nil)
			c, _, err := dialWS(t, e.wsURL("/"), e.token)
			if err != nil {
				t.Fatalf("dial: %v", err)
			}
			_ = c.CloseNow() // no close frame
			if got := waitChan(t, up.closed, 5*time.Second, "the close at the upstream"); got != websocket.StatusInternalError {
				t.Fatalf("upstream saw close %d, want 1011", got)
			}
		})
	}
}

// rawUpstream completes a WebSocket handshake by hand, sends one text message "hi", then does end (write raw bytes,
// or nothing) and closes the connection. It lets an upstream misbehave in ways a WebSocket library refuses to.
func rawUpstream(end []byte) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		sum := sha1.Sum([]byte(r.Header.Get("Sec-WebSocket-Key") + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
		conn, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer conn.Close()
		_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
		fmt.Fprintf(brw, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n",
			base64.StdEncoding.EncodeToString(sum[:]))
		brw.Write([]byte{0x81, 2, 'h', 'i'})
		if end != nil {
			brw.Write(end)
		}
		if brw.Flush() != nil || end == nil {
			return // vanish: no close frame
		}
		// Wait for the client's close answer (or its disconnect) before hanging up.
		_, _ = io.Copy(io.Discard, bufio.NewReader(conn))
	}
}

// closeFrame is an unmasked close frame carrying code as given, even one that must never be sent.
func closeFrame(code uint16) []byte {
	f := []byte{0x88, 2, 0, 0}
	binary.BigEndian.PutUint16(f[2:], code)
	return f
}

func TestWebSocketUnsendableCloseBecomes1011(t *testing.T) {
	cases := []struct {
		name string
		end  []byte
		want websocket.StatusCode
	}{
		{"1005_on_the_wire", closeFrame(1005), websocket.StatusInternalError},
		{"1006_on_the_wire", closeFrame(1006), websocket.StatusInternalError},
		{"1015_on_the_wire", closeFrame(1015), websocket.StatusInternalError},
		{"vanishes_without_close", nil, websocket.StatusInternalError},
		{"empty_close_is_no_status", []byte{0x88, 0}, websocket.StatusNoStatusRcvd},
		{"4002_kept", closeFrame(4002), 4002},
	}
	for _, kind := range hostKinds {
		for _, tc := range cases {
			t.Run(string(kind)+"/"+tc.name, func(t *testing.T) {
				e := startProxy(t, kind, rawUpstream(tc.end), nil, nil)
				c, _, err := dialWS(t, e.wsURL("/"), e.token)
				if err != nil {
					t.Fatalf("dial: %v", err)
				}
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				if _, msg, err := c.Read(ctx); err != nil || string(msg) != "hi" {
					t.Fatalf("first message: %q, %v", msg, err)
				}
				_, _, err = c.Read(ctx)
				if got := websocket.CloseStatus(err); got != tc.want {
					t.Fatalf("client saw close %d (%v), want %d", got, err, tc.want)
				}
			})
		}
	}
}

func TestWebSocketAccessTokenQuery(t *testing.T) {
	for _, kind := range hostKinds {
		t.Run(string(kind), func(t *testing.T) {
			up := newEchoUpstream()
			e := startProxy(t, kind, up, nil, nil)
			c, _, err := dialWS(t, e.wsURL("/term?a=1&access_token="+e.token+"&b=2"), "")
			if err != nil {
				t.Fatalf("dial with ?access_token=: %v", err)
			}
			r := waitChan(t, up.requests, 5*time.Second, "the upgrade at the upstream")
			if got := r.URL.RequestURI(); got != "/term?a=1&b=2" {
				t.Errorf("upstream got %q, want /term?a=1&b=2", got)
			}
			if got := r.Header.Get("X-Switchboard-Subject"); got != "alice" {
				t.Errorf("subject at the upstream = %q, want alice", got)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := c.Write(ctx, websocket.MessageText, []byte("ping")); err != nil {
				t.Fatal(err)
			}
			if _, msg, err := c.Read(ctx); err != nil || string(msg) != "ping" {
				t.Fatalf("echo: %q, %v", msg, err)
			}
			_ = c.Close(websocket.StatusNormalClosure, "")

			_, resp, err := dialWS(t, e.wsURL("/term"), "")
			if err == nil || resp == nil || resp.StatusCode != http.StatusUnauthorized {
				status := 0
				if resp != nil {
					status = resp.StatusCode
				}
				t.Fatalf("dial without a token: status %d, err %v; want 401", status, err)
			}
		})
	}
}

// TestWebSocketOutlivesIdleTimeout checks that a quiet WebSocket is not cut by the relay's exchange idle timeout:
// WebSockets idle for long and keep themselves honest with their own pings.
func TestWebSocketOutlivesIdleTimeout(t *testing.T) {
	const idle = 200 * time.Millisecond
	e := startProxy(t, upstreamHost, newEchoUpstream(), func(c *relay.Config) { c.IdleTimeout = idle }, nil)
	c, _, err := dialWS(t, e.wsURL("/"), e.token)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// Stay quiet for several idle timeouts, then use the connection.
	quiet := time.NewTimer(4 * idle)
	defer quiet.Stop()
	<-quiet.C
	if err := c.Write(ctx, websocket.MessageText, []byte("still here")); err != nil {
		t.Fatal(err)
	}
	if _, msg, err := c.Read(ctx); err != nil || string(msg) != "still here" {
		t.Fatalf("echo after a quiet spell: %q, %v", msg, err)
	}
}

// TestWebSocketRefusedUpgrade checks that an upstream's refusal of the upgrade reaches the client as an ordinary
// response.
func TestWebSocketRefusedUpgrade(t *testing.T) {
	for _, kind := range hostKinds {
		t.Run(string(kind), func(t *testing.T) {
			e := startProxy(t, kind, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("X-Why", "nope")
				http.Error(w, "no websockets here", http.StatusForbidden)
			}), nil, nil)
			_, resp, err := dialWS(t, e.wsURL("/"), e.token)
			if err == nil || resp == nil {
				t.Fatalf("dial succeeded or got no response: %v", err)
			}
			if resp.StatusCode != http.StatusForbidden || resp.Header.Get("X-Why") != "nope" {
				t.Fatalf("got %d X-Why=%q, want 403 nope", resp.StatusCode, resp.Header.Get("X-Why"))
			}
		})
	}
}

// TestWebSocketUpgradeHopHeaders sends an upgrade by hand (WebSocket libraries set Connection themselves) and checks
// that headers the client's Connection lists stay on the client's hop while the upgrade still reaches the upstream.
func TestWebSocketUpgradeHopHeaders(t *testing.T) {
	for _, kind := range hostKinds {
		t.Run(string(kind), func(t *testing.T) {
			up := newEchoUpstream()
			e := startProxy(t, kind, up, nil, nil)
			conn, err := net.Dial("tcp", strings.TrimPrefix(e.relay.URL, "http://"))
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
			_, err = fmt.Fprintf(conn, "GET /hosts/%s/ws HTTP/1.1\r\nHost: relay\r\nAuthorization: Bearer %s\r\n"+
				"Connection: keep-alive, Upgrade, X-Hop\r\nX-Hop: 1\r\nKeep-Alive: timeout=5\r\nUpgrade: websocket\r\n"+
				"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n", hostID, e.token)
			if err != nil {
				t.Fatal(err)
			}
			resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != http.StatusSwitchingProtocols {
				t.Fatalf("status = %d, want 101", resp.StatusCode)
			}
			if got := resp.Header.Get("Sec-WebSocket-Accept"); got != "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" {
				t.Fatalf("Sec-WebSocket-Accept = %q", got)
			}
			r := waitChan(t, up.requests, 5*time.Second, "the upgrade at the upstream")
			for _, k := range []string{"X-Hop", "Keep-Alive", "Authorization"} {
				if v, ok := r.Header[k]; ok {
					t.Errorf("header %s reached the upstream: %q", k, v)
				}
			}
		})
	}
}

// TestWebSocketRefusalBodyStallIsCut checks that the body of a refused upgrade is under the idle timeout like any
// other answer: a host that stops sending it is cut.
func TestWebSocketRefusalBodyStallIsCut(t *testing.T) {
	e := startProxy(t, listenerHost, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "1000")
		w.WriteHeader(http.StatusForbidden)
		_, _ = io.WriteString(w, "partial")
		http.NewResponseController(w).Flush()
		<-r.Context().Done()
	}), func(c *relay.Config) { c.IdleTimeout = 300 * time.Millisecond }, nil)
	conn, err := net.Dial("tcp", strings.TrimPrefix(e.relay.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(20 * time.Second))
	_, err = fmt.Fprintf(conn, "GET /hosts/%s/ws HTTP/1.1\r\nHost: relay\r\nAuthorization: Bearer %s\r\n"+
		"Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
		hostID, e.token)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			done <- err
			return
		}
		_, err = io.ReadAll(resp.Body)
		done <- err
	}()
	if err := waitChan(t, done, 10*time.Second, "the refusal's stalled body to be cut"); err == nil {
		t.Fatalf("a refusal body that stalled ended cleanly")
	}
}
