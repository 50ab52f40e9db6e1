package agent

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
	"github.com/hashicorp/yamux"

	"github.com/switchboard-relay/switchboard/internal/tunnel"
)

// session is one tunnel: a WebSocket carrying a yamux session.
type session struct {
	conn  *conn
	mux   *yamux.Session
	ctrl  net.Conn
	ctrlR *bufio.Scanner // control messages; the first one ("ready") is read by dial
	rec   *readErrConn

	ctrlDone  chan struct{}          // closed when controlLoop returns
	closeCode atomic.Int32           // the code of a "close" control message (raw transport)
	closeMsg  atomic.Pointer[string] // its reason
	epoch     uint64
	relay     string
	since     time.Time
	tokenAt   time.Time // when the token this tunnel registered with was got
	tokenExp  time.Time // that token's "exp"; zero if it has none or is not a JWT
}

// sessionEvent is what a session's goroutines tell the run loop.
type sessionEvent struct {
	s     *session
	drain bool          // a drain notice arrived
	delay time.Duration // with drain: wait this long before dialing anew
	code  websocket.StatusCode
	err   error // with !drain: why the session ended
}

// DialError is a failed connection attempt, with the relay's HTTP status and error code when it answered. It
// matches ErrAuth (errors.Is) when the relay refused the token: status 401 or 403. Any other DialError is
// transient: the listener retries it with backoff.
type DialError struct {
	// Relay is the relay base URL the attempt went to.
	Relay string
	// Status is the relay's HTTP status; 0 if the relay was not reached or did not answer.
	Status int
	// Code is the relay's error code (for example "unauthorized"), if it sent one; see docs/protocol.md.
	Code string
	// Message is the relay's error message, or the status text.
	Message string
	// Err is the underlying error.
	Err error
}

func (e *DialError) Error() string {
	if e.Status != 0 {
		return fmt.Sprintf("relay refused the tunnel: %d %s: %s", e.Status, e.Code, e.Message)
	}
	return fmt.Sprintf("dial relay: %v", e.Err)
}

func (e *DialError) Unwrap() error { return e.Err }

// RefusedError is a tunnel the relay upgraded and then closed before registering it, with a close code that says
// why: tunnel.CloseKicked (the host is banned; Reason says until when) or tunnel.CloseAgentTooOld. The listener
// retries it after Config.RefusedBackoff.
type RefusedError struct {
	Relay  string
	Code   websocket.StatusCode
	Reason string
}

func (e *RefusedError) Error() string {
	return fmt.Sprintf("relay refused the tunnel with close code %d: %s", int(e.Code), e.Reason)
}

// refusal reads a close code that refuses registration from what ended a tunnel before "ready", or nil.
func refusal(relay string, err error, m tunnel.Control, isControl bool) *RefusedError {
	code, reason := websocket.CloseStatus(err), ""
	var ce websocket.CloseError
	if errors.As(err, &ce) {
		reason = ce.Reason
	}
	if isControl && m.Type == tunnel.ControlClose {
		code, reason = websocket.StatusCode(m.Code), m.Reason
	}
	if code != tunnel.CloseKicked && code != tunnel.CloseAgentTooOld {
		return nil
	}
	return &RefusedError{Relay: relay, Code: code, Reason: tunnel.CleanText(reason, 256)}
}

// Is makes errors.Is(err, ErrAuth) true for a refused token.
func (e *DialError) Is(target error) bool {
	return target == ErrAuth && (e.Status == http.StatusUnauthorized || e.Status == http.StatusForbidden)
}

// run keeps a current tunnel up until the listener closes. A drained or replaced tunnel stays open beside the
// new one until the relay closes it, so its in-flight streams finish (make-before-break).
func (l *Listener) run() {
	defer l.closeAll()
	var (
		current *session
		attempt int
		wait    time.Duration
		relayIx int
		renewC  <-chan time.Time // fires when current's token is due for renewal (refresh.go)
	)
	renewal := time.NewTimer(0)
	renewal.Stop() // armed by planRenewal for each current tunnel
	defer renewal.Stop()
	for {
		if current == nil {
			if !l.sleep(wait) {
				return
			}
			relay := l.cfg.Relays[relayIx%len(l.cfg.Relays)]
			s, err := l.dial(relay)
			if err != nil {
				if l.ctx.Err() != nil {
					return
				}
				if l.permanent(err) {
					l.log.Error("tunnel refused for good; the listener stops", "relay", relay, "err", err)
					l.stop(err)
					return
				}
				l.setLastErr(err)
				l.failures.Add(1)
				var re *RefusedError
				if errors.As(err, &re) {
					// Only time (a ban's end) or an upgrade helps: no fast retries, whatever the attempt count.
					wait = l.cfg.RefusedBackoff
					relayIx++
					msg := "relay refused this host: banned by an operator"
					if re.Code == tunnel.CloseAgentTooOld {
						msg = "relay refused this agent: its version is older than the relay's minimum; upgrade the agent"
					}
					l.log.Error(msg, "relay", relay, "code", int(re.Code), "reason", re.Reason,
						"retry_in", wait.Round(time.Millisecond).String())
					continue
				}
				attempt++
				wait = l.backoff(attempt)
				relayIx++
				l.log.Warn("tunnel attempt failed", "relay", relay, "err", err, "retry_in", wait.Round(time.Millisecond).String())
				continue
			}
			attempt = 0
			current = s
			l.setLastErr(nil)
			l.start(s)
			l.log.Info("tunnel up", "relay", relay, "epoch", s.epoch)
			renewC = l.planRenewal(renewal, s)
		}
		var ev sessionEvent
		select {
		case ev = <-l.events:
		case <-renewC:
			s, err := l.renew(current)
			if err != nil {
				if l.ctx.Err() != nil {
					return
				}
				l.failures.Add(1)
				if l.permanent(err) {
					l.log.Error("token renewal refused for good; the listener stops", "err", err)
					l.stop(err)
					return
				}
				// Retry until the token expires; the relay's 4401 then ends this tunnel like any loss.
				attempt++
				retry := l.backoff(attempt)
				if retry >= time.Until(current.tokenExp) {
					l.log.Warn("token renewal failed; no time left to retry before the token expires", "err", err)
					renewC = nil
					continue
				}
				l.log.Warn("token renewal failed; the tunnel keeps its current token", "err", err,
					"retry_in", retry.Round(time.Millisecond).String())
				renewal.Reset(retry)
				continue
			}
			attempt = 0
			l.log.Info("tunnel renewed with a fresh token", "relay", s.relay, "epoch", s.epoch, "old_epoch", current.epoch)
			current = s // the relay retires the old tunnel once its exchanges finish, and closes it with 4409
			l.start(s)
			renewC = l.planRenewal(renewal, s)
			continue
		case <-l.ctx.Done():
			return
		}
		if ev.s != current {
			continue // an older tunnel drained or ended: its replacement is already up
		}
		switch {
		case ev.drain:
			// A draining relay refuses new tunnels: with more than one relay, move to the next one rather than
			// spend an attempt and a backoff on this one.
			l.log.Info("relay asked to move; opening a new tunnel", "delay", ev.delay.String())
			current, wait = nil, ev.delay
			relayIx++
		case ev.code == tunnel.CloseDrain:
			current, wait = nil, 0
			relayIx++
		case ev.code == tunnel.CloseTokenExpired && l.cfg.TokenSource != nil:
			// Reconnect at once: dial gets a fresh token rather than presenting the expired one.
			l.log.Warn("host token expired before it was renewed; reconnecting with a fresh token")
			current, wait = nil, 0
		case ev.code == tunnel.CloseTokenExpired:
			wait = l.cfg.MaxBackoff
			l.log.Error("host token expired and there is no token command to get a fresh one; the relay will refuse it",
				"retry_in", wait.Round(time.Millisecond).String())
			current = nil
		case ev.code == tunnel.CloseKicked:
			attempt = 1
			wait = l.backoff(attempt)
			l.log.Warn("tunnel kicked by an operator", "reason", closeReason(ev), "retry_in", wait.Round(time.Millisecond).String())
			current = nil
		case ev.code == tunnel.CloseReplaced:
			l.log.Warn("tunnel replaced by another agent with the same host id", "retry_in", l.cfg.ReplacedBackoff.String())
			current, wait = nil, l.cfg.ReplacedBackoff
		default:
			attempt = 1
			wait = l.backoff(attempt)
			l.log.Warn("tunnel lost", "code", int(ev.code), "err", ev.err, "retry_in", wait.Round(time.Millisecond).String())
			current = nil
		}
	}
}

// permanent reports whether a failed attempt ends the listener: the relay refused a static token (no TokenSource
// could give a better one), or the TokenSource itself said the failure is for good by wrapping ErrAuth.
func (l *Listener) permanent(err error) bool {
	if !errors.Is(err, ErrAuth) {
		return false
	}
	var de *DialError
	if errors.As(err, &de) {
		return l.cfg.TokenSource == nil
	}
	return true // from the TokenSource
}

// backoff is full-jitter exponential: uniform in [MinBackoff/2, min(MaxBackoff, MinBackoff·2^(attempt-1))].
// The floor of half the minimum keeps a fleet that lost its relay from all dialing in the same instant.
func (l *Listener) backoff(attempt int) time.Duration {
	ceil := l.cfg.MinBackoff << min(attempt-1, 20)
	if ceil > l.cfg.MaxBackoff || ceil <= 0 {
		ceil = l.cfg.MaxBackoff
	}
	floor := l.cfg.MinBackoff / 2
	if ceil <= floor {
		return ceil
	}
	return floor + rand.N(ceil-floor)
}

// sleep waits d or until the listener closes; it reports whether to go on.
func (l *Listener) sleep(d time.Duration) bool {
	if d <= 0 {
		return l.ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-l.ctx.Done():
		return false
	}
}

// dial makes one tunnel attempt against relay, with a token got for it.
func (l *Listener) dial(relay string) (*session, error) {
	ctx, cancel := context.WithTimeout(l.ctx, l.cfg.ConnectTimeout)
	defer cancel()
	token, err := l.token(ctx)
	if err != nil {
		return nil, err
	}
	return l.dialWith(relay, token)
}

// dialWith makes one tunnel attempt against relay with token.
func (l *Listener) dialWith(relay, token string) (*session, error) {
	ctx, cancel := context.WithTimeout(l.ctx, l.cfg.ConnectTimeout)
	defer cancel()
	tokenAt := time.Now()
	tokenExp, _ := tokenExpiry(token)
	h := http.Header{}
	h.Set("Authorization", "Bearer "+token)
	h.Set(tunnel.HeaderHostID, l.cfg.HostID)
	h.Set(tunnel.HeaderHostOS, runtime.GOOS)
	h.Set(tunnel.HeaderAgentVersion, l.cfg.Version)
	// Metadata travels as visible text only (the relay cleans it the same way): a control character in a name
	// would make the handshake itself unsendable.
	if name := tunnel.CleanText(l.cfg.Name, 256); name != "" {
		h.Set(tunnel.HeaderHostName, name)
	}
	for k, v := range l.cfg.Labels {
		h.Add(tunnel.HeaderHostLabel, tunnel.CleanText(k, 128)+"="+tunnel.CleanText(v, 1024))
	}
	c, err := l.connect(ctx, relay, h)
	if err != nil {
		return nil, err
	}
	rec := &readErrConn{Conn: c.nc}
	mux, err := yamux.Server(rec, tunnel.Options{PingInterval: l.cfg.PingInterval}.YamuxConfig())
	if err != nil {
		c.closeWith(tunnel.CloseInternal, "multiplexer setup failed")
		_ = c.nc.Close()
		return nil, err
	}
	fail := func(code websocket.StatusCode, msg string) {
		c.closeWith(code, msg)
		_ = mux.Close()
	}
	ctrl, err := mux.OpenStream()
	if err != nil {
		// A relay that refuses the host closes at once: the close may end the session while the stream opens.
		if re := refusal(relay, rec.err(), tunnel.Control{}, false); re != nil {
			_ = mux.Close()
			return nil, re
		}
		fail(tunnel.CloseInternal, "control stream failed")
		return nil, fmt.Errorf("open control stream: %w", err)
	}
	// Requests may arrive only once the relay has registered the tunnel, which it says with "ready".
	sc := bufio.NewScanner(ctrl)
	sc.Buffer(make([]byte, 512), tunnel.MaxControlLine)
	_ = ctrl.SetReadDeadline(time.Now().Add(l.cfg.ConnectTimeout))
	if !sc.Scan() {
		_ = mux.Close()
		err := errOr(sc.Err(), rec.err())
		if re := refusal(relay, rec.err(), tunnel.Control{}, false); re != nil {
			return nil, re
		}
		return nil, fmt.Errorf("wait for the relay's ready message: %w", err)
	}
	_ = ctrl.SetReadDeadline(time.Time{})
	m, err := tunnel.ParseControl(sc.Bytes())
	if re := refusal(relay, nil, m, err == nil); re != nil {
		_ = mux.Close()
		return nil, re
	}
	if err != nil || m.Type != tunnel.ControlReady {
		fail(tunnel.CloseProtocol, "expected a ready message")
		return nil, fmt.Errorf("relay sent %q before ready", sc.Bytes())
	}
	epoch := m.Epoch
	if epoch == 0 {
		epoch = c.epoch // relays before the epoch moved to "ready" sent it with the 101
	}
	return &session{conn: c, mux: mux, ctrl: ctrl, ctrlR: sc, ctrlDone: make(chan struct{}), rec: rec, epoch: epoch,
		relay: relay, since: time.Now(), tokenAt: tokenAt, tokenExp: tokenExp}, nil
}

// dialError explains a failed upgrade, reading the relay's JSON error when there is one.
func dialError(resp *http.Response, err error) error {
	if resp == nil || resp.StatusCode == 0 {
		return &DialError{Err: err}
	}
	if err == nil {
		err = errors.New(resp.Status)
	}
	de := &DialError{Status: resp.StatusCode, Err: err}
	if resp.Body != nil {
		var body struct {
			Error struct{ Code, Message string } `json:"error"`
		}
		if json.NewDecoder(io.LimitReader(resp.Body, 1024)).Decode(&body) == nil {
			de.Code, de.Message = body.Error.Code, body.Error.Message
		}
	}
	if de.Message == "" {
		de.Message = http.StatusText(resp.StatusCode)
	}
	return de
}

// start registers s and runs its goroutines: one hands accepted streams to Accept, one reads control messages, one
// reports the end of the session.
func (l *Listener) start(s *session) {
	l.mu.Lock()
	if len(l.sessions) == 0 {
		close(l.up)
	}
	l.sessions[s] = struct{}{}
	l.mu.Unlock()
	l.connects.Add(1)

	l.wg.Go(func() { l.acceptLoop(s) })
	if l.cfg.MeasureRTT {
		l.wg.Go(func() { l.pingLoop(s) })
	}
	l.wg.Go(func() { l.controlLoop(s) })
	l.wg.Go(func() { l.watch(s) })
}

// acceptLoop hands every stream the relay opens to Accept.
func (l *Listener) acceptLoop(s *session) {
	for {
		c, err := s.mux.Accept()
		if err != nil {
			return
		}
		c = &eofCloseConn{Conn: c}
		select {
		case l.conns <- c:
		case <-l.ctx.Done():
			_ = c.Close()
			return
		case <-s.mux.CloseChan():
			_ = c.Close()
			return
		}
	}
}

// pingLoop measures the round trip to the relay on s at once and then every PingInterval, until s ends. The
// newest tunnel's pings win: an older one's are not recorded once a newer one is up.
func (l *Listener) pingLoop(s *session) {
	every := l.cfg.PingInterval
	if every <= 0 {
		every = tunnel.DefaultPingInterval
	}
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		if rtt, err := s.mux.Ping(); err == nil && l.newest(s) {
			l.rtt.Store(int64(max(rtt, time.Nanosecond)))
		}
		select {
		case <-tick.C:
		case <-s.mux.CloseChan():
			return
		case <-l.ctx.Done():
			return
		}
	}
}

// newest reports whether s is the most recently opened tunnel that is up.
func (l *Listener) newest(s *session) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, ok := l.sessions[s]; !ok {
		return false
	}
	for o := range l.sessions {
		if o.since.After(s.since) {
			return false
		}
	}
	return true
}

// controlLoop reads the relay's control messages.
func (l *Listener) controlLoop(s *session) {
	defer close(s.ctrlDone)
	sc := s.ctrlR
	for sc.Scan() {
		c, err := tunnel.ParseControl(sc.Bytes())
		if err != nil {
			l.log.Warn("ignoring bad control message", "err", err)
			continue
		}
		switch c.Type {
		case tunnel.ControlDrain:
			delay := min(max(time.Duration(c.DelayMillis)*time.Millisecond, 0), time.Minute)
			l.notify(sessionEvent{s: s, drain: true, delay: delay})
		case tunnel.ControlClose:
			// Raw transport: the relay's close code, just before it closes. Close our side at once.
			reason := tunnel.CleanText(c.Reason, 256)
			s.closeMsg.Store(&reason)
			s.closeCode.Store(int32(c.Code))
			_ = s.mux.Close()
		}
	}
}

// watch waits for the session to end, unregisters it and reports why it ended.
func (l *Listener) watch(s *session) {
	select {
	case <-s.mux.CloseChan():
	case <-l.ctx.Done():
		s.conn.closeWith(tunnel.CloseNormal, "agent shutting down")
		_ = s.mux.Close()
	}
	_ = s.mux.Close()
	<-s.ctrlDone // a "close" control message, if any, has been read
	err := s.rec.err()
	code := websocket.CloseStatus(err)
	if c := s.closeCode.Load(); c != 0 {
		code = websocket.StatusCode(c)
	}

	l.mu.Lock()
	delete(l.sessions, s)
	if len(l.sessions) == 0 {
		l.up = make(chan struct{})
	}
	l.mu.Unlock()
	l.notify(sessionEvent{s: s, code: code, err: err})
}

func (l *Listener) notify(ev sessionEvent) {
	select {
	case l.events <- ev:
	case <-l.ctx.Done():
	}
}

// closeAll closes every session; their goroutines finish on their own.
func (l *Listener) closeAll() {
	l.mu.Lock()
	ss := make([]*session, 0, len(l.sessions))
	for s := range l.sessions {
		ss = append(ss, s)
	}
	l.mu.Unlock()
	var wg sync.WaitGroup
	for _, s := range ss {
		wg.Go(func() {
			s.conn.closeWith(tunnel.CloseNormal, "agent shutting down")
			_ = s.mux.Close()
		})
	}
	wg.Wait()
}

// eofCloseConn closes a stream fully once the relay has closed its side. The relay ends its side only when it
// gives up on an exchange (a plain HTTP exchange never half-closes), and a handler blocked writing to a stream the
// relay no longer reads would otherwise wait for yamux's stream-close timeout.
type eofCloseConn struct {
	net.Conn
}

func (c *eofCloseConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if errors.Is(err, io.EOF) {
		_ = c.Conn.Close()
	}
	return n, err
}

// errOr returns err, or fallback when err is nil.
func errOr(err, fallback error) error {
	if err != nil {
		return err
	}
	return fallback
}

// readErrConn remembers the first read error of the WebSocket, which carries the relay's close code.
type readErrConn struct {
	net.Conn
	mu    sync.Mutex
	first error
}

func (c *readErrConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if err != nil {
		c.mu.Lock()
		if c.first == nil {
			c.first = err
		}
		c.mu.Unlock()
	}
	return n, err
}

func (c *readErrConn) err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.first == nil {
		return errors.New("session closed")
	}
	return c.first
}

// closeReason returns the reason the relay gave with its close code, if any.
func closeReason(ev sessionEvent) string {
	var ce websocket.CloseError
	if errors.As(ev.err, &ce) {
		return ce.Reason
	}
	if m := ev.s.closeMsg.Load(); m != nil {
		return *m
	}
	return ""
}
