package connlimit

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// warnCounter is a slog handler that counts WARN records by message.
type warnCounter struct {
	mu sync.Mutex
	n  map[string]int
}

func (w *warnCounter) Enabled(context.Context, slog.Level) bool { return true }
func (w *warnCounter) Handle(_ context.Context, r slog.Record) error {
	if r.Level == slog.LevelWarn {
		w.mu.Lock()
		w.n[r.Message]++
		w.mu.Unlock()
	}
	return nil
}
func (w *warnCounter) WithAttrs([]slog.Attr) slog.Handler { return w }
func (w *warnCounter) WithGroup(string) slog.Handler      { return w }
func (w *warnCounter) count(msg string) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.n[msg]
}

// server is an http.Server with /healthz on a capped loopback listener, stopped in t.Cleanup.
type server struct {
	ln   *Listener
	addr string
	m    *Metrics
	reg  *prometheus.Registry
	logs *warnCounter
}

func startServer(t *testing.T, cfg Config) *server {
	t.Helper()
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &server{reg: prometheus.NewRegistry(), logs: &warnCounter{n: make(map[string]int)}}
	s.m = NewMetrics(s.reg)
	cfg.Metrics, cfg.Logger, cfg.LogEvery = s.m, slog.New(s.logs), time.Hour
	s.ln = Wrap(inner, cfg)
	s.addr = inner.Addr().String()
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok")) })
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: time.Minute}
	done := make(chan struct{})
	go func() { defer close(done); _ = hs.Serve(s.ln) }()
	t.Cleanup(func() {
		_ = hs.Close()
		<-done
	})
	return s
}

// dialFrom opens a TCP connection to addr from the local address src; it is closed in t.Cleanup. A connection
// the listener refused may already be reset when the dial returns: then it is a closed connection.
func dialFrom(t *testing.T, addr, src string) net.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 10 * time.Second}
	c, err := d.Dial("tcp", addr)
	if errors.Is(err, syscall.ECONNRESET) {
		return refusedConn{}
	}
	if err != nil {
		t.Fatalf("dial from %s: %v", src, err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// refusedConn is a connection reset during the dial.
type refusedConn struct{ net.Conn }

func (refusedConn) Write([]byte) (int, error)   { return 0, syscall.ECONNRESET }
func (refusedConn) SetDeadline(time.Time) error { return nil }
func (refusedConn) Close() error                { return nil }
func (refusedConn) LocalAddr() net.Addr         { return &net.TCPAddr{} }

// healthz sends GET /healthz on c and reports whether it was answered 200; a connection the listener closed
// fails to answer.
func healthz(c net.Conn) bool {
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	if _, err := fmt.Fprintf(c, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		return false
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return false
	}
	_ = resp.Body.Close()
	return resp.StatusCode == 200
}

func (s *server) refused(reason string) float64 {
	return testutil.ToFloat64(s.m.refused.WithLabelValues(reason))
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestPerIPCap: 50 idle connections from one address against a cap of 20: the 30 beyond it are closed at
// accept (one rate-limited warning), the 20 keep being served, another address still connects, and a closed
// connection gives its place back.
func TestPerIPCap(t *testing.T) {
	const perIP, flood = 20, 50
	s := startServer(t, Config{PerIP: perIP, Total: 100})
	src := &net.TCPAddr{IP: net.ParseIP("127.0.0.1")}
	conns := make([]net.Conn, flood)
	for i := range conns {
		conns[i] = dialFrom(t, s.addr, "127.0.0.1")
	}
	eventually(t, "the flood to be accepted", func() bool {
		open, _ := s.ln.Open(src)
		return open+int(s.refused(ReasonPerIP)) == flood
	})
	if open, mine := s.ln.Open(src); open != perIP || mine != perIP {
		t.Fatalf("open %d, from the flooding address %d; want %d", open, mine, perIP)
	}
	var served []net.Conn
	for _, c := range conns {
		if healthz(c) {
			served = append(served, c)
		}
	}
	if len(served) != perIP {
		t.Fatalf("%d of %d connections served, want %d", len(served), flood, perIP)
	}
	if got := s.refused(ReasonPerIP); got != flood-perIP {
		t.Fatalf("refused per_ip %v, want %d", got, flood-perIP)
	}
	if got := testutil.ToFloat64(s.m.open); got != perIP {
		t.Fatalf("switchboard_connections_open %v, want %d", got, perIP)
	}
	if n := s.logs.count("connection refused at a cap"); n != 1 {
		t.Fatalf("%d warnings for %d refusals, want 1 (rate-limited)", n, flood-perIP)
	}
	if !healthz(dialFrom(t, s.addr, "127.0.0.2")) {
		t.Fatal("another address was not served while one address is at its cap")
	}
	if healthz(dialFrom(t, s.addr, "127.0.0.1")) {
		t.Fatal("the flooding address got a connection past its cap")
	}
	_ = served[0].Close()
	eventually(t, "a closed connection to give its place back", func() bool {
		return healthz(dialFrom(t, s.addr, "127.0.0.1"))
	})
}

// TestTotalCap: at the total cap every address is refused until a connection closes.
func TestTotalCap(t *testing.T) {
	const total = 10
	s := startServer(t, Config{Total: total})
	var conns []net.Conn
	for range total {
		c := dialFrom(t, s.addr, "127.0.0.1")
		if !healthz(c) {
			t.Fatal("a connection within the cap was not served")
		}
		conns = append(conns, c)
	}
	if healthz(dialFrom(t, s.addr, "127.0.0.2")) {
		t.Fatal("a connection past the total cap was served")
	}
	if got := s.refused(ReasonTotal); got != 1 {
		t.Fatalf("refused total %v, want 1", got)
	}
	_ = conns[0].Close()
	eventually(t, "a place under the total cap", func() bool { return healthz(dialFrom(t, s.addr, "127.0.0.2")) })
}

// failingListener fails every Accept with err until it is closed.
type failingListener struct {
	net.Listener
	err   error
	calls atomic.Int64
}

func (f *failingListener) Accept() (net.Conn, error) {
	f.calls.Add(1)
	return nil, f.err
}

// TestAcceptErrorsAreVisible: running out of file descriptors is returned to the server (which backs off),
// counted, and logged at WARN at most once per LogEvery.
func TestAcceptErrorsAreVisible(t *testing.T) {
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer inner.Close()
	emfile := &net.OpError{Op: "accept", Net: "tcp", Err: syscall.EMFILE}
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	logs := &warnCounter{n: make(map[string]int)}
	ln := Wrap(&failingListener{Listener: inner, err: emfile}, Config{Metrics: m, Logger: slog.New(logs), LogEvery: time.Hour})
	for range 5 {
		_, err := ln.Accept()
		var ne net.Error
		if !errors.Is(err, syscall.EMFILE) || !errors.As(err, &ne) {
			t.Fatalf("accept error %v, want EMFILE as a net.Error", err)
		}
	}
	if got := testutil.ToFloat64(m.acceptErrors); got != 5 {
		t.Fatalf("switchboard_accept_errors_total %v, want 5", got)
	}
	if n := logs.count("accept failed; the server retries with backoff"); n != 1 {
		t.Fatalf("%d warnings for 5 errors, want 1", n)
	}
}

func TestClientKey(t *testing.T) {
	tests := []struct {
		addr net.Addr
		want string
	}{
		{&net.TCPAddr{IP: net.ParseIP("192.0.2.7"), Port: 1}, "192.0.2.7"},
		{&net.TCPAddr{IP: net.ParseIP("::ffff:192.0.2.7"), Port: 1}, "192.0.2.7"},
		{&net.TCPAddr{IP: net.ParseIP("2001:db8:1:2:3:4:5:6"), Port: 1}, "2001:db8:1:2::/64"},
		{&net.TCPAddr{IP: net.ParseIP("2001:db8:1:2:ffff::1"), Port: 1}, "2001:db8:1:2::/64"},
	}
	for _, tt := range tests {
		if got := clientKey(tt.addr); got != tt.want {
			t.Errorf("clientKey(%v) = %q, want %q", tt.addr, got, tt.want)
		}
	}
}

// TestHalfClose: an accepted connection still half-closes (the relay's WebSocket and raw tunnel paths send their
// last bytes, then CloseWrite), and gives its place back on Close.
func TestHalfClose(t *testing.T) {
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := Wrap(inner, Config{PerIP: 1})
	defer ln.Close()
	client := dialFrom(t, inner.Addr().String(), "127.0.0.1")
	c, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	hc, ok := c.(interface{ CloseWrite() error })
	if !ok {
		t.Fatal("accepted connection cannot half-close")
	}
	if _, err := c.Write([]byte("bye")); err != nil {
		t.Fatal(err)
	}
	if err := hc.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	_ = client.SetReadDeadline(time.Now().Add(20 * time.Second))
	if b, err := io.ReadAll(client); err != nil || string(b) != "bye" {
		t.Fatalf("client read %q, %v; want bye then EOF", b, err)
	}
	if _, err := client.Write([]byte("still open")); err != nil {
		t.Fatalf("the other direction closed too: %v", err)
	}
	_ = c.Close()
	_ = c.Close()
	if open, _ := ln.Open(client.LocalAddr()); open != 0 {
		t.Fatalf("%d open after Close (twice), want 0", open)
	}
}
