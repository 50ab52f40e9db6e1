package wsframe

import (
	"bufio"
	"context"
	"crypto/sha1"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// The tests in this file check the Follower and CloseFrame against a real
// WebSocket implementation, with the relay's view of the bytes: raw frames
// after a hand-made handshake.

const acceptGUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

func acceptKey(key string) string {
	h := sha1.Sum([]byte(key + acceptGUID))
	return base64.StdEncoding.EncodeToString(h[:])
}

// rawServer starts an HTTP server whose handler completes the WebSocket
// handshake by hand and gives the raw connection to serve, which writes
// server→client frames. The server is closed at test cleanup.
func rawServer(t *testing.T, serve func(conn net.Conn)) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		conn, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			t.Errorf("hijack: %v", err)
			return
		}
		defer conn.Close()
		fmt.Fprintf(brw, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n",
			acceptKey(r.Header.Get("Sec-WebSocket-Key")))
		if err := brw.Flush(); err != nil {
			t.Errorf("write 101: %v", err)
			return
		}
		serve(conn)
		// Let the client answer the close, then hang up.
		_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, _ = io.Copy(io.Discard, conn)
	}))
	t.Cleanup(srv.Close)
	return "ws" + strings.TrimPrefix(srv.URL, "http")
}

func TestInteropServerToClient(t *testing.T) {
	tests := []struct {
		name       string
		serve      func(t *testing.T, f *Follower, conn net.Conn)
		wantCode   websocket.StatusCode
		wantReason string
	}{
		{
			name: "upstream sends 1005 on the wire",
			serve: func(t *testing.T, f *Follower, conn net.Conn) {
				in := encodeAll([]testFrame{
					{fin: true, op: opText, payload: []byte("hi")},
					{fin: true, op: opClose, payload: closePayload(1005, "upstream")},
				})
				if _, err := f.Write(in); err != nil {
					t.Errorf("follow: %v", err)
				}
			},
			wantCode:   websocket.StatusInternalError,
			wantReason: "upstream",
		},
		{
			name: "application code kept",
			serve: func(t *testing.T, f *Follower, conn net.Conn) {
				in := encodeAll([]testFrame{
					{fin: true, op: opText, payload: []byte("hi")},
					{fin: true, op: opClose, payload: closePayload(4409, "replaced")},
				})
				if _, err := f.Write(in); err != nil {
					t.Errorf("follow: %v", err)
				}
			},
			wantCode:   4409,
			wantReason: "replaced",
		},
		{
			name: "upstream vanishes mid-header",
			serve: func(t *testing.T, f *Follower, conn net.Conn) {
				in := encodeAll([]testFrame{
					{fin: true, op: opText, payload: []byte("hi")},
					{fin: true, op: opBinary, payload: make([]byte, 1000)},
				})
				if _, err := f.Write(in[:6]); err != nil { // "hi" frame and 2 bytes of the next header
					t.Errorf("follow: %v", err)
				}
				// The upstream is gone: the relay closes properly when it can.
				if !f.AtBoundary() || f.SawClose() {
					t.Errorf("AtBoundary = %v, SawClose = %v; want true, false", f.AtBoundary(), f.SawClose())
					return
				}
				if _, err := conn.Write(CloseFrame(SendableCode(1006), "upstream gone", false)); err != nil {
					t.Errorf("write close: %v", err)
				}
			},
			wantCode:   websocket.StatusInternalError,
			wantReason: "upstream gone",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			url := rawServer(t, func(conn net.Conn) {
				tt.serve(t, NewFollower(conn, false), conn)
			})
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			defer cancel()
			c, _, err := websocket.Dial(ctx, url, nil)
			if err != nil {
				t.Fatalf("dial: %v", err)
			}
			defer c.CloseNow()
			typ, msg, err := c.Read(ctx)
			if err != nil || typ != websocket.MessageText || string(msg) != "hi" {
				t.Fatalf("read = %v %q %v; want text \"hi\"", typ, msg, err)
			}
			_, _, err = c.Read(ctx)
			var ce websocket.CloseError
			if !errors.As(err, &ce) {
				t.Fatalf("read err = %v, want a close error", err)
			}
			if ce.Code != tt.wantCode || ce.Reason != tt.wantReason {
				t.Fatalf("close = %d %q, want %d %q", ce.Code, ce.Reason, tt.wantCode, tt.wantReason)
			}
		})
	}
}

func TestInteropClientToServer(t *testing.T) {
	tests := []struct {
		name       string
		frames     []byte
		wantCode   websocket.StatusCode
		wantReason string
	}{
		{
			name: "client sends 1006 on the wire",
			frames: encodeAll([]testFrame{
				{fin: true, op: opText, payload: []byte("hi"), mask: true, key: key1},
				{fin: true, op: opClose, payload: closePayload(1006, "client"), mask: true, key: key2},
			}),
			wantCode:   websocket.StatusInternalError,
			wantReason: "client",
		},
		{
			name: "CloseFrame masked",
			frames: append(testFrame{fin: true, op: opText, payload: []byte("hi"), mask: true, key: key1}.encode(),
				CloseFrame(4001, strings.Repeat("é", 70), true)...),
			wantCode:   4001,
			wantReason: strings.Repeat("é", 61), // 122 bytes: the 62nd é would pass 123
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			type result struct {
				msg string
				err error
			}
			results := make(chan result, 1)
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				c, err := websocket.Accept(w, r, nil)
				if err != nil {
					results <- result{err: err}
					return
				}
				defer c.CloseNow()
				_, msg, err := c.Read(r.Context())
				if err != nil {
					results <- result{err: err}
					return
				}
				_, _, err = c.Read(r.Context())
				results <- result{msg: string(msg), err: err}
			}))
			defer srv.Close()

			conn, err := net.DialTimeout("tcp", srv.Listener.Addr().String(), 5*time.Second)
			if err != nil {
				t.Fatalf("dial: %v", err)
			}
			defer conn.Close()
			_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
			key := base64.StdEncoding.EncodeToString([]byte("0123456789abcdef"))
			fmt.Fprintf(conn, "GET / HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n",
				srv.Listener.Addr(), key)
			resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
			if err != nil {
				t.Fatalf("read 101: %v", err)
			}
			if resp.StatusCode != http.StatusSwitchingProtocols || resp.Header.Get("Sec-WebSocket-Accept") != acceptKey(key) {
				t.Fatalf("handshake: %s", resp.Status)
			}

			f := NewFollower(conn, true)
			for _, c := range tt.frames { // a byte at a time, as a slow client would
				if _, err := f.Write([]byte{c}); err != nil {
					t.Fatalf("follow: %v", err)
				}
			}
			if !f.SawClose() {
				t.Fatalf("SawClose = false")
			}
			var res result
			select {
			case res = <-results:
			case <-time.After(10 * time.Second):
				t.Fatalf("server did not finish")
			}
			var ce websocket.CloseError
			if res.msg != "hi" || !errors.As(res.err, &ce) {
				t.Fatalf("server read %q, %v; want \"hi\" and a close error", res.msg, res.err)
			}
			if ce.Code != tt.wantCode || ce.Reason != tt.wantReason {
				t.Fatalf("close = %d %q, want %d %q", ce.Code, ce.Reason, tt.wantCode, tt.wantReason)
			}
		})
	}
}
