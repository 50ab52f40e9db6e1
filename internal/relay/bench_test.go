package relay_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/coder/websocket"
	"github.com/hashicorp/yamux"

	"github.com/switchboard-relay/switchboard/internal/tunnel"
)

// BenchmarkSmallGET is the hot path end to end over loopback: client → relay → tunnel → agent → handler and back,
// for a small keep-alive GET.
func BenchmarkSmallGET(b *testing.B) {
	for _, kind := range hostKinds {
		b.Run(string(kind), func(b *testing.B) {
			e := startProxy(b, kind, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				_, _ = io.WriteString(w, "hello")
			}), nil, nil)
			c := newClient(b)
			req, err := http.NewRequest("GET", e.base+"/small?x=1", nil)
			if err != nil {
				b.Fatal(err)
			}
			req.Header.Set("Authorization", "Bearer "+e.token)
			buf := make([]byte, 64)
			b.ReportAllocs()
			for b.Loop() {
				resp, err := c.Do(req)
				if err != nil {
					b.Fatal(err)
				}
				n, _ := io.ReadFull(resp.Body, buf[:5])
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 || n != 5 {
					b.Fatalf("got %d, %d bytes", resp.StatusCode, n)
				}
			}
		})
	}
}

// echoBuffers lend the mux pair's echo its copy buffers.
var echoBuffers = sync.Pool{New: func() any { b := make([]byte, 4<<10); return &b }}

// muxPair is a yamux client and server over a WebSocket NetConn pair on loopback, as the relay and agent run them.
type muxPair struct {
	client, server *yamux.Session
}

// startMuxPair starts a mux pair whose server side echoes every stream; everything stops in Cleanup.
func startMuxPair(b *testing.B) *muxPair {
	b.Helper()
	p := &muxPair{}
	var wg sync.WaitGroup
	ready := make(chan error, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ws, err := websocket.Accept(w, r, &websocket.AcceptOptions{CompressionMode: websocket.CompressionDisabled})
		if err != nil {
			ready <- err
			return
		}
		ws.SetReadLimit(-1)
		sess, err := yamux.Server(tunnel.NetConn(context.Background(), ws), tunnel.Options{}.YamuxConfig())
		if err != nil {
			ready <- err
			return
		}
		p.server = sess
		ready <- nil
		for {
			st, err := sess.AcceptStream()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer st.Close()
				bp := echoBuffers.Get().(*[]byte)
				defer echoBuffers.Put(bp)
				_, _ = io.CopyBuffer(st, st, *bp) // pooled: the benchmark should count the stream, not the echo
			})
		}
	}))
	ctx := context.Background()
	ws, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(srv.URL, "http"), &websocket.DialOptions{CompressionMode: websocket.CompressionDisabled})
	if err != nil {
		b.Fatal(err)
	}
	ws.SetReadLimit(-1)
	p.client, err = yamux.Client(tunnel.NetConn(ctx, ws), tunnel.Options{}.YamuxConfig())
	if err != nil {
		b.Fatal(err)
	}
	if err := <-ready; err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		_ = p.client.Close()
		_ = p.server.Close()
		wg.Wait()
		srv.CloseClientConnections()
		srv.Close()
	})
	return p
}

// BenchmarkStreamOpen measures one stream per exchange over the tunnel's stack (yamux on a WebSocket NetConn):
// open and close alone, and open with a one-byte round trip (the peer has accepted the stream).
func BenchmarkStreamOpen(b *testing.B) {
	b.Run("open_close", func(b *testing.B) {
		p := startMuxPair(b)
		b.ReportAllocs()
		for b.Loop() {
			st, err := p.client.OpenStream()
			if err != nil {
				b.Fatal(err)
			}
			_ = st.Close()
		}
	})
	b.Run("open_roundtrip_close", func(b *testing.B) {
		p := startMuxPair(b)
		one := []byte{'x'}
		got := make([]byte, 1)
		b.ReportAllocs()
		for b.Loop() {
			st, err := p.client.OpenStream()
			if err != nil {
				b.Fatal(err)
			}
			if _, err := st.Write(one); err != nil {
				b.Fatal(err)
			}
			if _, err := io.ReadFull(st, got); err != nil {
				b.Fatal(err)
			}
			_ = st.Close()
		}
	})
}
