package peering

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/switchboard-relay/switchboard/internal/httphead"
)

// TestLeanPool: connections come back last in, first out; one idle for longer than LeanIdleTimeout is neither
// handed out nor kept by Prune; CloseIdle closes the rest.
func TestLeanPool(t *testing.T) {
	var p LeanClient
	mk := func(addr string) (*LeanConn, net.Conn) {
		a, b := net.Pipe()
		t.Cleanup(func() { a.Close(); b.Close() })
		return &LeanConn{owner: &p, addr: addr, nc: a}, b
	}
	if p.get("x") != nil {
		t.Fatal("empty pool handed out a connection")
	}
	c1, far1 := mk("x")
	c2, _ := mk("x")
	p.put(c1)
	p.put(c2)
	if got := p.get("x"); got != c2 {
		t.Fatal("pool did not hand out the most recently returned connection")
	}
	c1.used = time.Now().Add(-2 * LeanIdleTimeout)
	p.Prune()
	if got := p.get("x"); got != nil {
		t.Fatal("a connection idle past the timeout was handed out")
	}
	_ = far1.SetReadDeadline(time.Now().Add(time.Second))
	if _, err := far1.Read(make([]byte, 1)); err == nil || isTimeout(err) {
		t.Fatalf("pruned connection not closed: read on its far end gave %v", err)
	}
	c3, far3 := mk("y")
	p.put(c3)
	p.CloseIdle()
	_ = far3.SetReadDeadline(time.Now().Add(time.Second))
	if _, err := far3.Read(make([]byte, 1)); err == nil || isTimeout(err) {
		t.Fatalf("CloseIdle left a connection open: read on its far end gave %v", err)
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// leanPeer is a peer's internal listener for the lean client's tests: it counts the connections it accepted and
// remembers the hop header of the last request.
type leanPeer struct {
	srv   *httptest.Server
	conns atomic.Int32
	mu    sync.Mutex
	hop   string
}

func startLeanPeer(t *testing.T, h http.HandlerFunc) *leanPeer {
	p := &leanPeer{}
	p.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.mu.Lock()
		p.hop = r.Header.Get(HeaderHop)
		p.mu.Unlock()
		h(w, r)
	}))
	p.srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			p.conns.Add(1)
		}
	}
	p.srv.Start()
	t.Cleanup(p.srv.Close)
	return p
}

func (p *leanPeer) lastHop() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.hop
}

func (p *leanPeer) addr() string { return strings.TrimPrefix(p.srv.URL, "http://") }

func newLeanClient(t *testing.T) *LeanClient {
	c := &LeanClient{Signer: NewSigner("A", []byte("lean test secret"), 100), MaxHeadBytes: 4 << 10}
	t.Cleanup(c.CloseIdle)
	return c
}

// leanGet sends a signed GET of path to p and returns the response with its body read, and the connection.
func leanGet(t *testing.T, ctx context.Context, c *LeanClient, p *leanPeer, path string) (*http.Response, string, error) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, "GET", p.srv.URL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	c.Signer.Sign(req, "alice")
	resp, conn, err := c.RoundTrip(ctx, p.addr(), req, "alice")
	if err != nil {
		return nil, "", err
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		conn.Release(false)
		return resp, string(b), err
	}
	_ = resp.Body.Close()
	conn.Release(true)
	return resp, string(b), nil
}

// TestLeanRoundTripReuseAndStale: an exchange read to its end leaves its connection for the next one; a pooled
// connection the peer closed meanwhile is found stale and the request goes again on a fresh one, signed again.
func TestLeanRoundTripReuseAndStale(t *testing.T) {
	p := startLeanPeer(t, func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "hello") })
	c := newLeanClient(t)
	for i := range 2 {
		if resp, body, err := leanGet(t, t.Context(), c, p, "/get"); err != nil || resp.StatusCode != 200 || body != "hello" {
			t.Fatalf("exchange %d: %v %q", i, err, body)
		}
	}
	if n := p.conns.Load(); n != 1 {
		t.Fatalf("two exchanges in turn took %d connections, want 1 (pooled)", n)
	}

	p.srv.CloseClientConnections() // the peer's idle timeout, or its restart
	req, _ := http.NewRequest("GET", p.srv.URL+"/get", nil)
	c.Signer.Sign(req, "alice")
	first := req.Header.Get(HeaderHop)
	resp, conn, err := c.RoundTrip(t.Context(), p.addr(), req, "alice")
	if err != nil {
		t.Fatalf("after the peer closed the pooled connection: %v", err)
	}
	_, _ = io.ReadAll(resp.Body)
	conn.Release(true)
	if n := p.conns.Load(); n != 2 {
		t.Fatalf("the request sent again took %d connections in all, want 2", n)
	}
	if got := p.lastHop(); got == first || got == "" {
		t.Fatalf("the request sent again carried hop %q, first signature %q: want a fresh one", got, first)
	}
}

// TestLeanRoundTripFreshNotRetried: a fresh connection closed before any answer is a failure, not sent again.
func TestLeanRoundTripFreshNotRetried(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var accepted atomic.Int32
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			_ = nc.Close()
		}
	})
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	c := newLeanClient(t)
	req, _ := http.NewRequest("GET", "http://"+ln.Addr().String()+"/", nil)
	if _, _, err := c.RoundTrip(t.Context(), ln.Addr().String(), req, ""); err == nil {
		t.Fatal("a peer that closed without answering gave no error")
	}
	if n := accepted.Load(); n != 1 {
		t.Fatalf("%d connections for a request whose fresh connection failed, want 1", n)
	}
}

// TestLeanRoundTripHeads: interim answers are dropped; a head past MaxHeadBytes fails with httphead.ErrTooLarge;
// an answer that closes the connection leaves nothing in the pool.
func TestLeanRoundTripHeads(t *testing.T) {
	p := startLeanPeer(t, func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/hints":
			w.Header().Set("Link", "</a.css>; rel=preload")
			w.WriteHeader(http.StatusEarlyHints)
			_, _ = io.WriteString(w, "final")
		case "/big":
			w.Header().Set("X-Big", strings.Repeat("a", 8<<10))
		case "/close":
			w.Header().Set("Connection", "close")
			_, _ = io.WriteString(w, "bye")
		}
	})
	c := newLeanClient(t)
	resp, body, err := leanGet(t, t.Context(), c, p, "/hints")
	if err != nil || resp.StatusCode != 200 || body != "final" {
		t.Fatalf("after an interim answer: %v %v %q", err, resp, body)
	}
	if _, _, err := leanGet(t, t.Context(), c, p, "/big"); !errors.Is(err, httphead.ErrTooLarge) {
		t.Fatalf("a head past MaxHeadBytes: %v, want ErrTooLarge", err)
	}
	c.CloseIdle()
	if _, body, err := leanGet(t, t.Context(), c, p, "/close"); err != nil || body != "bye" {
		t.Fatalf("/close: %v %q", err, body)
	}
	if c.get(p.addr()) != nil {
		t.Fatal("a connection the peer closes after its answer went back to the pool")
	}
}

// TestLeanRoundTripContextEnds: once the exchange's context ends, the connection is closed (the peer sees its
// client go, the body's read fails) and it does not go back to the pool.
func TestLeanRoundTripContextEnds(t *testing.T) {
	gone := make(chan struct{})
	p := startLeanPeer(t, func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(200)
		w.(http.Flusher).Flush()
		<-r.Context().Done()
		close(gone)
	})
	c := newLeanClient(t)
	ctx, cancel := context.WithCancel(t.Context())
	req, _ := http.NewRequestWithContext(ctx, "GET", p.srv.URL+"/stream", nil)
	resp, conn, err := c.RoundTrip(ctx, p.addr(), req, "")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("stream: %v %v", err, resp)
	}
	cancel()
	if _, err := io.ReadAll(resp.Body); err == nil {
		t.Fatal("the body read on after the exchange's context ended")
	}
	conn.Release(true)
	<-gone
	if c.get(p.addr()) != nil {
		t.Fatal("a connection whose exchange's context ended went back to the pool")
	}
}
