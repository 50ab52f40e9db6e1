package agent

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/hashicorp/yamux"

	"github.com/switchboard-relay/switchboard/internal/tunnel"
)

// benchTunnel is a yamux session pair over loopback TCP, as the relay (client) and the agent (server) run it, with
// the agent's side serving streams from an upstream in this process.
type benchTunnel struct {
	relay *yamux.Session
}

// startBenchTunnel serves the agent side with serve (given the session as a listener) and stops it in Cleanup.
func startBenchTunnel(tb testing.TB, serve func(ln net.Listener) error) *benchTunnel {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			close(accepted)
			return
		}
		accepted <- c
	}()
	rc, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		tb.Fatal(err)
	}
	ac, ok := <-accepted
	if !ok {
		tb.Fatal("accept failed")
	}
	cfg := tunnel.Options{}.YamuxConfig()
	agentSide, err := yamux.Server(tunnel.Coalesce(ac), cfg)
	if err != nil {
		tb.Fatal(err)
	}
	relaySide, err := yamux.Client(tunnel.Coalesce(rc), cfg)
	if err != nil {
		tb.Fatal(err)
	}
	done := make(chan struct{})
	go func() { defer close(done); _ = serve(agentSide) }()
	tb.Cleanup(func() {
		_ = relaySide.Close()
		_ = agentSide.Close()
		<-done
	})
	return &benchTunnel{relay: relaySide}
}

// exchangeClient sends requests on one stream as the relay does and reads the responses with the bridge's own
// head reader (so the client's share of the figures stays small).
type exchangeClient struct {
	st   net.Conn
	br   *bufio.Reader
	resp head
	buf  []byte
}

func newExchangeClient(tb testing.TB, t *benchTunnel) *exchangeClient {
	st, err := t.relay.OpenStream()
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = st.Close() })
	return &exchangeClient{st: st, br: bufio.NewReader(st), buf: make([]byte, 64<<10)}
}

// do sends req (a whole request) and reads the response, whose body must have Content-Length; it returns the
// status and the body's length.
func (c *exchangeClient) do(req []byte) (int, int64, error) {
	if _, err := c.st.Write(req); err != nil {
		return 0, 0, err
	}
	if err := readHead(c.br, &c.resp, true); err != nil {
		return 0, 0, err
	}
	n, err := io.CopyN(io.Discard, c.br, c.resp.contentLength)
	return c.resp.status, n, err
}

const benchRequest = "GET /small?x=1 HTTP/1.1\r\nHost: org-laptop.hosts.example.com\r\nUser-Agent: bench\r\n" +
	"Accept: */*\r\nX-Forwarded-For: 127.0.0.1\r\nX-Forwarded-Proto: https\r\nSwitchboard-Subject: alice\r\n\r\n"

// BenchmarkAgentExchange is the agent's share of a small keep-alive GET: a stream from the relay's side of a yamux
// session over loopback, the agent serving it from an upstream on loopback, and back. "proxy" is the http.Server +
// ReverseProxy path (UpstreamHandler), "bridge" the byte bridge that Host runs.
func BenchmarkAgentExchange(b *testing.B) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "hello")
	}))
	defer up.Close()
	u, _ := url.Parse(up.URL)
	serves := map[string]func(net.Listener) error{
		"proxy": func(ln net.Listener) error {
			return (&http.Server{Handler: UpstreamHandler(u, nil)}).Serve(ln)
		},
		"bridge": func(ln net.Listener) error {
			br, err := NewBridge(u, UpstreamOptions{})
			if err != nil {
				return err
			}
			defer br.Close()
			return br.Serve(ln)
		},
	}
	for _, name := range []string{"proxy", "bridge"} {
		b.Run(name, func(b *testing.B) {
			t := startBenchTunnel(b, serves[name])
			c := newExchangeClient(b, t)
			req := []byte(benchRequest)
			b.ReportAllocs()
			for b.Loop() {
				status, n, err := c.do(req)
				if err != nil || status != 200 || n != 5 {
					b.Fatalf("status %d, %d bytes, %v", status, n, err)
				}
			}
		})
	}
}

// BenchmarkAgentDownload is the agent's share of a 1 MiB response.
func BenchmarkAgentDownload(b *testing.B) {
	body := strings.Repeat("x", 1<<20)
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "1048576")
		_, _ = io.WriteString(w, body)
	}))
	defer up.Close()
	u, _ := url.Parse(up.URL)
	for _, name := range []string{"proxy", "bridge"} {
		b.Run(name, func(b *testing.B) {
			t := startBenchTunnel(b, func(ln net.Listener) error {
				if name == "proxy" {
					return (&http.Server{Handler: UpstreamHandler(u, nil)}).Serve(ln)
				}
				br, _ := NewBridge(u, UpstreamOptions{})
				defer br.Close()
				return br.Serve(ln)
			})
			c := newExchangeClient(b, t)
			req := []byte(benchRequest)
			b.SetBytes(1 << 20)
			b.ReportAllocs()
			for b.Loop() {
				status, n, err := c.do(req)
				if err != nil || status != 200 || n != 1<<20 {
					b.Fatalf("status %d, %d bytes, %v", status, n, err)
				}
			}
		})
	}
}
