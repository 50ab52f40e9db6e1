package tcpstream

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// pair returns a client WebSocket whose server end runs peer, and a loopback TCP pair for the bridge's local side.
func pair(t *testing.T, peer func(ctx context.Context, ws *websocket.Conn)) (*websocket.Conn, *net.TCPConn, *net.TCPConn) {
	t.Helper()
	done := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ws, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		defer close(done)
		peer(r.Context(), ws)
		_ = ws.CloseNow()
	}))
	t.Cleanup(func() { <-done; srv.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ws, _, err := websocket.Dial(ctx, srv.URL, nil)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	acc := make(chan net.Conn, 1)
	go func() { c, _ := ln.Accept(); acc <- c }()
	outer, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	inner := <-acc
	t.Cleanup(func() { _ = outer.Close(); _ = inner.Close() })
	return ws, inner.(*net.TCPConn), outer.(*net.TCPConn)
}

func TestBridgeRefusesBadMessages(t *testing.T) {
	for name, send := range map[string]func(context.Context, *websocket.Conn){
		"unknown text": func(ctx context.Context, ws *websocket.Conn) {
			_ = ws.Write(ctx, websocket.MessageText, []byte("hello"))
		},
		"bytes after eof": func(ctx context.Context, ws *websocket.Conn) {
			_ = ws.Write(ctx, websocket.MessageText, []byte("eof"))
			_ = ws.Write(ctx, websocket.MessageBinary, []byte("late"))
		},
		"too big": func(ctx context.Context, ws *websocket.Conn) {
			_ = ws.Write(ctx, websocket.MessageBinary, make([]byte, readLimit+1))
		},
	} {
		t.Run(name, func(t *testing.T) {
			ws, inner, outer := pair(t, func(ctx context.Context, ws *websocket.Conn) {
				send(ctx, ws)
				_, _, _ = ws.Read(ctx) // until the bridge closes
			})
			_, err := Bridge(context.Background(), ws, inner)
			if !errors.Is(err, ErrProtocol) {
				t.Fatalf("Bridge: %v, want ErrProtocol", err)
			}
			if _, err := io.Copy(io.Discard, outer); err != nil && !strings.Contains(err.Error(), "reset") {
				t.Fatalf("local side after the abort: %v", err)
			}
		})
	}
}

func TestBridgeAbortedByPeer(t *testing.T) {
	ws, inner, _ := pair(t, func(ctx context.Context, ws *websocket.Conn) {
		_ = ws.Write(ctx, websocket.MessageBinary, []byte("x"))
		_ = ws.Close(websocket.StatusInternalError, "gone")
	})
	if _, err := Bridge(context.Background(), ws, inner); !errors.Is(err, ErrAborted) {
		t.Fatalf("Bridge: %v, want ErrAborted", err)
	}
}

func TestURL(t *testing.T) {
	for _, tc := range []struct{ relay, host, want string }{
		{"http://r:1", "org:laptop", "ws://r:1/hosts/org:laptop/.switchboard/tcp/ssh"},
		{"https://r/base/", "a%b", "wss://r/base/hosts/a%25b/.switchboard/tcp/ssh"},
	} {
		got, err := URL(tc.relay, tc.host, "ssh")
		if err != nil || got != tc.want {
			t.Errorf("URL(%q, %q) = %q, %v; want %q", tc.relay, tc.host, got, err, tc.want)
		}
	}
	if _, err := URL("ftp://r", "h", "ssh"); err == nil {
		t.Error("ftp relay accepted")
	}
	if _, err := URL("http://r", "h", "../x"); err == nil {
		t.Error("bad service accepted")
	}
}

// TestBridgeNormalCloseRightAfterOurEOF: the peer's normal close, which follows both ends' EOF, may be seen by
// the bridge before it saw up report that our EOF went out; that is a complete stream, not an abort. The local
// side holds the bridge in CloseWrite until the peer closed, so that both endings wait for it at once (whichever
// it takes first).
func TestBridgeNormalCloseRightAfterOurEOF(t *testing.T) {
	for i := range 20 {
		peerClosed := make(chan struct{})
		ws, _, _ := pair(t, func(ctx context.Context, ws *websocket.Conn) {
			defer close(peerClosed)
			if err := ws.Write(ctx, websocket.MessageText, []byte("eof")); err != nil {
				return
			}
			if typ, msg, err := ws.Read(ctx); err != nil || typ != websocket.MessageText || string(msg) != "eof" {
				return // the bridge then fails: not a normal close
			}
			_ = ws.Close(websocket.StatusNormalClosure, "")
		})
		local := &gatedLocal{halfClosed: make(chan struct{}), closed: make(chan struct{}), peerClosed: peerClosed}
		if _, err := Bridge(context.Background(), ws, local); err != nil {
			t.Fatalf("run %d: Bridge: %v, want a complete stream", i, err)
		}
	}
}

// gatedLocal is a local side that ends its input once the bridge half-closed its output, and whose CloseWrite
// returns only after peerClosed.
type gatedLocal struct {
	halfClosed, closed, peerClosed chan struct{}
	closeOnce                      sync.Once
}

func (l *gatedLocal) Read([]byte) (int, error) {
	select {
	case <-l.halfClosed:
		return 0, io.EOF
	case <-l.closed:
		return 0, net.ErrClosed
	}
}

func (l *gatedLocal) Write(p []byte) (int, error) { return len(p), nil }

func (l *gatedLocal) CloseWrite() error {
	close(l.halfClosed)
	<-l.peerClosed
	return nil
}

func (l *gatedLocal) Close() error {
	l.closeOnce.Do(func() { close(l.closed) })
	return nil
}
