package relay

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"time"

	"github.com/hashicorp/yamux"

	"github.com/switchboard-relay/switchboard/internal/peering"
	"github.com/switchboard-relay/switchboard/internal/reply"
	"github.com/switchboard-relay/switchboard/internal/tunnel"
)

// hostsPrefix starts every proxied path: /hosts/{id}/{path...}.
const hostsPrefix = "/hosts/"

// HeaderSubject carries the verified token subject to the host. A client-sent copy is always removed.
const HeaderSubject = "X-Switchboard-Subject"

// splitHostPath splits an escaped request path /hosts/{id}/{rest} into the unescaped host id and the escaped path
// to forward ("/" when there is none).
func splitHostPath(escaped string) (id, rest string, err error) {
	p := strings.TrimPrefix(escaped, hostsPrefix)
	rawID, rest := p, "/"
	if i := strings.IndexByte(p, '/'); i >= 0 {
		rawID, rest = p[:i], p[i:] // a slice of the input: no allocation on the hot path
	}
	id, err = url.PathUnescape(rawID)
	return id, rest, err
}

// handleProxy carries one client exchange to tg's host: authenticate, find the tunnel, check limits, then proxy.
// valid is false when the request names no valid host id.
func (s *Server) handleProxy(w http.ResponseWriter, r *http.Request, tg target, valid bool) {
	if s.cfg.AccessLog != nil {
		var e *accessEntry
		w, r, e = s.startAccess(w, r, tg)
		defer s.endAccess(e)
		s.handleExchange(w, r, tg, valid, e)
		return
	}
	s.handleExchange(w, r, tg, valid, nil)
}

// handleExchange is handleProxy after the access log entry (e, nil if the access log is off) began.
func (s *Server) handleExchange(w http.ResponseWriter, r *http.Request, tg target, valid bool, e *accessEntry) {
	if !valid {
		if tg.prefix == "" && s.isHostModeRequest(r) {
			s.countExchange("http", "not_found", http.StatusNotFound)
			writeError(w, http.StatusNotFound, codeNotFound, "no host has this name (docs/browsers.md: host names)")
			return
		}
		s.countExchange("http", "bad_request", http.StatusBadRequest)
		writeError(w, http.StatusBadRequest, codeInvalidHostID, "host id must be 1-128 printable bytes")
		return
	}
	if tg.slashless {
		// "/hosts/{id}" is not a directory: a page there would resolve "x.js" as /hosts/x.js, another host.
		loc := tg.prefix + "/"
		if r.URL.RawQuery != "" {
			loc += "?" + r.URL.RawQuery
		}
		w.Header().Set("Location", loc)
		w.WriteHeader(http.StatusPermanentRedirect)
		return
	}
	token, cred := exchangeToken(r)
	claims, err := s.cfg.Verifier.Verify(r.Context(), token)
	if err != nil {
		s.countExchange("http", "unauthorized", http.StatusUnauthorized)
		writeError(w, http.StatusUnauthorized, codeUnauthorized, "client token missing, invalid or expired")
		return
	}
	if e != nil {
		e.subject = claims.Subject
	}
	if !claims.MayReach(tg.id) {
		s.countExchange("http", "forbidden", http.StatusForbidden)
		writeError(w, http.StatusForbidden, codeForbidden, "this token may not reach that host")
		return
	}
	if cred == credQuery && navigation(r) && s.startSession(w, r, tg, token, claims.ExpiresAt) {
		s.countExchange("http", outcomeSession, http.StatusSeeOther)
		return
	}
	if cred == credCookie && stateChanging(r) && !s.originAllowedForSession(r) {
		s.countExchange("http", "forbidden", http.StatusForbidden)
		writeError(w, http.StatusForbidden, codeCrossOriginRefused, "a request that changes state and is "+
			"authenticated by the session cookie must come from the host's own origin or an origin allowed with --cors-origin")
		return
	}
	kind, ok := s.checkTCP(w, r, tg, claims, cred) // tcp.go
	if e != nil {
		e.kind = kind
	}
	if !ok {
		return
	}
	scrubBrowserCredentials(r.Header) // before any route: neither the host nor a peer sees them
	if !s.admitExchange(w, kind) {
		return
	}
	defer s.exchanges.Add(-1)
	if longLived(r) { // a revocation of its token ends it (revoke.go)
		ctx, done := s.live.track(r.Context(), claims)
		defer done()
		r = r.WithContext(ctx)
	}
	s.routeExchange(w, r, tg, kind, claims.Subject, false) // forward.go
}

// serveLocal carries an exchange over t, a tunnel registered here. hop marks a request forwarded by a peer, whose
// forwarding headers are kept as the peer set them. It returns false, having written nothing, if t is retiring
// (see tunnelConn.admit): the caller routes the exchange as if t were gone.
func (s *Server) serveLocal(w http.ResponseWriter, r *http.Request, t *tunnelConn, kind string, tg target, subject string, hop bool) bool {
	n, ok := t.admit()
	if !ok {
		return false
	}
	if n > int64(s.cfg.MaxStreamsPerHost) {
		t.active.Add(-1)
		s.countExchange(kind, "too_many_streams", http.StatusTooManyRequests)
		writeError(w, http.StatusTooManyRequests, codeTooManyStreams, "too many concurrent exchanges for this host")
		return true
	}
	caller := callerKey(r, subject, hop)
	if !t.admitCaller(caller, s.cfg.MaxStreamsPerClient) {
		t.active.Add(-1)
		s.metrics.clientStreams.Inc()
		s.countExchange(kind, "too_many_streams", http.StatusTooManyRequests)
		writeError(w, http.StatusTooManyRequests, codeTooManyStreams, "too many concurrent exchanges from this caller for this host")
		return true
	}
	defer t.releaseCaller(caller)
	if !hop {
		s.setAccessRoute(w, routeLocal, kind)
	}
	s.metrics.activeStreams.Inc()
	defer func() {
		t.active.Add(-1)
		s.metrics.activeStreams.Dec()
	}()

	ex := &exchange{t: t, path: tg.rest, prefix: tg.prefix, publicHost: r.Host, subject: subject, start: time.Now(), hop: hop}
	if kind == "websocket" || kind == kindTCP || upgradeRequested(r) {
		s.proxyWebSocket(w, r, ex, kind)
		return true
	}
	s.serveHTTP(w, r, ex) // exchange.go
	return true
}

// exchange is one proxied client request.
type exchange struct {
	t    *tunnelConn
	path string // escaped path to forward
	// prefix is "/hosts/{id}" in path mode, "" in host mode (see target); publicHost is the Host the client used.
	prefix     string
	publicHost string
	subject    string
	start      time.Time
	hop        bool   // forwarded by a peer replica
	kind       string // "websocket" or kindTCP once proxyWebSocket carries it
}

func (s *Server) countExchange(kind, outcome string, status int) {
	s.metrics.exchanges.WithLabelValues(kind, outcome, statusClass(status)).Inc()
	s.tally.note(outcome)
}

// forwardedHeaders are the forwarding headers a peer replica sets on a request it forwards (and signs).
var forwardedHeaders = peering.ForwardedHeaders

// setPath points u at the escaped path p.
func setPath(u *url.URL, p string) {
	unescaped, err := url.PathUnescape(p)
	if err != nil {
		unescaped = p
	}
	u.Path = unescaped
	u.RawPath = ""
	if unescaped != p {
		u.RawPath = p
	}
}

// isTimeout reports whether err is a deadline or idle timeout.
func isTimeout(err error) bool {
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, yamux.ErrTimeout) {
		return true
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// idleConn is a stream that times out only when neither direction made progress for idle: a request body that is
// still moving keeps the wait for the answer alive, and an answer that is moving keeps a blocked body write alive.
// Its reads and writes note the time; the Server's idle watch (idlewatch.go) times it out while it is watched.
type idleConn struct {
	*yamux.Stream
	idle     time.Duration
	moved    atomic.Int64 // unix nanoseconds of the last progress
	timedOut atomic.Bool  // a read or write hit the idle timeout
	read     atomic.Int64 // bytes read, for roundTripCapped
	slot     int          // its index in idleWatch.conns while watched; guarded by idleWatch.mu
}

func (c *idleConn) bytesRead() int64 { return c.read.Load() }

func (c *idleConn) Read(p []byte) (int, error) {
	c.progress()
	n, err := c.Stream.Read(p)
	if n > 0 {
		c.read.Add(int64(n))
		c.progress()
	}
	return n, c.classify(err)
}

func (c *idleConn) Write(p []byte) (int, error) {
	c.progress()
	n, err := c.Stream.Write(p)
	if n > 0 {
		c.progress()
	}
	return n, c.classify(err)
}

// progress notes that bytes moved (or are about to), which gives both directions idle more time.
func (c *idleConn) progress() { c.moved.Store(time.Now().UnixNano()) }

// classify reports the idle timeout as the cause of every error after it: when one direction times out the
// transport closes the stream, and the other direction's "stream closed" must still read as a timeout (504), not
// as a failed tunnel (502).
func (c *idleConn) classify(err error) error {
	switch {
	case err == nil:
		return nil
	case isTimeout(err):
		c.timedOut.Store(true)
		return err
	case c.timedOut.Load():
		return fmt.Errorf("%w (%w)", yamux.ErrTimeout, err)
	default:
		return err
	}
}

// upstreamFailed reports whether an answer with code and header h is the agent's report that the host's upstream
// failed (tunnel.HeaderUpstreamError on a 5xx), not an answer of the host's: its own outcome and error code.
func upstreamFailed(code int, h http.Header) bool {
	return code >= 500 && h.Get(tunnel.HeaderUpstreamError) != ""
}

// recorder notes the status and body bytes of a proxied response for metrics.
type recorder struct {
	http.ResponseWriter
	s       *Server
	start   time.Time
	status  int
	outcome string
	// deadline is the client connection's current write deadline, zero until the first body write.
	deadline time.Time
}

func (r *recorder) WriteHeader(code int) {
	if r.status == 0 && code >= 200 {
		r.status = code
		r.s.metrics.latency.WithLabelValues("http").Observe(time.Since(r.start).Seconds())
		if r.outcome == "" && upstreamFailed(code, r.ResponseWriter.Header()) {
			r.outcome = outcomeUpstreamUnreachable
		}
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *recorder) Write(p []byte) (int, error) {
	if r.status == 0 {
		r.WriteHeader(http.StatusOK)
	}
	r.extendDeadline()
	n, err := r.ResponseWriter.Write(p)
	if err != nil && isTimeout(err) && r.outcome != "timeout" {
		r.outcome = "timeout"
		r.s.bounds.cuts.WithLabelValues(cutStalledReader).Inc()
		reply.Note(r.ResponseWriter, cutStalledReader)
	}
	r.s.metrics.bytes.WithLabelValues("to_client").Add(float64(n))
	return n, err
}

// FlushError flushes under the write deadline of Write: a stalled client is often found by a flush first
// (streamed answers are flushed after every write).
func (r *recorder) FlushError() error {
	r.extendDeadline()
	err := http.NewResponseController(r.ResponseWriter).Flush()
	if err != nil && isTimeout(err) && r.outcome != "timeout" {
		r.outcome = "timeout"
		r.s.bounds.cuts.WithLabelValues(cutStalledReader).Inc()
		reply.Note(r.ResponseWriter, cutStalledReader)
	}
	return err
}

// extendDeadline gives the client StallTimeout to take the next bytes: a client that stops reading makes no
// progress and is cut like a host that stops sending. The deadline moves only when a quarter of it has passed, so
// a fast body does not touch the connection's timer on every write. The deadline also covers the server's final
// flush after the handler returns; http.Server clears it before the connection's next request.
func (r *recorder) extendDeadline() {
	idle := r.s.cfg.StallTimeout
	now := time.Now()
	if !r.deadline.IsZero() && r.deadline.Sub(now) > idle-idle/4 {
		return
	}
	r.deadline = now.Add(idle)
	_ = http.NewResponseController(r.ResponseWriter).SetWriteDeadline(r.deadline)
}

// Unwrap lets http.ResponseController reach Flush and deadlines.
func (r *recorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

// countingBody counts request body bytes sent to the host.
type countingBody struct {
	io.ReadCloser
	s *Server
}

func (b *countingBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.s.metrics.bytes.WithLabelValues("to_host").Add(float64(n))
	return n, err
}

// flushLatency bounds how long bytes of a sized response body may wait in the relay's write buffer.
const flushLatency = 5 * time.Millisecond
