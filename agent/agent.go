// Package agent is the host side of Switchboard: it keeps a tunnel to a relay and hands the streams that arrive on
// it to the program as connections. Listen gives a Go program a net.Listener, so http.Serve works unchanged;
// reconnects, drain moves and token refreshes happen behind it. Host serves an upstream URL through the tunnel,
// which is what `switchboard host` runs.
//
// Errors. Listen fails only for a bad Config. Failures to reach the relay are transient: the listener retries them
// with backoff and Listener.Err shows the latest (a *DialError). A token the relay refuses is ErrAuth; with a static
// Config.Token it is permanent, and Accept (hence http.Serve) returns it. A relay that refuses to register the host
// (an operator banned it, or the agent is older than the relay's minimum version) says so with a close code:
// Listener.Err shows a *RefusedError, and the listener tries again only after Config.RefusedBackoff.
//
//	ln, err := agent.Listen(ctx, agent.Config{Relays: []string{relayURL}, HostID: "org:laptop", Token: tok})
//	if err != nil {
//		return err
//	}
//	defer ln.Close()
//	return http.Serve(ln, handler)
package agent

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/switchboard-relay/switchboard/internal/tunnel"
)

// TokenSource returns a host token. The listener calls it before every connection attempt, and to renew the tunnel
// before its token expires: at 90% of the token's lifetime or one minute before its "exp", whichever is later, it
// gets a fresh token and opens a new tunnel with it while the old one finishes its exchanges (make-before-break). A
// token that expires no later than the current one is not used for renewal; renewal is retried with backoff.
//
// An error is retried with backoff, except one that wraps ErrAuth (for example: the user signed out), which stops
// the listener. A token the relay refuses is retried too, since the next call may return a better one.
type TokenSource func(ctx context.Context) (string, error)

// Config configures an agent. Zero values have the defaults documented per field, applied by Listen.
type Config struct {
	// Relays are the relay base URLs (http, https, ws or wss). The agent uses the first and fails over to the
	// next on a failed attempt. At least one is required.
	Relays []string
	// HostID is the id to register. Required.
	HostID string
	// Token is the host token. Ignored when TokenSource is set. The relay closes a tunnel when its token expires
	// (close code 4401), so a Token with an "exp" serves until then only; use TokenSource to stay connected. If the
	// relay refuses a static Token (401 or 403), the listener stops: Accept returns an error matching ErrAuth.
	Token string
	// TokenSource, if set, supplies host tokens; Token is then ignored. If nil, Token is used on every attempt.
	TokenSource TokenSource
	// Name and Labels are metadata shown by the relay's presence API (GET /v1/hosts and presence events). If empty
	// or nil, none. OS and agent version are sent automatically.
	Name   string
	Labels map[string]string
	// Version is the agent version sent to the relay. If empty, the module version from the build info.
	Version string

	// MinBackoff and MaxBackoff bound the full-jitter exponential reconnect backoff. Zero means 1 s and 5 s.
	MinBackoff, MaxBackoff time.Duration
	// ReplacedBackoff is how long to wait after the relay closed the tunnel because another agent registered the
	// same id, so two duplicate agents do not flap. Zero means 60 s.
	ReplacedBackoff time.Duration
	// RefusedBackoff is how long to wait after the relay refused to register the host with a close code: 4410 (an
	// operator banned the host) or 4426 (this agent is older than the relay's minimum version). Zero means 60 s.
	RefusedBackoff time.Duration
	// ConnectTimeout bounds one connection attempt. Zero means 20 s.
	ConnectTimeout time.Duration
	// PingInterval is the keepalive cadence; the relay is considered dead after three missed. Zero means 10 s.
	// A negative value is treated as zero.
	PingInterval time.Duration
	// Transport is TransportAuto (the zero value: raw upgrade, falling back to WebSocket for good on a relay where
	// it does not come through), TransportWebSocket or TransportRaw.
	Transport string
	// Dial, if set, replaces the default dialer of the tunnel (used by tests to inject faults). If nil, a net.Dialer.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// TLSConfig, if set, is used for https/wss relays (e.g. a private CA). If nil, the system's roots.
	TLSConfig *tls.Config
	// Logger receives logs. If nil, logs are discarded.
	Logger *slog.Logger
	// MeasureRTT makes the listener ping the relay on its newest tunnel once per PingInterval (and at once when a
	// tunnel comes up) and report the round trip in Stats.PingRTT. The relay answers these pings itself; they add
	// one small frame each way per interval. If false, Stats.PingRTT stays zero.
	MeasureRTT bool
}

func (c *Config) validate() error {
	if len(c.Relays) == 0 {
		return errors.New("agent: at least one relay URL is required")
	}
	for _, r := range c.Relays {
		if _, err := tunnelURL(r); err != nil {
			return err
		}
	}
	if c.HostID == "" {
		return errors.New("agent: host id is required")
	}
	if err := tunnel.CheckHostID(c.HostID); err != nil {
		return fmt.Errorf("agent: %w", err) // the relay would refuse it at every attempt
	}
	if c.Token == "" && c.TokenSource == nil {
		return errors.New("agent: a token or a token command is required")
	}
	switch c.Transport {
	case "":
		c.Transport = TransportAuto
	case TransportAuto, TransportWebSocket, TransportRaw:
	default:
		return fmt.Errorf("agent: transport %q: want auto, websocket or raw", c.Transport)
	}
	if c.MinBackoff <= 0 {
		c.MinBackoff = time.Second
	}
	if c.MaxBackoff <= 0 {
		c.MaxBackoff = 5 * time.Second
	}
	if c.MaxBackoff < c.MinBackoff {
		c.MaxBackoff = c.MinBackoff
	}
	if c.ReplacedBackoff <= 0 {
		c.ReplacedBackoff = 60 * time.Second
	}
	if c.RefusedBackoff <= 0 {
		c.RefusedBackoff = 60 * time.Second
	}
	if c.ConnectTimeout <= 0 {
		c.ConnectTimeout = 20 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Version == "" {
		c.Version = buildVersion()
	}
	return nil
}

// tunnelURL turns a relay base URL into the WebSocket URL of its tunnel endpoint.
func tunnelURL(relay string) (string, error) {
	u, err := tunnel.WebSocketBase(relay)
	if err != nil {
		return "", fmt.Errorf("agent: %w", err)
	}
	u.Path = strings.TrimSuffix(u.Path, "/") + "/v1/tunnel"
	u.RawPath = ""
	return u.String(), nil
}

func buildVersion() string {
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" {
		return bi.Main.Version
	}
	return "devel"
}

// Listener is a net.Listener whose connections are the streams the relay opens through the tunnel. It keeps the
// tunnel up until Close, across relay restarts and drains; during a drain move it holds the old and the new tunnel
// at once.
type Listener struct {
	// Immutable after Listen.
	cfg    Config
	log    *slog.Logger
	ctx    context.Context
	cancel context.CancelFunc
	conns  chan net.Conn
	events chan sessionEvent

	wg        sync.WaitGroup // run loop and every session goroutine
	closeOnce sync.Once

	connects atomic.Uint64 // tunnels opened, the first one included
	failures atomic.Uint64 // connection attempts that failed
	rtt      atomic.Int64  // nanoseconds of the last ping's round trip (MeasureRTT)

	// Guarded by mu.
	mu       sync.Mutex
	sessions map[*session]struct{}
	lastErr  error           // the last failed attempt's error; nil while a tunnel is up
	stopErr  error           // why the listener stopped by itself (wraps ErrAuth); nil until then
	up       chan struct{}   // closed while at least one session is up; replaced when none is
	wsOnly   map[string]bool // relays where the raw upgrade did not come through
}

// Listen starts keeping a tunnel to the relay and returns at once; connections arrive once a tunnel is up (see
// WaitUp). The tunnel ends when ctx ends or Close is called, or for good when the relay refuses the token (see
// ErrAuth). The error is about cfg only: Listen does not wait for the relay.
func Listen(ctx context.Context, cfg Config) (*Listener, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	l := &Listener{
		cfg:      cfg,
		log:      cfg.Logger.With("host_id", cfg.HostID),
		conns:    make(chan net.Conn),
		events:   make(chan sessionEvent, 8),
		sessions: make(map[*session]struct{}),
		wsOnly:   make(map[string]bool),
		up:       make(chan struct{}),
	}
	l.ctx, l.cancel = context.WithCancel(ctx)
	l.wg.Go(l.run)
	return l, nil
}

// Accept waits for the next stream from the relay. After Close it returns net.ErrClosed; after the listener
// stopped by itself, an error matching ErrAuth.
func (l *Listener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.ctx.Done():
		return nil, l.closedErr()
	}
}

// closedErr is what Accept and WaitUp return once the listener is done: why it stopped by itself, else
// net.ErrClosed.
func (l *Listener) closedErr() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.stopErr != nil {
		return l.stopErr
	}
	return net.ErrClosed
}

// stop ends the listener for good because of err.
func (l *Listener) stop(err error) {
	l.mu.Lock()
	l.stopErr = fmt.Errorf("agent: listener stopped: %w", err)
	l.lastErr = err
	l.mu.Unlock()
	l.cancel()
}

func (l *Listener) setLastErr(err error) {
	l.mu.Lock()
	l.lastErr = err
	l.mu.Unlock()
}

// Err reports the listener's state for an app to show: nil while a tunnel is up or before the first attempt ends;
// the error of the last failed attempt while it retries (usually a *DialError: transient); and, once it stopped by
// itself, why (an error matching ErrAuth, also returned by Accept).
func (l *Listener) Err() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.stopErr != nil {
		return l.stopErr
	}
	if len(l.sessions) > 0 {
		return nil
	}
	return l.lastErr
}

// Close ends every tunnel (the relay sees a normal closure) and waits for the agent's goroutines. Idempotent.
func (l *Listener) Close() error {
	l.closeOnce.Do(func() {
		l.cancel()
		l.wg.Wait()
	})
	return nil
}

// Addr names the listener; it has no network address of its own.
func (l *Listener) Addr() net.Addr { return addr(l.cfg.HostID) }

var _ net.Listener = (*Listener)(nil)

// ErrAuth matches (errors.Is) a refusal of the host token by the relay: 401 (invalid, expired, or not a host token)
// or 403 (the token may not register this host id). With a static Config.Token it is permanent: the listener
// stops. A TokenSource may also return an error wrapping ErrAuth to stop the listener. Every other failure is
// transient and retried with backoff; Listener.Err shows the latest.
var ErrAuth = errors.New("agent: the relay refused the host token")

type addr string

func (addr) Network() string  { return "switchboard" }
func (a addr) String() string { return "switchboard:" + string(a) }

// WaitUp blocks until at least one tunnel is up or ctx ends. It returns ctx's error, net.ErrClosed after Close, or
// an error matching ErrAuth once the listener stopped by itself.
func (l *Listener) WaitUp(ctx context.Context) error {
	for {
		l.mu.Lock()
		up := l.up
		n := len(l.sessions)
		l.mu.Unlock()
		if n > 0 {
			return nil
		}
		select {
		case <-up:
		case <-ctx.Done():
			return ctx.Err()
		case <-l.ctx.Done():
			return l.closedErr()
		}
	}
}

// Tunnels reports how many tunnels are up (two during a drain move).
func (l *Listener) Tunnels() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.sessions)
}

// Stats is a snapshot of a Listener's tunnel state, for metrics and health checks.
type Stats struct {
	// Tunnels is how many tunnels are up: 0 while the listener reconnects, 2 during a drain move or a renewal.
	Tunnels int
	// Connects counts the tunnels opened since Listen, the first one included: Connects-1 reconnects, drain moves
	// and renewals.
	Connects uint64
	// FailedAttempts counts connection attempts that failed (relay unreachable, refused, token refused).
	FailedAttempts uint64
	// PingRTT is the round trip of the last ping on the newest tunnel; zero before the first, or without
	// Config.MeasureRTT.
	PingRTT time.Duration
}

// Stats returns the listener's current Stats.
func (l *Listener) Stats() Stats {
	return Stats{Tunnels: l.Tunnels(), Connects: l.connects.Load(), FailedAttempts: l.failures.Load(),
		PingRTT: time.Duration(l.rtt.Load())}
}
