package agent

import (
	"bufio"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/switchboard-relay/switchboard/internal/tunnel"
)

// Bridge serves tunnel streams from an upstream as bytes: per request it reads the head the relay sent, applies
// the agent's header changes in one pass (Host, X-Forwarded-Host, fixed headers, hop-by-hop headers), writes head
// and body to a pooled keep-alive connection to the upstream, reads the response head (rewriting Location), and
// copies the body back unchanged (Content-Length, chunked with its trailers, or until close, which it sends
// chunked). An upgrade (101) becomes a two-way byte copy. It does what UpstreamHandlerWith does, without an
// http.Server, a ReverseProxy or an http.Transport and their goroutines per connection; Host uses it.
//
// A Bridge is safe for concurrent use. Close it to close its idle upstream connections.
type Bridge struct {
	// Immutable after NewBridge.
	upstream *url.URL
	addr     string // host:port to dial
	opts     UpstreamOptions
	log      *slog.Logger
	tls      *tls.Config // nil for http://
	hostOut  []byte      // the Host sent upstream unless HostHeaderPreserve
	fixed    []byte      // the fixed header lines, "Name: value\r\n" each
	fallback func(net.Conn)
	dialer   net.Dialer

	pool upstreamPool
	wg   sync.WaitGroup // one per ServeConn in flight
}

// Bounds of the bridge's pool of idle upstream connections.
const (
	// bridgeMaxIdle is the most idle upstream connections kept (the relay keeps as many idle streams per tunnel).
	bridgeMaxIdle = 128
	// bridgeIdleTimeout closes an idle upstream connection unused this long.
	bridgeIdleTimeout = 90 * time.Second
	// bridgeDialTimeout bounds a connection to the upstream (TLS handshake included).
	bridgeDialTimeout = 10 * time.Second
)

// NewBridge returns a Bridge to upstream (an http:// or https:// URL) with opts (opts.TCP is not used: see
// Host). It dials nothing yet.
func NewBridge(upstream *url.URL, opts UpstreamOptions) (*Bridge, error) {
	if upstream == nil || (upstream.Scheme != "http" && upstream.Scheme != "https") || upstream.Host == "" {
		return nil, fmt.Errorf("agent: upstream %v must be an http:// or https:// URL", upstream)
	}
	b := &Bridge{upstream: upstream, opts: opts, log: opts.Logger}
	if b.log == nil {
		b.log = slog.New(slog.DiscardHandler)
	}
	b.addr = upstream.Host
	if upstream.Port() == "" {
		b.addr = net.JoinHostPort(upstream.Hostname(), map[bool]string{false: "80", true: "443"}[upstream.Scheme == "https"])
	}
	if upstream.Scheme == "https" {
		b.tls = opts.TLS.Clone()
		if b.tls == nil {
			b.tls = &tls.Config{}
		}
		if b.tls.ServerName == "" {
			b.tls.ServerName = upstream.Hostname()
		}
		b.tls.NextProtos = []string{"http/1.1"} // HTTP/1.1 keeps upgrades (WebSocket) working
	}
	switch opts.HostHeader {
	case "", HostHeaderUpstream:
		b.hostOut = []byte(upstream.Host)
	case HostHeaderPreserve:
	default:
		b.hostOut = []byte(opts.HostHeader)
	}
	for k, vs := range opts.Fixed {
		for _, v := range vs {
			b.fixed = append(append(append(append(b.fixed, k...), ": "...), v...), "\r\n"...)
		}
	}
	b.dialer = net.Dialer{Timeout: bridgeDialTimeout, KeepAlive: 30 * time.Second}
	return b, nil
}

// Close closes the idle upstream connections and waits for the streams Serve started serving (their streams must
// be closed for them to end: close the listener, which closes the tunnel, first).
func (b *Bridge) Close() error {
	b.pool.close()
	b.wg.Wait()
	return nil
}

// Serve serves every connection ln accepts (tunnel streams) until Accept fails, each on its own goroutine, and
// returns Accept's error. The goroutines end with their streams; Close waits for them.
func (b *Bridge) Serve(ln net.Listener) error {
	for {
		c, err := ln.Accept()
		if err != nil {
			return err
		}
		b.wg.Add(1)
		go b.serveConn(c)
	}
}

func (b *Bridge) serveConn(c net.Conn) {
	defer b.wg.Done()
	b.ServeConn(c)
}

// ServeConn serves the HTTP/1.1 exchanges on one stream (the relay reuses a stream for many) until the relay
// closes it or an exchange cannot continue, then closes it.
func (b *Bridge) ServeConn(c net.Conn) {
	s := &bridgeStream{b: b, conn: c}
	s.sr.Conn = c
	s.br = streamReaders.Get().(*bufio.Reader)
	s.br.Reset(&s.sr)
	handedOff := s.serve()
	s.br.Reset(nil)
	streamReaders.Put(s.br)
	if !handedOff {
		_ = c.Close()
	}
}

var (
	streamReaders = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, 8<<10) }}
	heads         = sync.Pool{New: func() any { return &head{raw: make([]byte, 0, 1024), lines: make([]headLine, 0, 16)} }}
	outBufs       = sync.Pool{New: func() any { b := make([]byte, 0, 2048); return &b }}
)

// putHead returns h to its pool unless a large head grew it (a pool must not keep 1 MiB heads alive).
func putHead(h *head) {
	if cap(h.raw) <= 64<<10 && cap(h.lines) <= 1024 {
		heads.Put(h)
	}
}

// bridgeStream is one stream's state. Owned by the ServeConn goroutine, except where noted.
type bridgeStream struct {
	b       *Bridge
	conn    net.Conn
	outcome string         // of the exchange in progress, for UpstreamOptions.Exchange
	sr      pushbackReader // what br reads: the stream, after a byte the watcher read
	br      *bufio.Reader
}

// pushbackReader reads a byte read ahead by the watcher before the stream. Reads are never concurrent with the
// watcher's.
type pushbackReader struct {
	net.Conn
	pending [1]byte
	has     bool
}

func (r *pushbackReader) Read(p []byte) (int, error) {
	if r.has && len(p) > 0 {
		p[0], r.has = r.pending[0], false
		return 1, nil
	}
	return r.Conn.Read(p)
}

// serve runs the exchanges; it reports whether the stream was handed to the fallback (which then owns it).
func (s *bridgeStream) serve() (handedOff bool) {
	req := heads.Get().(*head)
	defer putHead(req)
	for {
		if err := readHead(s.br, req, false); err != nil {
			switch {
			case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, net.ErrClosed),
				isTimeout(err):
			case errors.Is(err, errHeadTooLarge):
				s.answer(http.StatusRequestHeaderFieldsTooLarge, "head_too_large", "request head too large", true)
			case errors.Is(err, errBadHead):
				s.answer(http.StatusBadRequest, "bad_request", err.Error(), true)
			}
			return false
		}
		if s.b.fallback != nil {
			if _, ok, _ := tunnel.TCPService(string(req.bytes(req.first[1]))); ok {
				s.handOff(req)
				return true
			}
		}
		if !s.exchange(req) || req.closeConn {
			return false
		}
	}
}

// handOff gives the stream, with the head already read replayed first, to the fallback (the TCP services'
// http.Server).
func (s *bridgeStream) handOff(req *head) {
	pre := append([]byte(nil), req.raw...)
	if n := s.br.Buffered(); n > 0 {
		rest, _ := s.br.Peek(n)
		pre = append(pre, rest...)
	}
	s.b.fallback(&replayConn{Conn: &s.sr, pre: pre})
}

// replayConn reads pre before the connection.
type replayConn struct {
	net.Conn
	pre []byte
}

func (c *replayConn) Read(p []byte) (int, error) {
	if len(c.pre) > 0 {
		n := copy(p, c.pre)
		c.pre = c.pre[n:]
		return n, nil
	}
	return c.Conn.Read(p)
}

// Outcomes of an exchange, as UpstreamOptions.Exchange is told.
const (
	OutcomeOK          = "ok"                   // the upstream answered (any status), or the upgrade went through
	OutcomeUnreachable = "upstream_unreachable" // the agent could not reach the service and answered 502 itself
	OutcomeClientGone  = "client_gone"          // cancelled (client or relay went away) before an answer
)

// exchange carries one request and its response; it reports whether the stream may carry another.
func (s *bridgeStream) exchange(req *head) (more bool) {
	b := s.b
	if b.opts.Exchange != nil {
		kind := "http"
		if req.upgrade {
			kind = "websocket"
		}
		done := b.opts.Exchange(kind)
		s.outcome = OutcomeOK
		defer func() { done(s.outcome) }()
	}
	out := outBufs.Get().(*[]byte)
	*out = b.appendRequestHead((*out)[:0], req)
	defer putOut(out)
	// A body already buffered whole (most small requests) joins the head: one write, no goroutine, and the
	// request can be sent again if a pooled connection turns out closed.
	hasBody := (req.chunked || req.contentLength > 0) && !inlineBody(req, s.br, out)
	// Only a request that may be sent twice is sent again after a pooled connection failed before any answer:
	// the upstream may have acted on it before dying (a POST /charge executed twice). Any other is sent on a
	// connection checked first, which keeps an idle close from the upstream (the common stale case) harmless.
	replay := !hasBody && replayable(req)

	for attempt := 0; ; attempt++ {
		uc, reused, err := b.pool.get(b, !replay)
		if err != nil {
			return s.upstreamFailed(req, err, !hasBody)
		}
		res := s.roundTrip(req, out, uc, hasBody)
		switch {
		case res.retry && reused && attempt == 0 && replay:
			uc.close()
			continue // a pooled connection the upstream had closed: once more on a new one
		case res.err != nil && !res.started:
			uc.close()
			if res.clientGone {
				s.outcome = OutcomeClientGone
				return false
			}
			return s.upstreamFailed(req, res.err, res.reqDone)
		case res.err != nil:
			uc.close()
			if !res.clientGone {
				b.log.Warn("upstream failed", "method", string(req.bytes(req.first[0])),
					"path", pathOf(req.bytes(req.first[1])), "err", res.err)
			}
			return false
		}
		if res.upstreamReusable {
			b.pool.put(uc)
		} else {
			uc.close()
		}
		return res.streamReusable
	}
}

// replayable reports whether req may be sent twice, as net/http's Transport decides: an idempotent method without
// side effects (GET, HEAD, OPTIONS, TRACE; compared exactly, methods being case-sensitive), or a request carrying
// an Idempotency-Key or X-Idempotency-Key header.
func replayable(req *head) bool {
	switch string(req.bytes(req.first[0])) {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace:
		return true
	}
	for _, l := range req.lines {
		name := req.bytes(l.name)
		if asciiEqualFold(name, "Idempotency-Key") || asciiEqualFold(name, "X-Idempotency-Key") {
			return true
		}
	}
	return false
}

// roundTripResult is what one attempt of an exchange came to.
type roundTripResult struct {
	err              error
	started          bool // response bytes reached the stream: no 502 may follow
	retry            bool // the connection failed before any answer: another may be tried if the request is replayable
	reqDone          bool // the request was read whole from the stream
	clientGone       bool // the relay closed the stream
	upstreamReusable bool
	streamReusable   bool
}

// roundTrip sends req (its head already rewritten in out) and its body to uc and copies the response back.
func (s *bridgeStream) roundTrip(req *head, out *[]byte, uc *upstreamConn, hasBody bool) (res roundTripResult) {
	w := &watcher{st: s.conn, sr: &s.sr, uc: uc}
	var bodyDone chan error
	if !hasBody {
		res.reqDone = true
		if _, err := uc.nc.Write(*out); err != nil {
			res.err, res.retry = fmt.Errorf("write request: %w", err), true
			return res
		}
		if s.br.Buffered() == 0 && !req.upgrade {
			w.start()
		}
	} else {
		// The body goes on its own goroutine: the upstream may answer before it read it all (or 100 Continue
		// first), so the response is read meanwhile. Once the body is through, the same goroutine watches the
		// stream for the relay giving up.
		bodyDone = make(chan error, 1)
		w.done = make(chan struct{})
		go s.sendBody(req, out, uc, w, bodyDone)
	}

	// The response head, after any 1xx (passed on, except 101 which ends the exchange as an upgrade).
	resp := heads.Get().(*head)
	defer putHead(resp)
	wb := outBufs.Get().(*[]byte)
	defer putOut(wb)
	for {
		err := readHead(uc.br, resp, true)
		if err != nil {
			_ = s.stopBody(w, bodyDone, &res, uc)
			if res.clientGone = w.gone.Load(); res.clientGone {
				res.err = errors.New("client went away")
				return res
			}
			res.err = fmt.Errorf("read response head: %w", err)
			res.retry = !res.started && !hasBody && (errors.Is(err, io.EOF) || isReset(err))
			return res
		}
		if resp.status >= 200 || resp.status == http.StatusSwitchingProtocols {
			break
		}
		*wb = s.b.appendResponseHead((*wb)[:0], resp, req, false)
		if _, err := s.conn.Write(*wb); err != nil {
			_ = s.stopBody(w, bodyDone, &res, uc)
			res.err, res.started, res.clientGone = err, true, true
			return res
		}
		res.started = true
	}

	if resp.status == http.StatusSwitchingProtocols {
		_ = s.stopBody(w, bodyDone, &res, uc)
		if !req.upgrade || w.gone.Load() {
			res.err = errors.New("101 to a request that asked for no upgrade")
			return res
		}
		*wb = s.b.appendResponseHead((*wb)[:0], resp, req, false)
		if _, err := s.conn.Write(*wb); err != nil {
			res.err, res.started, res.clientGone = err, true, true
			return res
		}
		res.started = true
		s.pipe(uc)
		res.err, res.clientGone = errors.New("upgraded"), true // neither side is reusable; nothing to log
		return res
	}

	// Methods are case-sensitive (RFC 9110 § 9.1): "head" is not HEAD, and an upstream answers it with a body.
	bodyless := resp.status == http.StatusNoContent || resp.status == http.StatusNotModified ||
		string(req.bytes(req.first[0])) == http.MethodHead
	untilClose := !bodyless && !resp.chunked && resp.contentLength < 0
	*wb = s.b.appendResponseHead((*wb)[:0], resp, req, untilClose)
	res.started = true
	var err error
	switch {
	case bodyless:
		if _, werr := s.conn.Write(*wb); werr != nil {
			err = writeError{werr}
		}
	case resp.chunked:
		err = copyChunked(s.conn, uc.br, wb)
	case untilClose:
		err = copyUntilClose(s.conn, uc.br, wb)
	default:
		err = copyLength(s.conn, uc.br, wb, resp.contentLength)
	}
	bodyErr := s.stopBody(w, bodyDone, &res, uc)
	var we writeError
	res.clientGone = w.gone.Load() || errors.As(err, &we)
	if err != nil {
		res.err = err
		return res
	}
	// A bodyless answer whose head announces a body (chunked, or a non-zero length: legal for HEAD and 304, yet
	// the sign of an upstream that may send one) leaves the connection's framing in doubt: if bytes followed, the
	// next exchange on it would read them as its answer. Such a connection is closed, never pooled.
	framingInDoubt := bodyless && (resp.chunked || resp.contentLength > 0)
	res.upstreamReusable = bodyErr == nil && res.reqDone && !resp.closeConn && !untilClose && !framingInDoubt &&
		uc.br.Buffered() == 0 && !uc.closed.Load()
	res.streamReusable = res.reqDone && !res.clientGone
	return res
}

// sendBody writes the request head (in out) and body to the upstream and reports the outcome on bodyDone; then,
// if the stream is quiet, it watches it until stopped. It closes w.done when it returns.
func (s *bridgeStream) sendBody(req *head, out *[]byte, uc *upstreamConn, w *watcher, bodyDone chan<- error) {
	defer close(w.done)
	var err error
	if req.chunked {
		err = copyChunked(uc.nc, s.br, out)
	} else {
		err = copyLength(uc.nc, s.br, out, req.contentLength)
	}
	if err != nil {
		var we writeError
		if !errors.As(err, &we) {
			uc.close() // the stream failed (the relay gave up): abort the upstream call
		}
	}
	bodyDone <- err
	if err == nil && s.br.Buffered() == 0 {
		w.watch()
	}
}

// stopBody ends the request body's goroutine (if any) and the watcher, and returns the body's error; res.reqDone
// tells whether the body was read whole (if not, the rest is still on the way and the stream cannot be reused).
func (s *bridgeStream) stopBody(w *watcher, bodyDone chan error, res *roundTripResult, uc *upstreamConn) error {
	if bodyDone == nil {
		w.stop()
		return nil
	}
	var err error
	select {
	case err = <-bodyDone:
	default:
		// The upstream answered before it took the whole body (or failed): stop sending it.
		uc.close()
		_ = s.conn.SetReadDeadline(time.Unix(1, 0))
		err = <-bodyDone
		if err == nil {
			_ = s.conn.SetReadDeadline(time.Time{}) // it was through after all
		}
	}
	res.reqDone = err == nil
	w.stop()
	return err
}

// upstreamFailed answers 502 for an exchange the upstream failed before any response byte; it logs once. keep
// tells whether the request was read whole, so the stream can carry another.
func (s *bridgeStream) upstreamFailed(req *head, err error, keep bool) bool {
	s.outcome = OutcomeUnreachable
	s.b.log.Warn("upstream failed", "method", string(req.bytes(req.first[0])), "path", pathOf(req.bytes(req.first[1])), "err", err)
	return s.answer(http.StatusBadGateway, OutcomeUnreachable, "the host agent could not reach its upstream", !keep) && keep
}

// answer writes a JSON error response (the relay's error shape); it reports whether the write went through.
func (s *bridgeStream) answer(status int, code, message string, closeConn bool) bool {
	body := `{"error":{"code":` + strconv.Quote(code) + `,"message":` + strconv.Quote(message) + "}}\n"
	h := "HTTP/1.1 " + strconv.Itoa(status) + " " + http.StatusText(status) + "\r\nContent-Type: application/json\r\n" +
		"Content-Length: " + strconv.Itoa(len(body)) + "\r\n"
	if code == OutcomeUnreachable { // the relay counts it as its own outcome, not as the service's 502
		h += tunnel.HeaderUpstreamError + ": " + tunnel.UpstreamUnreachable + "\r\n"
	}
	if closeConn {
		h += "Connection: close\r\n"
	}
	_, err := io.WriteString(s.conn, h+"\r\n"+body)
	return err == nil
}

// pipe copies both ways between the stream and an upgraded upstream connection until either side ends, then
// closes both (as ReverseProxy does for upgrades).
func (s *bridgeStream) pipe(uc *upstreamConn) {
	var wg sync.WaitGroup
	var once sync.Once
	end := func() {
		once.Do(func() {
			uc.close()
			_ = s.conn.Close()
		})
	}
	wg.Go(func() {
		defer end()
		buf := copyBuffers.Get().(*[]byte)
		defer copyBuffers.Put(buf)
		_, _ = io.CopyBuffer(uc.nc, onlyReader{s.br}, *buf)
	})
	buf := copyBuffers.Get().(*[]byte)
	_, _ = io.CopyBuffer(s.conn, onlyReader{uc.br}, *buf)
	copyBuffers.Put(buf)
	end()
	wg.Wait()
}

// onlyReader hides WriteTo, so io.CopyBuffer uses the buffer given (bufio.Reader.WriteTo would use its own).
type onlyReader struct{ io.Reader }

// pathOf is the path of a request target, for logs.
func pathOf(target []byte) string {
	if i := strings.IndexByte(string(target), '?'); i >= 0 {
		return string(target[:i])
	}
	return string(target)
}

// watcher notices the relay closing a stream while the upstream works on a request, and then aborts the upstream
// call (closes its connection), as the agent's ReverseProxy did on context cancellation. It reads the stream on a
// goroutine of its own (start), or on the body's once the body is through (watch, with done closed by that
// goroutine); stop ends the read with a past deadline and waits for it.
type watcher struct {
	st net.Conn
	sr *pushbackReader
	uc *upstreamConn

	done chan struct{} // closed when the watching goroutine returned; nil when there is none
	gone atomic.Bool   // the stream ended while watched

	mu      sync.Mutex // guards stopReq and active: a stop racing the start of a read
	stopReq bool
	active  bool

	one [1]byte // what the read returned; read by stop after done
	n   int
}

func (w *watcher) start() {
	w.done = make(chan struct{})
	go func() {
		defer close(w.done)
		w.watch()
	}()
}

// watch reads the stream until it ends (the relay gave up: abort the upstream call) or stop.
func (w *watcher) watch() {
	w.mu.Lock()
	if w.stopReq {
		w.mu.Unlock()
		return
	}
	w.active = true
	w.mu.Unlock()
	var err error
	w.n, err = w.st.Read(w.one[:])
	if w.n == 0 && err != nil && !isTimeout(err) {
		w.gone.Store(true)
		w.uc.close()
	}
}

// stop ends the watch and waits for it; a byte it read goes back before the stream.
func (w *watcher) stop() {
	w.mu.Lock()
	w.stopReq = true
	active := w.active
	w.mu.Unlock()
	if active {
		_ = w.st.SetReadDeadline(time.Unix(1, 0))
	}
	if w.done != nil {
		<-w.done
	}
	if active {
		_ = w.st.SetReadDeadline(time.Time{})
		if w.n == 1 {
			w.sr.pending[0], w.sr.has = w.one[0], true
		}
	}
}

// isTimeout reports a deadline error (yamux has its own, a net.Error).
func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
