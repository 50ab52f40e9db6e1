package proxyproto

import (
	"bufio"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Config configures a Listener.
type Config struct {
	// Trusted are the networks of the load balancers: a connection from one of them must start with a PROXY header
	// (v1 or v2) and is served as coming from the client the header names. A connection from anywhere else is
	// closed unread. Required: an empty list is an error, never "trust everyone".
	Trusted []netip.Prefix
	// HeaderTimeout is how long a trusted peer has to send its whole header. Zero means 5 s.
	HeaderTimeout time.Duration
	// MaxPending caps connections whose header is being read at once; further ones wait in the kernel's backlog.
	// Zero means 256.
	MaxPending int
	// Logger receives one line per refused connection (debug for untrusted peers, which anyone can cause; warn for
	// a trusted peer that sent no valid header, a misconfiguration). If nil, logs are discarded.
	Logger *slog.Logger
	// Registerer receives switchboard_proxy_protocol_refused_total{reason}. If nil, the counter is not exported.
	Registerer prometheus.Registerer
}

// Listener serves the connections of an inner listener once their PROXY header is read. Headers are read
// concurrently (a slow peer holds up no other connection), each within HeaderTimeout.
type Listener struct {
	// Immutable after NewListener.
	inner   net.Listener
	cfg     Config
	refused *prometheus.CounterVec

	ready chan net.Conn
	errs  chan error
	done  chan struct{} // closed by Close
	slots chan struct{} // one per header being read
	wg    sync.WaitGroup
	once  sync.Once

	// Guarded by mu: connections whose header is being read, closed by Close.
	mu      sync.Mutex
	pending map[net.Conn]struct{}
}

// newRefused returns switchboard_proxy_protocol_refused_total with its series at 0.
func newRefused() *prometheus.CounterVec {
	c := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "switchboard_proxy_protocol_refused_total",
		Help: "Connections closed before serving: reason untrusted (not from --proxy-protocol-from), bad_header, or timeout.",
	}, []string{"reason"})
	for _, r := range []string{"untrusted", "bad_header", "timeout"} {
		c.WithLabelValues(r)
	}
	return c
}

// RegisterUnused registers switchboard_proxy_protocol_refused_total at 0 for a relay that reads no PROXY headers,
// so that the family exists on every relay (dashboards and alerts need not special-case its absence).
func RegisterUnused(reg prometheus.Registerer) error {
	return reg.Register(newRefused())
}

// NewListener wraps inner, which it owns from now on (Close closes it), and starts accepting.
func NewListener(inner net.Listener, cfg Config) (*Listener, error) {
	if len(cfg.Trusted) == 0 {
		return nil, errors.New("proxyproto: no trusted networks: a PROXY header is accepted only from the load balancers' networks")
	}
	if cfg.HeaderTimeout <= 0 {
		cfg.HeaderTimeout = 5 * time.Second
	}
	if cfg.MaxPending <= 0 {
		cfg.MaxPending = 256
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	l := &Listener{
		inner: inner, cfg: cfg,
		refused: newRefused(),
		ready:   make(chan net.Conn),
		errs:    make(chan error),
		done:    make(chan struct{}),
		slots:   make(chan struct{}, cfg.MaxPending),
		pending: make(map[net.Conn]struct{}),
	}
	if cfg.Registerer != nil {
		if err := cfg.Registerer.Register(l.refused); err != nil {
			return nil, fmt.Errorf("proxyproto: register metrics: %w", err)
		}
	}
	l.wg.Go(l.acceptLoop)
	return l, nil
}

// Accept returns the next connection whose header was read, with the client's addresses.
func (l *Listener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ready:
		return c, nil
	case err := <-l.errs:
		return nil, err
	case <-l.done:
		return nil, net.ErrClosed
	}
}

// Addr is the inner listener's address.
func (l *Listener) Addr() net.Addr { return l.inner.Addr() }

// Close stops accepting, closes the inner listener and every connection whose header is still being read, and
// waits for its goroutines. Connections already returned by Accept are the caller's. Idempotent.
func (l *Listener) Close() error {
	var err error
	l.once.Do(func() {
		close(l.done)
		err = l.inner.Close()
		l.mu.Lock()
		for c := range l.pending {
			_ = c.Close()
		}
		l.mu.Unlock()
		l.wg.Wait()
	})
	return err
}

// acceptLoop accepts from inner and starts a header read for each trusted connection. Errors go to Accept.
func (l *Listener) acceptLoop() {
	for {
		select {
		case l.slots <- struct{}{}:
		case <-l.done:
			return
		}
		c, err := l.inner.Accept()
		if err != nil {
			<-l.slots
			select {
			case l.errs <- err:
			case <-l.done:
				return
			}
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		if !l.trusted(c.RemoteAddr()) {
			<-l.slots
			l.refused.WithLabelValues("untrusted").Inc()
			l.cfg.Logger.Debug("connection refused: not from a --proxy-protocol-from network", "remote", c.RemoteAddr().String())
			_ = c.Close()
			continue
		}
		// Checked under mu: once Close has walked pending, no connection may join it (it would be read for up to
		// HeaderTimeout while Close waits, and stay open meanwhile).
		l.mu.Lock()
		select {
		case <-l.done:
			l.mu.Unlock()
			<-l.slots
			_ = c.Close()
			return
		default:
		}
		l.pending[c] = struct{}{}
		l.wg.Add(1)
		l.mu.Unlock()
		go func() {
			defer l.wg.Done()
			l.handshake(c)
		}()
	}
}

// handshake reads c's header and hands the wrapped connection to Accept.
func (l *Listener) handshake(c net.Conn) {
	defer func() { <-l.slots }()
	pc, err := l.readHeader(c)
	l.mu.Lock()
	delete(l.pending, c)
	l.mu.Unlock()
	if err != nil {
		reason := "bad_header"
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			reason = "timeout"
		}
		l.refused.WithLabelValues(reason).Inc()
		l.cfg.Logger.Warn("connection refused: no valid PROXY header from a trusted peer", "remote", c.RemoteAddr().String(), "err", err)
		_ = c.Close()
		return
	}
	select {
	case l.ready <- pc:
	case <-l.done:
		_ = c.Close()
	}
}

func (l *Listener) readHeader(c net.Conn) (*Conn, error) {
	if err := c.SetReadDeadline(time.Now().Add(l.cfg.HeaderTimeout)); err != nil {
		return nil, fmt.Errorf("set deadline: %w", err)
	}
	// Large enough for any header Read accepts, so Peek never fails for want of room.
	br := bufio.NewReaderSize(c, v2FixedLen+MaxV2Payload)
	h, err := Read(br)
	if err != nil {
		return nil, fmt.Errorf("read PROXY header: %w", err)
	}
	if err := c.SetReadDeadline(time.Time{}); err != nil {
		return nil, fmt.Errorf("clear deadline: %w", err)
	}
	pc := &Conn{Conn: c, header: h, remote: c.RemoteAddr(), local: c.LocalAddr()}
	if br.Buffered() > 0 {
		pc.br = br
	}
	if !h.Local {
		pc.remote = net.TCPAddrFromAddrPort(h.Source)
		pc.local = net.TCPAddrFromAddrPort(h.Destination)
	}
	return pc, nil
}

// trusted reports whether addr is in a Trusted network.
func (l *Listener) trusted(addr net.Addr) bool {
	ta, ok := addr.(*net.TCPAddr)
	if !ok {
		return false
	}
	ap := ta.AddrPort()
	for _, p := range l.cfg.Trusted {
		if p.Contains(ap.Addr().Unmap()) {
			return true
		}
	}
	return false
}

// Conn is a connection whose PROXY header has been read: RemoteAddr is the client's address (the balancer's for a
// LOCAL or UNKNOWN header), LocalAddr the address the client connected to.
type Conn struct {
	net.Conn
	header        Header
	remote, local net.Addr
	br            *bufio.Reader // bytes read past the header; nil once drained (owned by the reader)
}

// Read reads what followed the header.
func (c *Conn) Read(b []byte) (int, error) {
	if c.br != nil {
		n, err := c.br.Read(b)
		if c.br.Buffered() == 0 {
			c.br = nil
		}
		return n, err
	}
	return c.Conn.Read(b)
}

// RemoteAddr is the client's address as the header gave it.
func (c *Conn) RemoteAddr() net.Addr { return c.remote }

// LocalAddr is the address the client connected to as the header gave it.
func (c *Conn) LocalAddr() net.Addr { return c.local }

// Header is the connection's PROXY header.
func (c *Conn) Header() Header { return c.header }

// NetConn is the balancer's connection underneath.
func (c *Conn) NetConn() net.Conn { return c.Conn }

// CloseWrite half-closes the connection when the one underneath can (a *net.TCPConn): a WebSocket or tunnel
// proxied over it passes its half-close on.
func (c *Conn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return errors.ErrUnsupported
}

// ClientTLS reports whether c, or a connection c wraps (through NetConn or Unwrap methods, as tls.Conn and the
// connection limiter offer), is a *Conn whose header said the client's side was TLS.
func ClientTLS(c net.Conn) bool {
	for range 8 {
		switch v := c.(type) {
		case *Conn:
			return v.header.TLS
		case interface{ NetConn() net.Conn }:
			c = v.NetConn()
		case interface{ Unwrap() net.Conn }:
			c = v.Unwrap()
		default:
			return false
		}
	}
	return false
}
