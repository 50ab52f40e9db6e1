// Package connlimit caps the TCP connections a listener holds: per client address and in total. It wraps a
// net.Listener; connections past a cap are accepted and closed at once, so a flood drains the kernel's backlog
// instead of filling it, and the connections within the caps (a health probe from another address, an agent)
// keep being accepted.
//
// IPv4 clients are counted per address; IPv6 clients per /64, the block one subscriber usually holds.
package connlimit

import (
	"errors"
	"log/slog"
	"net"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Config configures a Listener. The zero value caps nothing.
type Config struct {
	// PerIP caps the open connections from one client address (IPv6: one /64). Zero means no cap.
	PerIP int
	// Total caps the open connections of the listener. Zero means no cap.
	Total int
	// Logger receives the warnings about refused connections and accept errors, at most one line per reason
	// every LogEvery. If nil, logs are discarded.
	Logger *slog.Logger
	// LogEvery is the least time between two warnings of one reason. Zero means 10 s.
	LogEvery time.Duration
	// Metrics counts the listener's connections. If nil, nothing is counted.
	Metrics *Metrics
}

// Refusal reasons, the values of the reason label.
const (
	ReasonPerIP = "per_ip"
	ReasonTotal = "total"
)

// Metrics are the Prometheus series of one or more Listeners.
type Metrics struct {
	open         prometheus.Gauge
	refused      *prometheus.CounterVec // reason
	acceptErrors prometheus.Counter
}

// NewMetrics registers the series on reg:
// switchboard_connections_open, switchboard_connections_refused_total{reason} and
// switchboard_accept_errors_total.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		open: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "switchboard", Name: "connections_open",
			Help: "TCP connections open on the relay listener.",
		}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "switchboard", Name: "connections_refused_total",
			Help: "TCP connections closed at accept because a cap was reached, by reason: per_ip, total.",
		}, []string{"reason"}),
		acceptErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "switchboard", Name: "accept_errors_total",
			Help: "Errors accepting TCP connections on the relay listener (such as running out of file descriptors).",
		}),
	}
	m.refused.WithLabelValues(ReasonPerIP)
	m.refused.WithLabelValues(ReasonTotal)
	reg.MustRegister(m.open, m.refused, m.acceptErrors)
	return m
}

// Listener is a net.Listener that enforces Config's caps.
type Listener struct {
	net.Listener
	// Immutable after Wrap.
	cfg Config
	log *slog.Logger

	mu    sync.Mutex     // guards open, byIP and the log state
	open  int            // connections accepted and not yet closed
	byIP  map[string]int // open connections per client key; only keys with at least one
	quiet map[string]*logState
}

// logState rate-limits the warnings of one reason.
type logState struct {
	last       time.Time
	suppressed int
}

// Wrap returns ln limited by cfg.
func Wrap(ln net.Listener, cfg Config) *Listener {
	if cfg.LogEvery <= 0 {
		cfg.LogEvery = 10 * time.Second
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Listener{Listener: ln, cfg: cfg, log: log, byIP: make(map[string]int), quiet: make(map[string]*logState)}
}

// Accept returns the next connection within the caps; connections past a cap are closed here. An accept error is
// counted, logged (rate-limited) and returned: http.Server backs off on temporary ones such as EMFILE.
func (l *Listener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				if l.cfg.Metrics != nil {
					l.cfg.Metrics.acceptErrors.Inc()
				}
				l.warn("accept", "accept failed; the server retries with backoff", "err", err,
					"out_of_fds", errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE))
			}
			return nil, err
		}
		key := clientKey(c.RemoteAddr())
		if reason := l.admit(key); reason != "" {
			if l.cfg.Metrics != nil {
				l.cfg.Metrics.refused.WithLabelValues(reason).Inc()
			}
			l.warn(reason, "connection refused at a cap", "reason", reason, "remote", key,
				"per_ip_cap", l.cfg.PerIP, "total_cap", l.cfg.Total)
			resetClose(c)
			continue
		}
		if l.cfg.Metrics != nil {
			l.cfg.Metrics.open.Inc()
		}
		return newConn(c, l, key), nil
	}
}

// resetClose closes c with a reset, so its slot and descriptor come back at once, when the connection underneath
// (under a PROXY protocol wrapper, for one) is TCP; otherwise it just closes it.
func resetClose(c net.Conn) {
	inner := c
	for range 8 {
		if tc, ok := inner.(*net.TCPConn); ok {
			_ = tc.SetLinger(0)
			break
		}
		w, ok := inner.(interface{ NetConn() net.Conn })
		if !ok {
			break
		}
		inner = w.NetConn()
	}
	_ = c.Close()
}

// admit takes a place for a connection from key, or returns the reason it cannot.
func (l *Listener) admit(key string) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.cfg.Total > 0 && l.open >= l.cfg.Total {
		return ReasonTotal
	}
	if l.cfg.PerIP > 0 && l.byIP[key] >= l.cfg.PerIP {
		return ReasonPerIP
	}
	l.open++
	l.byIP[key]++
	return ""
}

// release gives back the place of a closed connection from key.
func (l *Listener) release(key string) {
	l.mu.Lock()
	l.open--
	if l.byIP[key] <= 1 {
		delete(l.byIP, key)
	} else {
		l.byIP[key]--
	}
	l.mu.Unlock()
	if l.cfg.Metrics != nil {
		l.cfg.Metrics.open.Dec()
	}
}

// Open returns the number of connections open now, and from the client address of addr.
func (l *Listener) Open(addr net.Addr) (total, fromAddr int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.open, l.byIP[clientKey(addr)]
}

// warn logs msg at WARN unless one of the same kind was logged less than LogEvery ago; the next one that is
// logged says how many were suppressed in between.
func (l *Listener) warn(kind, msg string, args ...any) {
	now := time.Now()
	l.mu.Lock()
	st := l.quiet[kind]
	if st == nil {
		st = &logState{}
		l.quiet[kind] = st
	}
	if !st.last.IsZero() && now.Sub(st.last) < l.cfg.LogEvery {
		st.suppressed++
		l.mu.Unlock()
		return
	}
	suppressed := st.suppressed
	st.last, st.suppressed = now, 0
	l.mu.Unlock()
	l.log.Warn(msg, append(args, "suppressed_since_last", suppressed)...)
}

// clientKey is the address connections are counted under: the IPv4 address, or the /64 of an IPv6 one.
func clientKey(a net.Addr) string {
	var ip net.IP
	switch a := a.(type) {
	case *net.TCPAddr:
		ip = a.IP
	default:
		host, _, err := net.SplitHostPort(a.String())
		if err != nil {
			return a.String()
		}
		ip = net.ParseIP(host)
		if ip == nil {
			return host
		}
	}
	if v4 := ip.To4(); v4 != nil {
		return v4.String()
	}
	return ip.Mask(net.CIDRMask(64, 128)).String() + "/64"
}
