package proxyproto

import (
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/netip"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// listen starts a Listener on loopback trusting nets; it is closed in t.Cleanup.
func listen(t *testing.T, timeout time.Duration, nets ...string) (*Listener, *prometheus.Registry) {
	t.Helper()
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var trusted []netip.Prefix
	for _, n := range nets {
		trusted = append(trusted, netip.MustParsePrefix(n))
	}
	reg := prometheus.NewRegistry()
	l, err := NewListener(inner, Config{Trusted: trusted, HeaderTimeout: timeout, Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })
	return l, reg
}

// accept runs l.Accept in the background.
func accept(l *Listener) <-chan net.Conn {
	ch := make(chan net.Conn, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			close(ch)
			return
		}
		ch <- c
	}()
	return ch
}

func dial(t *testing.T, l *Listener) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// waitClosed fails unless the peer closes c without sending anything.
func waitClosed(t *testing.T, c net.Conn) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
	// A close with our bytes still unread makes the kernel answer with a reset: that is a close too.
	if b, err := io.ReadAll(c); err != nil && !errors.Is(err, syscall.ECONNRESET) || len(b) > 0 {
		t.Fatalf("want a close without data: read %q, %v", b, err)
	}
}

// TestListenerServesClientAddress: a trusted peer's header sets RemoteAddr, LocalAddr and TLS, and the bytes after
// the header (sent in the same segment) are read intact.
func TestListenerServesClientAddress(t *testing.T) {
	l, _ := listen(t, 0, "127.0.0.0/8")
	got := accept(l)
	c := dial(t, l)
	hdr := v2(cmdProxy, 0x11, inet4("203.0.113.7", "192.0.2.1", 51000, 443, sslTLV(sslClient)))
	if _, err := c.Write(append(hdr, "hello"...)); err != nil {
		t.Fatal(err)
	}
	sc := <-got
	if sc == nil {
		t.Fatal("no connection accepted")
	}
	defer sc.Close()
	if sc.RemoteAddr().String() != "203.0.113.7:51000" || sc.LocalAddr().String() != "192.0.2.1:443" {
		t.Fatalf("addresses %s → %s", sc.RemoteAddr(), sc.LocalAddr())
	}
	if !ClientTLS(sc) || !ClientTLS(tls.Server(sc, &tls.Config{})) {
		t.Fatal("ClientTLS false for a header with PP2_CLIENT_SSL")
	}
	buf := make([]byte, 5)
	if _, err := io.ReadFull(sc, buf); err != nil || string(buf) != "hello" {
		t.Fatalf("after the header: %q %v", buf, err)
	}
	if _, err := sc.Write([]byte("back")); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(c, buf[:4]); err != nil || string(buf[:4]) != "back" {
		t.Fatalf("reply: %q %v", buf[:4], err)
	}
}

// TestListenerV1AndLocal: a v1 header works the same; a LOCAL header (a balancer's health check) keeps the
// connection's own addresses.
func TestListenerV1AndLocal(t *testing.T) {
	l, _ := listen(t, 0, "127.0.0.1/32")
	got := accept(l)
	c := dial(t, l)
	_, _ = c.Write([]byte("PROXY TCP6 2001:db8::7 2001:db8::1 4000 443\r\n"))
	sc := <-got
	if sc == nil || sc.RemoteAddr().String() != "[2001:db8::7]:4000" || ClientTLS(sc) {
		t.Fatalf("v1: %v", sc)
	}
	sc.Close()
	got = accept(l)
	c = dial(t, l)
	_, _ = c.Write(v2(cmdLocal, 0, nil))
	sc = <-got
	if sc == nil || sc.RemoteAddr().String() != c.LocalAddr().String() {
		t.Fatalf("local: remote %v, want %s", sc.RemoteAddr(), c.LocalAddr())
	}
	sc.Close()
}

// TestListenerRefuses: a peer outside the trusted networks is closed unread, even with a valid header; a trusted
// peer with a bad header, or none within the timeout, is closed too. None of them reaches Accept, and each is
// counted by reason.
func TestListenerRefuses(t *testing.T) {
	l, _ := listen(t, 200*time.Millisecond, "10.0.0.0/8", "::1/128")
	got := accept(l)
	c := dial(t, l)
	_, _ = c.Write(v2(cmdProxy, 0x11, inet4("203.0.113.7", "192.0.2.1", 1, 2)))
	waitClosed(t, c)

	l2, _ := listen(t, 200*time.Millisecond, "127.0.0.0/8")
	got2 := accept(l2)
	bad := dial(t, l2)
	_, _ = bad.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
	waitClosed(t, bad)
	silent := dial(t, l2)
	waitClosed(t, silent)

	select {
	case c := <-got:
		t.Fatalf("untrusted connection accepted from %v", c.RemoteAddr())
	case c := <-got2:
		t.Fatalf("connection without a header accepted from %v", c.RemoteAddr())
	default:
	}
	if n := testutil.ToFloat64(l.refused.WithLabelValues("untrusted")); n != 1 {
		t.Fatalf("untrusted refusals %v", n)
	}
	if b, to := testutil.ToFloat64(l2.refused.WithLabelValues("bad_header")), testutil.ToFloat64(l2.refused.WithLabelValues("timeout")); b != 1 || to != 1 {
		t.Fatalf("bad_header %v, timeout %v", b, to)
	}
}

// TestListenerSlowPeerBlocksNobody: a trusted peer that sends nothing does not hold up the next one.
func TestListenerSlowPeerBlocksNobody(t *testing.T) {
	l, _ := listen(t, time.Hour, "127.0.0.0/8")
	_ = dial(t, l) // silent
	got := accept(l)
	c := dial(t, l)
	_, _ = c.Write([]byte("PROXY TCP4 198.51.100.1 192.0.2.1 1000 443\r\n"))
	if sc := <-got; sc == nil || sc.RemoteAddr().String() != "198.51.100.1:1000" {
		t.Fatalf("second connection: %v", sc)
	} else {
		sc.Close()
	}
}

// TestListenerClose: Close ends Accept with net.ErrClosed and closes connections still sending their header.
func TestListenerClose(t *testing.T) {
	l, _ := listen(t, time.Hour, "127.0.0.0/8")
	silent := dial(t, l)
	got := accept(l)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if c, ok := <-got; ok {
		t.Fatalf("accepted %v after Close", c)
	}
	waitClosed(t, silent)
	if _, err := NewListener(nil, Config{}); err == nil {
		t.Fatal("NewListener without trusted networks: no error")
	}
}
