package relay

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
	"github.com/hashicorp/yamux"

	"github.com/switchboard-relay/switchboard/internal/auth"
	"github.com/switchboard-relay/switchboard/internal/directory"
	"github.com/switchboard-relay/switchboard/internal/tunnel"
)

// controlAcceptTimeout bounds how long a new tunnel may take to open its control stream.
const controlAcceptTimeout = 10 * time.Second

// tunnelConn is one registered host tunnel: a WebSocket carrying a yamux session.
type tunnelConn struct {
	// Immutable after register (epoch, connectedAt and log are set by claimed, before).
	hostID        string
	epoch         uint64
	closeConn     closeFunc
	sess          *yamux.Session
	ctrl          net.Conn
	meta          directory.Metadata
	connectedAt   time.Time
	log           *slog.Logger
	prior         *directory.Prior // the host before this tunnel's claim, for its presence event; nil if unknown
	expiresAt     time.Time        // the host token's "exp"; zero if it has none (auth none). See closeExpired
	token         auth.Claims      // the host token's claims, for revocation (revoke.go)
	remote        string           // the agent's address
	transportName string           // "websocket" or "raw"
	counted       *countingConn    // the transport under yamux, counting bytes both ways
	rtt           atomic.Int64     // the last answered ping's round trip, in nanoseconds; 0 before the first

	phase uint32 // the ping loop's slice of this tunnel (liveness.go); set by register

	active   atomic.Int64 // exchanges in flight
	retiring atomic.Bool  // no new exchanges: the tunnel closes once active reaches zero (see admit)
	pinging  atomic.Bool  // a liveness ping is outstanding
	streams  streamPool   // idle streams kept for the next exchange (exchange.go)
	expiring atomic.Bool  // closeExpired has begun

	callersMu sync.Mutex
	callers   map[string]int // exchanges in flight per caller (see callerKey); guarded by callersMu

	closeOnce   sync.Once
	closeReason string        // written once in close, read after done
	done        chan struct{} // closed by close after the session is shut down

	ctrlMu sync.Mutex // serialises control writes
}

// handleTunnel accepts a host's tunnel: checks limits and the host token before the upgrade, sets the tunnel up and
// hands it to serveTunnel on a goroutine of the Server's own.
func (s *Server) handleTunnel(w http.ResponseWriter, r *http.Request) {
	reject := func(status int, code, msg, outcome string) {
		s.metrics.registrations.WithLabelValues(outcome).Inc()
		writeError(w, status, code, msg)
	}
	// The handler is tracked like the tunnel it sets up, so Close waits for a setup in progress.
	s.mu.Lock()
	if s.draining.Load() || s.closed.Load() {
		s.mu.Unlock()
		reject(http.StatusServiceUnavailable, codeDraining, "relay is draining; connect to another replica or retry", regDraining)
		return
	}
	s.wg.Add(1) // under mu, so Close cannot be waiting already
	s.mu.Unlock()
	defer s.wg.Done()
	// Failed attempts (junk ids, bad tokens) are charged to their own bucket per IP, and only once they failed:
	// junk from an address refuses junk, never an agent with a valid token behind the same address.
	remote := clientIP(r)
	failed := func(status int, code, msg, outcome string) {
		if !s.authFails.allow(remote, time.Now()) {
			s.metrics.upgradesLimited.WithLabelValues(limitAuthFailed).Inc()
			reject(http.StatusTooManyRequests, codeRateLimited, "too many failed tunnel upgrades from this address", regRateLimited)
			return
		}
		reject(status, code, msg, outcome)
	}
	id := r.Header.Get(tunnel.HeaderHostID)
	if !validHostID(id) {
		failed(http.StatusBadRequest, codeInvalidHostID, "header "+tunnel.HeaderHostID+" must be 1-128 printable bytes without '/'", regBadRequest)
		return
	}
	if !s.reserveSlot(id) {
		reject(http.StatusServiceUnavailable, codeTooManyTunnels, "relay is at its tunnel limit", regFull)
		return
	}
	handedOff := false // to serveTunnel, whose register gives the slot back
	defer func() {
		if !handedOff {
			s.releaseSlot()
		}
	}()
	token, _ := auth.FromRequest(r)
	claims, err := s.cfg.Verifier.Verify(r.Context(), token)
	if err != nil {
		failed(http.StatusUnauthorized, codeUnauthorized, "host token missing, invalid or expired", regUnauthorized)
		return
	}
	if expiredAt(claims.ExpiresAt, time.Now()) { // within the verifier's leeway, but the tunnel would close at once
		reject(http.StatusUnauthorized, codeUnauthorized, "host token missing, invalid or expired", regUnauthorized)
		return
	}
	if !claims.MayRegister(id) {
		if s.authFails.allow(remote, time.Now()) { // logged only while the address is not being limited
			s.log.Warn("tunnel refused: token is for another host", "host_id", id, "token_subject", claims.Subject,
				"remote", remote)
			reject(http.StatusForbidden, codeForbidden, "this token may not register that host id", regForbidden)
			return
		}
		s.metrics.upgradesLimited.WithLabelValues(limitAuthFailed).Inc()
		reject(http.StatusTooManyRequests, codeRateLimited, "too many failed tunnel upgrades from this address", regRateLimited)
		return
	}
	if !s.limiter.allow(remote, time.Now()) {
		s.metrics.upgradesLimited.WithLabelValues(limitUpgrades).Inc()
		reject(http.StatusTooManyRequests, codeRateLimited, "too many tunnel upgrades from this address", regRateLimited)
		return
	}
	if !websocketRequested(r) && !(headerHasToken(r.Header, "Connection", "upgrade") && headerHasToken(r.Header, "Upgrade", tunnel.RawUpgrade)) {
		reject(http.StatusBadRequest, codeNotWebSocket, "tunnels are WebSocket upgrades (or Upgrade: "+tunnel.RawUpgrade+")", regBadRequest)
		return
	}
	meta := metadataFrom(r.Header)
	transportName := "websocket"
	if headerHasToken(r.Header, "Upgrade", tunnel.RawUpgrade) {
		transportName = "raw"
	}

	// The handshake comes before the claim: an upgrade that never becomes a working tunnel (no control stream, a
	// broken or hostile agent) must not touch the directory entry, presence or metadata of a live tunnel of the
	// same host, here or on another replica. So the 101 cannot carry the epoch; "ready" does.
	nc, closeConn, ok := s.upgradeTunnel(w, r)
	if !ok {
		s.metrics.registrations.WithLabelValues(regBadRequest).Inc()
		return // the upgrade failed and answered (or the client is gone)
	}
	counted := &countingConn{Conn: nc}
	t, err := s.startTunnel(id, counted, closeConn, meta)
	if err != nil {
		s.metrics.registrations.WithLabelValues(regFailed).Inc()
		s.log.Warn("tunnel setup failed", "host_id", id, "remote", remote, "err", err)
		return
	}
	t.counted, t.remote, t.transportName, t.token = counted, remote, transportName, claims
	// Banned hosts and too old agents are refused on the upgraded tunnel, before the claim, so that the agent
	// reads a close code (an HTTP refusal would read as a refused token, which stops an agent for good).
	cctx, cancel := context.WithTimeout(s.ctx, controlAcceptTimeout)
	code, msg, ok := s.checkRegistration(cctx, id, meta)
	cancel()
	if !ok {
		s.metrics.registrations.WithLabelValues(regRefused).Inc()
		s.log.Info("tunnel refused", "host_id", id, "remote", remote, "code", int(code), "reason", msg)
		t.close(code, msg, "refused")
		return
	}
	// The request's context is the hijacked connection's; the claim is bounded on its own. A directory known to be
	// down is not asked (dirHealth.skip).
	var (
		entry directory.Entry
		prev  string // another replica to be told it lost the host
		prior *directory.Prior
	)
	if err = s.health.skip(); err == nil {
		cctx, cancel = context.WithTimeout(s.ctx, controlAcceptTimeout)
		entry, prev, prior, err = s.claim(cctx, id, meta)
		cancel()
	}
	if err != nil {
		entry, prev, prior = s.claimLocally(id, meta), "", nil
		s.log.Warn("directory claim failed; tunnel accepted here and written behind", "host_id", id,
			"epoch", entry.Epoch, "err", err)
	}
	t.claimed(entry, s.log)
	if prev != "" {
		s.spawn(func() { s.notifyEvict(prev, id, entry.Epoch) }) // not once Close began: the notice is moot
	}
	// The tunnel gets a goroutine of the Server's own and this handler returns: a hijacked connection needs no
	// handler, and the handler's stack and the HTTP connection's buffers would otherwise live as long as the tunnel.
	handedOff = true
	t.prior = prior
	t.expiresAt = claims.ExpiresAt
	if !s.spawn(func() { s.serveTunnel(t, remote) }) {
		s.serveTunnel(t, remote) // Close has begun: register refuses t, which closes and is released at once
	}
}

// serveTunnel registers t, tells the agent it is routable and hands it to watchTunnel, which ends it when its
// session ends.
func (s *Server) serveTunnel(t *tunnelConn, remote string) {
	old, current := s.register(t)
	if current && s.evictions.Supersedes(t.hostID, t.epoch) {
		// Another replica claimed the host with a newer epoch and said so before this tunnel registered.
		if old != nil {
			closeOld := func() { old.close(tunnel.CloseReplaced, "replaced by a newer tunnel", "replaced") }
			if !s.spawn(closeOld) {
				closeOld() // Close has begun, and its snapshot has t, not old
			}
		}
		s.metrics.registrations.WithLabelValues(regReplaced).Inc()
		t.close(tunnel.CloseReplaced, "replaced by a newer tunnel", "replaced")
		s.watchTunnel(t)
		return
	}
	if current && s.kickedLately() {
		// A kick with a ban may have come between this tunnel's ban check (before the claim) and its registration,
		// and found nothing to close: the ban is read again now that the tunnel is where a kick would find it.
		cctx, cancel := context.WithTimeout(s.ctx, controlAcceptTimeout)
		code, msg, ok := s.checkRegistration(cctx, t.hostID, t.meta)
		cancel()
		if !ok {
			s.metrics.registrations.WithLabelValues(regRefused).Inc()
			t.log.Info("tunnel refused", "code", int(code), "reason", msg)
			t.close(code, msg, "refused")
			s.watchTunnel(t)
			return
		}
	}
	switch {
	case !current && s.closed.Load():
		t.close(tunnel.CloseGoingAway, "relay shutting down", "shutdown")
	case !current && s.drainOver():
		t.close(tunnel.CloseDrain, "relay draining", "drain")
	case !current:
		// A newer registration of the same host won the race while this one was being set up.
		s.metrics.registrations.WithLabelValues(regReplaced).Inc()
		t.close(tunnel.CloseReplaced, "replaced by a newer tunnel", "replaced")
	case old != nil:
		s.metrics.registrations.WithLabelValues(regReplaced).Inc()
		old.log.Info("tunnel replaced by a newer registration", "new_epoch", t.epoch)
		// Closing waits for the agent's answer; the new tunnel must not wait for that.
		if !s.spawn(func() { s.retireReplaced(old) }) {
			s.retireReplaced(old) // Close has begun (so it does not wait), and its snapshot has t, not old
		}
	default:
		s.metrics.registrations.WithLabelValues(regOK).Inc()
	}
	if current {
		t.sendControl(tunnel.Control{Type: tunnel.ControlReady, Epoch: t.epoch})
		t.log.Info("tunnel up", "os", t.meta.OS, "agent_version", t.meta.AgentVersion, "remote", remote)
	}
	s.watchTunnel(t)
}

// upgradeTunnel completes the upgrade on the transport the agent asked for: raw (an HTTP/1.1 upgrade to
// tunnel.RawUpgrade, yamux directly on the connection) or WebSocket. It returns the byte stream for yamux and how
// to close it with a close code.
func (s *Server) upgradeTunnel(w http.ResponseWriter, r *http.Request) (net.Conn, closeFunc, bool) {
	if headerHasToken(r.Header, "Upgrade", tunnel.RawUpgrade) {
		conn, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			writeError(w, http.StatusInternalServerError, codeBadRequest, "this listener cannot upgrade connections")
			return nil, nil, false
		}
		_ = conn.SetDeadline(time.Time{})
		_, err = fmt.Fprintf(brw.Writer, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: %s\r\n\r\n",
			tunnel.RawUpgrade)
		if err == nil {
			err = brw.Writer.Flush()
		}
		if err != nil {
			_ = conn.Close()
			return nil, nil, false
		}
		nc := tunnel.Coalesce(&tunnel.BufferedConn{Conn: conn, R: brw.Reader})
		return nc, rawClose(conn), true
	}
	ws, err := websocket.Accept(w, r, &websocket.AcceptOptions{
		Subprotocols:    []string{tunnel.Subprotocol},
		CompressionMode: websocket.CompressionDisabled,
	})
	if err != nil {
		return nil, nil, false // Accept wrote the error response
	}
	if ws.Subprotocol() != tunnel.Subprotocol {
		_ = ws.Close(websocket.StatusPolicyViolation, "subprotocol "+tunnel.Subprotocol+" required")
		return nil, nil, false
	}
	ws.SetReadLimit(-1) // NetConn streams each message; yamux bounds what is buffered.
	return tunnel.NetConn(s.ctx, ws), func(_ *tunnelConn, code websocket.StatusCode, msg string) {
		// The close handshake waits for the agent's answer, bounded by coder/websocket (5 s).
		_ = ws.Close(code, msg)
	}, true
}

// closeFunc ends a tunnel's transport with a close code, before its session is closed.
type closeFunc func(t *tunnelConn, code websocket.StatusCode, msg string)

// rawClose closes a raw tunnel: the code goes as a control message (there are no close frames), then the relay
// half-closes and gives the agent a moment to close its side, so the message is not lost to a reset.
func rawClose(conn net.Conn) closeFunc {
	return func(t *tunnelConn, code websocket.StatusCode, msg string) {
		t.sendControl(tunnel.Control{Type: tunnel.ControlClose, Code: int(code), Reason: msg})
		if tc, ok := conn.(interface{ CloseWrite() error }); ok {
			_ = tc.CloseWrite()
		}
		timer := time.NewTimer(time.Second)
		defer timer.Stop()
		select {
		case <-t.sess.CloseChan():
		case <-timer.C:
		}
	}
}

// startTunnel runs the multiplexer over nc and accepts the agent's control stream. The tunnel has no epoch until
// claimed.
func (s *Server) startTunnel(id string, nc net.Conn, closeConn closeFunc, meta directory.Metadata) (*tunnelConn, error) {
	ycfg := tunnel.Options{PingInterval: s.cfg.PingInterval, AcceptBacklog: 4, StreamWindow: s.cfg.StreamWindow}.YamuxConfig()
	ycfg.EnableKeepAlive = false // Server.pingLoop pings every tunnel from one goroutine
	sess, err := yamux.Client(nc, ycfg)
	if err != nil {
		_ = nc.Close()
		return nil, err
	}
	type accepted struct {
		c   net.Conn
		err error
	}
	ch := make(chan accepted, 1)
	go func() { c, err := sess.Accept(); ch <- accepted{c, err} }()
	timer := time.NewTimer(controlAcceptTimeout)
	defer timer.Stop()
	var ctrl net.Conn
	received := false
	select {
	case a := <-ch:
		received, err, ctrl = true, a.err, a.c
	case <-timer.C:
		err = errors.New("agent did not open its control stream in time")
	case <-s.ctx.Done():
		err = s.ctx.Err()
	}
	if err != nil {
		_ = sess.Close() // unblocks the Accept goroutine and closes nc
		if !received {
			<-ch
		}
		return nil, err
	}
	t := &tunnelConn{
		hostID:      id,
		closeConn:   closeConn,
		sess:        sess,
		ctrl:        ctrl,
		meta:        meta,
		connectedAt: time.Now(),
		log:         s.log.With("host_id", id),
		done:        make(chan struct{}),
	}
	return t, nil
}

// claimed gives t the epoch and connection time of its directory entry, before it is registered.
func (t *tunnelConn) claimed(e directory.Entry, log *slog.Logger) {
	t.epoch = e.Epoch
	t.connectedAt = e.ConnectedAt
	t.log = log.With("host_id", t.hostID, "epoch", e.Epoch)
}

// register installs t as its host's tunnel and returns the tunnel it replaced, if any. It gives back the slot
// handleTunnel reserved for t. A tunnel with an older
// epoch than the one registered never replaces it: then current is false and t is stale.
func (s *Server) register(t *tunnelConn) (old *tunnelConn, current bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.settingUp-- // the slot reserved by handleTunnel becomes the registration (or is given up)
	if s.closed.Load() || s.drained {
		// Close has taken (or is taking) its snapshot of tunnels to close, or the drain has ended: t would be
		// missed.
		return nil, false
	}
	old = s.tunnels[t.hostID]
	if old != nil && old.epoch > t.epoch {
		return nil, false
	}
	s.registered++
	t.phase = s.registered // round-robin over the ping loop's slices
	s.tunnels[t.hostID] = t
	s.metrics.tunnels.Set(float64(len(s.tunnels)))
	return old, true
}

// watchTunnel arranges for endTunnel to run once t's session has ended, and returns: no goroutine waits for an
// idle tunnel's end. yamux closes its connection, t.counted, exactly once, whatever ends the session (t.close, the
// agent's close, a broken connection, a protocol error); that close starts endTunnel (see countingConn.Close), or
// this call does when the session ended already. The Server's WaitGroup counts the end from here, so Close waits for
// every tunnel's endTunnel, as it waited for the goroutine that used to block until the session ended.
func (s *Server) watchTunnel(t *tunnelConn) {
	// Announced here, once the tunnel is registered and before anything can release it, so that its event
	// precedes its offline in the log.
	if t.prior != nil {
		s.announceClaim(directory.Entry{HostID: t.hostID, Replica: s.cfg.Replica, Epoch: t.epoch,
			ConnectedAt: t.connectedAt, Metadata: t.meta}, *t.prior)
	}
	s.wg.Add(1) // this goroutine is counted (serveTunnel runs under spawn or within Close's own wait)
	t.counted.onEnd(func() {
		defer s.wg.Done()
		s.endTunnel(t)
	})
}

// endTunnel closes t (a no-op if the relay closed it) and unregisters it once its session has ended: only t itself
// is removed (fencing by identity and epoch), so a late end of an old tunnel never removes its successor.
func (s *Server) endTunnel(t *tunnelConn) {
	t.close(tunnel.CloseInternal, "session ended", "session_ended")
	<-t.done

	s.mu.Lock()
	if s.tunnels[t.hostID] == t {
		delete(s.tunnels, t.hostID)
	}
	s.metrics.tunnels.Set(float64(len(s.tunnels)))
	s.mu.Unlock()
	s.releaseEntry(t.hostID, t.epoch)
	s.metrics.tunnelsClosed.WithLabelValues(t.closeReason).Inc()
	t.log.Info("tunnel down", "reason", t.closeReason, "connected_for", time.Since(t.connectedAt).Round(time.Millisecond).String())
}

// checkControl closes t if the agent wrote on the control stream or closed it. The control stream is write-only
// for the agent's peer, and nothing reads it while the tunnel is idle: the ping loop calls this once per interval
// with each ping, and a read with a past deadline returns what the agent sent without waiting.
func (t *tunnelConn) checkControl() (closed bool) {
	var b [1]byte
	_ = t.ctrl.SetReadDeadline(time.Now())
	n, err := t.ctrl.Read(b[:])
	switch {
	case n > 0:
		t.close(tunnel.CloseProtocol, "agent wrote on the control stream", "protocol")
	case errors.Is(err, io.EOF):
		t.close(tunnel.CloseInternal, "session ended", "session_ended") // as when the session ends
	default:
		return false
	}
	return true
}

// releaseEntry removes the directory entry of a tunnel that ended, if it is still that tunnel's, and then owes the
// host's offline event after the flap window.
func (s *Server) releaseEntry(hostID string, epoch uint64) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	at := time.Now()
	released, err := s.dir.Release(ctx, hostID, epoch)
	if err != nil {
		s.log.Warn("directory release failed; retrying in the background", "host_id", hostID, "epoch", epoch, "err", err)
		s.behindMu.Lock()
		if s.unreleased[hostID].epoch < epoch {
			s.unreleased[hostID] = release{epoch: epoch, at: at}
		}
		s.behindMu.Unlock()
		return
	}
	if released {
		s.scheduleOffline(hostID, epoch, at)
	}
}

// admit counts a new exchange on t, unless t is retiring. The count goes up before the mark is read and retire
// sets the mark before it reads the count, so either retire waits for this exchange or the exchange is refused:
// an exchange is never admitted onto a tunnel that is about to close under it.
// It returns the number of exchanges in flight on t, this one included.
func (t *tunnelConn) admit() (int64, bool) {
	n := t.active.Add(1)
	if t.retiring.Load() {
		t.active.Add(-1)
		return 0, false
	}
	return n, true
}

// retire stops admitting exchanges on t and waits until those admitted have finished, or ctx ends.
func (t *tunnelConn) retire(ctx context.Context) error {
	t.retiring.Store(true)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for t.active.Load() > 0 {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.done:
			return nil
		case <-tick.C:
		}
	}
	return nil
}

// sendDrain tells the agent to open a new tunnel after delay and let this one finish.
func (t *tunnelConn) sendDrain(delay time.Duration) {
	t.sendControl(tunnel.Control{Type: tunnel.ControlDrain, DelayMillis: delay.Milliseconds()})
}

// sendControl writes one control message; a tunnel that cannot take it within 5 s is failing anyway.
func (t *tunnelConn) sendControl(c tunnel.Control) {
	_ = t.sendControlCtx(context.Background(), c)
}

// controlWriteTimeout bounds a control write: a tunnel that cannot take a control message within it is failing.
const controlWriteTimeout = 5 * time.Second

// sendControlCtx writes one control message, giving up after controlWriteTimeout or when ctx ends.
func (t *tunnelConn) sendControlCtx(ctx context.Context, c tunnel.Control) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	t.ctrlMu.Lock()
	defer t.ctrlMu.Unlock()
	deadline := time.Now().Add(controlWriteTimeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	_ = t.ctrl.SetWriteDeadline(deadline)
	// A write blocked on a stalled tunnel wakes when ctx ends (yamux rereads the deadline when it changes).
	stop := context.AfterFunc(ctx, func() { _ = t.ctrl.SetWriteDeadline(time.Now()) })
	err := tunnel.WriteControl(t.ctrl, c)
	stop()
	if err != nil {
		t.log.Debug("control message not delivered", "type", c.Type, "err", err)
	}
	return err
}

// close ends the tunnel with a WebSocket close code. It is idempotent; reason is a metrics label.
func (t *tunnelConn) close(code websocket.StatusCode, msg, reason string) {
	t.closeOnce.Do(func() {
		t.closeReason = reason
		t.streams.close()
		// Send the code before the session goes, so the agent sees it rather than a bare EOF.
		t.closeConn(t, code, msg)
		_ = t.sess.Close()
		close(t.done)
	})
}

// abort ends a tunnel whose peer is gone: no close code, no waiting for an answer that will not come.
func (t *tunnelConn) abort(reason string) {
	t.closeOnce.Do(func() {
		t.closeReason = reason
		t.streams.close()
		_ = t.sess.Close()
		close(t.done)
	})
}

// metadataFrom reads host metadata from the handshake headers, bounded in size.
func metadataFrom(h http.Header) directory.Metadata {
	m := directory.Metadata{ // shown to clients and dashboards: visible text only (tunnel.CleanText)
		Name:         tunnel.CleanText(h.Get(tunnel.HeaderHostName), 256),
		OS:           tunnel.CleanText(h.Get(tunnel.HeaderHostOS), 64),
		AgentVersion: tunnel.CleanText(h.Get(tunnel.HeaderAgentVersion), 64),
	}
	for i, kv := range h.Values(tunnel.HeaderHostLabel) {
		if i >= 64 {
			break
		}
		k, v, ok := strings.Cut(kv, "=")
		if !ok || len(k) > tunnel.MaxLabelKeyLen || len(v) > tunnel.MaxLabelValueLen {
			continue
		}
		if k = tunnel.CleanText(k, tunnel.MaxLabelKeyLen); k == "" {
			continue
		}
		if m.Labels == nil {
			m.Labels = make(map[string]string)
		}
		m.Labels[k] = tunnel.CleanText(v, tunnel.MaxLabelValueLen)
	}
	return m
}

// websocketRequested reports whether r asks for a WebSocket upgrade.
func websocketRequested(r *http.Request) bool {
	return headerHasToken(r.Header, "Connection", "upgrade") && headerHasToken(r.Header, "Upgrade", "websocket")
}

// headerHasToken reports whether a comma-separated header contains token, case-insensitively.
func headerHasToken(h http.Header, name, token string) bool {
	for _, v := range h.Values(name) {
		for _, part := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(part), token) {
				return true
			}
		}
	}
	return false
}

// countingConn counts the bytes of a tunnel's transport, for the admin API's tunnel list, and starts the tunnel's
// end when yamux closes it (see Server.watchTunnel).
type countingConn struct {
	net.Conn
	in, out atomic.Int64

	end    func()       // written by onEnd before it counts in ends
	closed atomic.Bool  // Close was called
	ends   atomic.Int32 // 1 for Close, 1 for onEnd: the second of them starts end
}

// onEnd makes end run on a goroutine of its own once the connection is closed (at once if it is already).
func (c *countingConn) onEnd(end func()) {
	c.end = end
	if c.ends.Add(1) == 2 {
		go c.end()
	}
}

// Close closes the connection and, if onEnd was called, starts its end. yamux calls it from Session.Close, under
// the session's shutdown lock: the end must not run on this goroutine, since it closes the session too.
func (c *countingConn) Close() error {
	err := c.Conn.Close()
	if c.closed.CompareAndSwap(false, true) && c.ends.Add(1) == 2 {
		go c.end()
	}
	return err
}

func (c *countingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.in.Add(int64(n))
	return n, err
}

func (c *countingConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.out.Add(int64(n))
	return n, err
}

// kickedLately reports whether a kick reached this replica recently enough that a registration under way then may
// have passed its ban check before the ban was written (the check and the registration are at most two
// controlAcceptTimeouts apart: the check, then the claim).
func (s *Server) kickedLately() bool {
	at := s.lastKick.Load()
	return at != 0 && time.Since(time.Unix(0, at)) < 2*controlAcceptTimeout
}
