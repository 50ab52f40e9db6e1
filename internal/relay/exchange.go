package relay

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/yamux"

	"github.com/switchboard-relay/switchboard/internal/auth"
	"github.com/switchboard-relay/switchboard/internal/httphead"
)

// The exchange: how the relay carries one plain HTTP request to a host and its answer back, on the handler's own
// goroutine. It writes the request head to a yamux stream, reads the response head with its own parser
// (responsehead.go) and copies the body to the client, flushing whenever the stream has nothing more for the
// moment. There is no http.Transport per tunnel and no read or write loop per stream: a bodiless exchange (most of
// them) crosses no goroutine of the relay's besides the handler's and yamux's own. A request body is sent by one
// more goroutine, owned by the exchange and waited for, so that an answer that comes before the body ends (a 413,
// an echo streamed back) is read at once, as http.Transport does.
//
// Streams are kept for the next exchange (HTTP/1.1 keep-alive, as the agent's server expects) when the answer
// allows it: read to its end, not close-delimited, no Connection: close, HTTP/1.1, nothing sent past its end.
// A request that may be sent twice (GET, HEAD, OPTIONS, TRACE without a body) takes a kept stream and, if the host
// had closed it meanwhile, is sent again on a fresh one; any other request takes a fresh stream, so it is never
// sent twice.

// Bounds of the stream pool of a tunnel.
const (
	maxIdleStreams    = 128              // idle streams kept per tunnel
	streamIdleTimeout = 90 * time.Second // an idle stream older than this is closed
)

// expectContinueTimeout is how long a body announced with "Expect: 100-continue" waits for the host's 100 or final
// answer before it is sent anyway (http.DefaultTransport's figure).
const expectContinueTimeout = time.Second

// max1xx bounds the interim (1xx) answers before the final one, as http.Transport does.
const max1xx = 5

// hostStream is a stream to a host with its idle deadlines (idleConn), kept between exchanges.
type hostStream struct {
	idleConn
	pooledAt time.Time
	closeFn  func() // closeStream, bound once per stream for context.AfterFunc
}

func newHostStream(st *yamux.Stream, idle time.Duration) *hostStream {
	hs := &hostStream{idleConn: idleConn{Stream: st, idle: idle}}
	hs.closeFn = hs.closeStream
	return hs
}

// streamPool holds a tunnel's idle streams, most recently used last.
type streamPool struct {
	mu     sync.Mutex
	idle   []*hostStream
	closed bool
}

// get returns the most recently used idle stream, or nil. Streams idle too long are closed on the way.
func (p *streamPool) get(now time.Time) *hostStream {
	p.mu.Lock()
	n := len(p.idle)
	if n == 0 {
		p.mu.Unlock()
		return nil
	}
	hs := p.idle[n-1]
	p.idle[n-1] = nil
	p.idle = p.idle[:n-1]
	var stale []*hostStream
	if now.Sub(hs.pooledAt) >= streamIdleTimeout { // the newest is stale: so is every older one
		stale = append(p.idle, hs)
		p.idle = nil
		hs = nil
	}
	p.mu.Unlock()
	closeStreams(stale)
	return hs
}

// put keeps hs for the next exchange, or closes it when the pool is full or closed.
func (p *streamPool) put(hs *hostStream, now time.Time) {
	hs.pooledAt = now
	p.mu.Lock()
	keep := !p.closed && len(p.idle) < maxIdleStreams
	if keep {
		p.idle = append(p.idle, hs)
	}
	p.mu.Unlock()
	if !keep {
		_ = hs.Stream.Close()
	}
}

// prune closes the streams idle for streamIdleTimeout or longer (the oldest are first).
func (p *streamPool) prune(now time.Time) {
	p.mu.Lock()
	n := 0
	for n < len(p.idle) && now.Sub(p.idle[n].pooledAt) >= streamIdleTimeout {
		n++
	}
	stale := append([]*hostStream(nil), p.idle[:n]...)
	p.idle = append(p.idle[:0], p.idle[n:]...)
	clear(p.idle[len(p.idle):cap(p.idle)])
	p.mu.Unlock()
	closeStreams(stale)
}

// close closes every idle stream and keeps no more.
func (p *streamPool) close() {
	p.mu.Lock()
	stale := p.idle
	p.idle, p.closed = nil, true
	p.mu.Unlock()
	closeStreams(stale)
}

func closeStreams(ss []*hostStream) {
	for _, hs := range ss {
		_ = hs.Stream.Close()
	}
}

// exchangeBuffers are an exchange's pooled reader, writer and head scratch space.
type exchangeBuffers struct {
	rec   recorder  // the client's response writer of the exchange
	sized sizedBody // the answer's body when sized
	br    *bufio.Reader
	bw    *bufio.Writer
	hr    headReader
	hdr   http.Header // the host's head as parsed; its value slices are handed to the client's header
}

var exchangeBufferPool = sync.Pool{New: func() any {
	return &exchangeBuffers{
		br:  bufio.NewReaderSize(nil, 16<<10),
		bw:  bufio.NewWriterSize(nil, 4<<10),
		hdr: make(http.Header, 16),
	}
}}

func getExchangeBuffers() *exchangeBuffers { return exchangeBufferPool.Get().(*exchangeBuffers) }

func putExchangeBuffers(b *exchangeBuffers) {
	b.br.Reset(nil)
	b.bw.Reset(nil)
	b.hr.br = nil
	if cap(b.hr.buf) > 64<<10 {
		b.hr.buf = nil // a huge head is not kept for the next exchange
	}
	clear(b.hdr)
	b.rec, b.sized = recorder{}, sizedBody{}
	exchangeBufferPool.Put(b)
}

// errExpectRefused ends a body that the host answered before asking for it.
var errExpectRefused = errors.New("the host answered before the request body was sent")

// bodySender sends a request body to the host on its own goroutine.
type bodySender struct {
	s      *Server
	r      *http.Request
	st     *hostStream
	bw     *bufio.Writer // owned by the sender while it runs
	body   io.Reader
	length int64         // Content-Length, or -1 for chunked
	start  chan struct{} // closed when a 100-continue wait is over: send
	stop   chan struct{} // closed when the exchange no longer wants the body
	done   chan struct{} // closed when the sender returned
	err    error         // readable after done

	mu        sync.Mutex
	reading   bool // the sender is in a read of the client's body
	sending   bool // the sender's 100-continue wait is over
	stopped   bool // refuse or abort has begun: no more reads
	continued bool // the host's 100 is being passed on to the client: the sender waits for start
}

// read reads the client's body unless the exchange stopped wanting it; abort sees whether a read is under way.
func (b *bodySender) read(p []byte) (int, error) {
	b.mu.Lock()
	if b.stopped {
		b.mu.Unlock()
		return 0, errExpectRefused
	}
	b.reading = true
	b.mu.Unlock()
	n, err := b.body.Read(p)
	b.mu.Lock()
	b.reading = false
	b.mu.Unlock()
	return n, err
}

// run sends the body, then the trailers of a chunked one. A failure closes the stream, which wakes the exchange
// waiting for the answer.
func (b *bodySender) run() {
	defer close(b.done)
	if b.start != nil {
		b.awaitContinue()
	}
	b.mu.Lock()
	refused := b.stopped
	b.sending = !refused
	b.mu.Unlock()
	if refused {
		b.err = errExpectRefused
		return
	}
	if b.err = b.send(); b.err != nil {
		_ = b.st.Stream.Close()
	}
}

// awaitContinue waits for the host's 100 (cont), a refusal or an abort (stop), or expectContinueTimeout. The
// client must see exactly one 100, and the server writes its own at the first read of the body unless the handler
// wrote one before: so a timeout either claims the wait first (sending: the host's 100 is then dropped and the
// server's goes out) or, if the host's 100 is being passed on already, waits until it was written.
func (b *bodySender) awaitContinue() {
	t := time.NewTimer(expectContinueTimeout)
	defer t.Stop()
	select {
	case <-b.start:
		return
	case <-b.stop:
		return
	case <-t.C:
	}
	b.mu.Lock()
	passing := b.continued
	b.sending = !b.stopped && !passing
	b.mu.Unlock()
	if passing {
		select {
		case <-b.start:
		case <-b.stop:
		}
	}
}

func (b *bodySender) send() error {
	bp := copyBuffers.Get().(*[]byte)
	defer copyBuffers.Put(bp)
	buf := *bp
	const room = 18 // a chunk's size line, "ffffffffffffffff\r\n" at most, goes before its data
	var sent int64
	for {
		var n int
		var err error
		if b.length < 0 {
			n, err = b.read(buf[room : len(buf)-2])
		} else {
			n, err = b.read(buf[:min(int64(len(buf)), max(b.length-sent, 1))])
		}
		if n > 0 {
			sent += int64(n)
			if b.length >= 0 && sent > b.length {
				return &clientBodyError{err: errors.New("request body longer than its Content-Length")}
			}
			var werr error
			if b.length < 0 {
				size := strconv.AppendUint(buf[:0:room], uint64(n), 16)
				at := room - len(size) - 2
				copy(buf[at:], size)
				buf[room-2], buf[room-1] = '\r', '\n'
				buf[room+n], buf[room+n+1] = '\r', '\n'
				_, werr = b.st.Write(buf[at : room+n+2])
			} else {
				_, werr = b.st.Write(buf[:n])
			}
			if werr != nil {
				return werr
			}
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
	}
	if b.length >= 0 {
		if sent < b.length {
			return &clientBodyError{err: io.ErrUnexpectedEOF}
		}
		return nil
	}
	// The last chunk, then the trailers: the server has filled r.Trailer now the body ended (a trailer the client
	// did not declare is added only then), and reserved names go first.
	b.bw.Reset(b.st)
	_, _ = b.bw.WriteString("0\r\n")
	stripReservedTrailers(b.r.Trailer)
	for k, vs := range b.r.Trailer {
		for _, v := range vs {
			writeField(b.bw, k, v)
		}
	}
	_, _ = b.bw.WriteString("\r\n")
	return b.bw.Flush()
}

// serveHTTP carries one plain HTTP exchange to ex's host and reports its outcome and status for the metrics.
func (s *Server) serveHTTP(w http.ResponseWriter, r *http.Request, ex *exchange) {
	b := getExchangeBuffers()
	defer putExchangeBuffers(b)
	b.rec = recorder{ResponseWriter: w, s: s, start: ex.start}
	outcome, status := s.exchangeHTTP(&b.rec, r, ex, b)
	s.countExchange("http", outcome, status)
}

// upgradeRequested reports whether r asks for a protocol upgrade (Connection: upgrade and an Upgrade header): it
// is carried like a WebSocket, its bytes passed both ways after the host's 101 (upgrade.go).
func upgradeRequested(r *http.Request) bool {
	return r.Header.Get("Upgrade") != "" && headerHasToken(r.Header, "Connection", "upgrade")
}

// retryable reports whether r may take a kept stream: sent again on a fresh one if the host had closed it, which
// only a request that may be sent twice and has no body allows (RFC 9110 § 9.2.2).
func retryable(r *http.Request, hasBody bool) bool {
	switch r.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace:
		return !hasBody
	}
	return false
}

func (s *Server) exchangeHTTP(rec *recorder, r *http.Request, ex *exchange, b *exchangeBuffers) (outcome string, status int) {
	hasBody := r.Body != nil && r.Body != http.NoBody && r.ContentLength != 0
	if ex.hop {
		scrubBrowserCredentials(r.Header) // a peer of another release may have left them
	}
	tgt := requestTarget(ex.path, r.URL)

	var (
		hs     *hostStream
		sender *bodySender
		stop   func() bool
		rh     responseHead
	)
	reuse := retryable(r, hasBody)
	for attempt := 0; ; attempt++ {
		hs = nil
		if reuse && attempt == 0 {
			hs = ex.t.streams.get(time.Now())
		}
		kept := hs != nil
		if hs == nil {
			st, err := ex.t.sess.OpenStream()
			if err != nil {
				return s.exchangeFailed(rec, r, ex, err)
			}
			hs = newHostStream(st, s.cfg.IdleTimeout)
		}
		s.idle.add(&hs.idleConn)
		// A client that goes away ends the exchange: the stream's close wakes every read and write on it, and the
		// host's side sees the end of the request.
		stop = context.AfterFunc(r.Context(), hs.closeFn)
		b.br.Reset(hs)
		b.hr.reset(b.br, s.cfg.MaxResponseHeaderBytes) // interim heads and the final one share the allowance
		b.bw.Reset(hs)
		s.writeRequestHead(b.bw, r, ex, tgt, hasBody)
		err := b.bw.Flush()
		if err == nil {
			if hasBody {
				sender = s.startBody(r, hs, b)
			}
			rh, err = s.readFinalHead(rec, b, sender)
		}
		if err == nil {
			break
		}
		stop()
		if sender != nil {
			sender.abort(rec)
			var bodyErr *clientBodyError
			if errors.As(sender.err, &bodyErr) {
				err = sender.err // the body's failure is the cause: the host saw the stream end
			}
		}
		s.idle.remove(&hs.idleConn)
		_ = hs.Stream.Close()
		if kept && staleStream(err) && b.hr.consumed() == 0 && r.Context().Err() == nil {
			continue // the host had closed the kept stream: once more on a fresh one
		}
		return s.exchangeFailed(rec, r, ex, err)
	}
	// The answer is the host's from here on.
	end := s.copyAnswer(rec, r, ex, b, rh)
	stopped := stop()
	clean := end == answerDone
	if sender != nil && (!clean || !sender.finished()) {
		clean = false
		sender.abort(rec)
	}
	s.idle.remove(&hs.idleConn)
	if clean && stopped && !rh.close && !rh.http10 && b.br.Buffered() == 0 && !hs.timedOut.Load() {
		ex.t.streams.put(hs, time.Now())
	} else {
		_ = hs.Stream.Close()
	}
	if rec.outcome == "" {
		rec.outcome = "ok"
	}
	if end == answerCut {
		// As ReverseProxy does: the answer is cut, so the client must not see a clean end of it.
		s.countExchange("http", rec.outcome, rec.status)
		panic(http.ErrAbortHandler)
	}
	return rec.outcome, rec.status
}

func (hs *hostStream) closeStream() { _ = hs.Stream.Close() }

// staleStream reports whether err is what a kept stream that the host had closed gives: its end, before any byte.
func staleStream(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, yamux.ErrStreamClosed) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, yamux.ErrConnectionReset)
}

// startBody starts the sender of r's body on hs. With "Expect: 100-continue" it waits for the host's 100.
func (s *Server) startBody(r *http.Request, hs *hostStream, b *exchangeBuffers) *bodySender {
	body := &countingBody{ReadCloser: &clientBody{ReadCloser: r.Body, cuts: s.bounds.cuts.WithLabelValues(cutClientBody)}, s: s}
	sender := &bodySender{s: s, r: r, st: hs, bw: b.bw, body: body, length: r.ContentLength,
		stop: make(chan struct{}), done: make(chan struct{})}
	if r.ContentLength < 0 || len(r.Trailer) > 0 {
		sender.length = -1
	}
	if headerHasToken(r.Header, "Expect", "100-continue") {
		sender.start = make(chan struct{})
	}
	go sender.run() // the exchange waits for it: finished, or abort
	return sender
}

// finished reports whether the sender sent the whole body.
func (b *bodySender) finished() bool {
	select {
	case <-b.done:
		return b.err == nil
	default:
		return false
	}
}

// claimContinue reports whether the host's 100 is to be passed on to the client: the sender still waits for it,
// and from now on keeps waiting until cont. It is false when the sender's wait is over (its timeout: the server
// sends its own 100 when the body is read) or the exchange stopped wanting the body.
func (b *bodySender) claimContinue() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.sending || b.stopped || b.continued {
		return false
	}
	b.continued = true
	return true
}

// cont lets a sender waiting for 100-continue send. It comes after the 100 was written to the client, so that the
// server, which writes its own 100 at the first read of the body unless the handler wrote one, does not send a
// second one.
func (b *bodySender) cont() {
	if b.start != nil {
		select {
		case <-b.start:
		default:
			close(b.start)
		}
	}
}

// refuse tells a sender still waiting for a 100 not to send: the host answered without asking for the body.
func (b *bodySender) refuse() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.sending {
		return // its wait timed out: the body is under way, as when no 100 was asked for
	}
	if b.continued {
		return // the host asked for the body: it is under way, as the client was told
	}
	b.stopped = true
	close(b.stop)
}

// abort stops the sender and waits for it.
func (b *bodySender) abort(rec *recorder) {
	select {
	case <-b.stop:
	default:
		close(b.stop)
	}
	select {
	case <-b.done:
		return
	default:
	}
	_ = b.st.Stream.Close() // wakes a write to the host
	b.mu.Lock()
	b.stopped = true
	reading := b.reading
	b.mu.Unlock()
	if reading {
		// Blocked on the client, who sends nothing: a read deadline in the past wakes it, and the server closes the
		// connection after the answer (its body was not read to its end).
		_ = http.NewResponseController(rec.ResponseWriter).SetReadDeadline(time.Unix(1, 0))
	}
	<-b.done
}

// readFinalHead reads the host's answer up to its final head, passing interim 103 Early Hints (and a 100 Continue
// the client asked for) on to the client. The head's header is left in b.hdr.
func (s *Server) readFinalHead(rec *recorder, b *exchangeBuffers, sender *bodySender) (responseHead, error) {
	for n := 0; ; n++ {
		rh, err := b.hr.readResponseHead(b.hdr)
		if err != nil {
			return rh, err
		}
		if rh.status >= 200 {
			if sender != nil && sender.start != nil {
				sender.refuse() // a final answer without a 100: the body is not sent (the stream is not kept)
			}
			return rh, nil
		}
		if rh.status == http.StatusSwitchingProtocols || n >= max1xx {
			return rh, errMalformedHead // no upgrade was asked for; or interim answers without end
		}
		if rh.status == http.StatusContinue {
			if sender == nil || sender.start == nil || !sender.claimContinue() {
				continue // not asked for, or the sender's wait is over already (its timeout: the server sends its own)
			}
			writeInterim(rec, rh.status, b.hdr)
			sender.cont() // only now: a read of the body before the 100 went out would make the server send its own
			continue
		}
		writeInterim(rec, rh.status, b.hdr)
	}
}

// writeInterim passes an interim answer on to the client with only its own (cleaned) header.
func writeInterim(rec *recorder, code int, hdr http.Header) {
	cleanInterimHead(hdr)
	removeHopHeaders(hdr)
	h := rec.Header()
	saved := make(http.Header, len(h))
	for k, v := range h {
		saved[k] = v
	}
	clear(h)
	for k, v := range hdr {
		h[k] = v
	}
	rec.WriteHeader(code)
	clear(h)
	for k, v := range saved {
		h[k] = v
	}
}

// How an answer's copy to the client ended.
type answerEnd int

const (
	answerDone         answerEnd = iota // read to its end and passed on
	answerClientFailed                  // the client went or stalled; rec.outcome says which
	answerCut                           // the host's side failed mid-body
)

// copyAnswer writes the host's answer (head in b.hdr, framing rh) to the client.
func (s *Server) copyAnswer(rec *recorder, r *http.Request, ex *exchange, b *exchangeBuffers, rh responseHead) answerEnd {
	hdr := b.hdr
	var trailerNames []string
	if rh.chunked {
		for _, v := range hdr["Trailer"] {
			for name := range strings.SplitSeq(v, ",") {
				if name = strings.Trim(name, " \t"); validName(name) && !reservedResponseName(name) {
					trailerNames = append(trailerNames, http.CanonicalHeaderKey(name))
				}
			}
		}
	}
	if cl := hdr["Content-Length"]; len(cl) > 1 || len(cl) == 1 && strings.IndexByte(cl[0], ',') >= 0 {
		hdr["Content-Length"] = []string{strconv.FormatInt(rh.contentLength, 10)} // repeats of one value
	}
	removeHopHeaders(hdr)
	stripReservedResponse(hdr)
	rewriteHostResponse(hdr, ex)
	h := rec.Header()
	for k, vs := range hdr {
		if len(h[k]) == 0 {
			h[k] = vs
		} else {
			h[k] = append(h[k], vs...)
		}
	}
	if len(trailerNames) > 0 {
		h["Trailer"] = []string{strings.Join(trailerNames, ", ")}
	}
	rec.WriteHeader(rh.status)
	noBody := r.Method == http.MethodHead || rh.status == http.StatusNoContent || rh.status == http.StatusNotModified
	if noBody || !rh.chunked && rh.contentLength == 0 {
		return answerDone
	}
	var body io.Reader
	switch {
	case rh.chunked:
		body = httputil.NewChunkedReader(b.br)
	case rh.contentLength > 0:
		b.sized = sizedBody{r: b.br, left: rh.contentLength}
		body = &b.sized
	default:
		body = b.br // close-delimited: to the stream's end
	}
	if b.br.Buffered() == 0 {
		if rec.FlushError() != nil { // the body is not here yet (an SSE stream, a slow answer): the head goes now
			return clientFailed(rec)
		}
	}
	bp := copyBuffers.Get().(*[]byte)
	defer copyBuffers.Put(bp)
	buf := *bp
	for {
		n, err := body.Read(buf)
		if n > 0 {
			if _, werr := rec.Write(buf[:n]); werr != nil {
				return clientFailed(rec)
			}
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return hostFailed(rec, r, ex, err)
		}
		// Flush when the stream has nothing more for the moment: no timer, and no byte waits for one.
		if b.br.Buffered() == 0 && rec.FlushError() != nil {
			return clientFailed(rec)
		}
	}
	if !rh.chunked {
		return answerDone
	}
	if err := b.hr.readTrailers(hdr); err != nil {
		return hostFailed(rec, r, ex, err)
	}
	removeHopHeaders(hdr)
	stripReservedResponse(hdr)
	if len(hdr) == 0 {
		return answerDone
	}
	if rec.FlushError() != nil { // the client's answer is chunked already: then trailers can follow
		return clientFailed(rec)
	}
	for k, vs := range hdr {
		if slices.Contains(trailerNames, k) {
			h[k] = vs
		} else {
			h[http.TrailerPrefix+k] = vs
		}
	}
	return answerDone
}

// clientFailed notes a client that failed to take the answer: gone, or cut for stalling (recorder set "timeout").
func clientFailed(rec *recorder) answerEnd {
	if rec.outcome == "" {
		rec.outcome = "client_gone"
	}
	return answerClientFailed
}

// hostFailed notes an answer whose body failed on the host's side (or ended because the client went).
func hostFailed(rec *recorder, r *http.Request, ex *exchange, err error) answerEnd {
	switch {
	case r.Context().Err() != nil:
		rec.outcome = "client_gone"
		return answerClientFailed
	case isTimeout(err):
		rec.outcome = "timeout"
	default:
		rec.outcome = "upstream_failed"
		ex.t.log.Debug("exchange cut", "err", err)
	}
	return answerCut
}

// sizedBody reads a body of a known length; a stream that ends before it is an unexpected EOF.
type sizedBody struct {
	r    io.Reader
	left int64
}

func (b *sizedBody) Read(p []byte) (int, error) {
	if b.left <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.r.Read(p)
	b.left -= int64(n)
	if b.left <= 0 {
		return n, io.EOF
	}
	if err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return n, err
}

// exchangeFailed answers an exchange that failed before the host's answer began: 400 when the client's own request
// body failed, 504 when the host made no progress in time, 502 otherwise, nothing when the client itself went away.
func (s *Server) exchangeFailed(rec *recorder, r *http.Request, ex *exchange, err error) (string, int) {
	var bodyErr *clientBodyError
	switch {
	case r.Context().Err() != nil:
		return "client_gone", 499
	case errors.As(err, &bodyErr):
		writeError(rec, http.StatusBadRequest, codeBadRequest, "the request body could not be read (malformed or cut short)")
		return "bad_request", http.StatusBadRequest
	case errors.Is(err, httphead.ErrTooLarge):
		s.bounds.cuts.WithLabelValues(cutResponseHead).Inc()
		writeError(rec, http.StatusBadGateway, codeUpstreamHeaderTooLarge, "the host's response header is larger than the relay accepts")
		return "upstream_header_too_large", http.StatusBadGateway
	case isTimeout(err):
		writeError(rec, http.StatusGatewayTimeout, codeUpstreamTimeout, "the host made no progress within the idle timeout")
		return "timeout", http.StatusGatewayTimeout
	case errors.Is(err, errMalformedHead):
		ex.t.log.Debug("exchange failed", "err", err)
		writeError(rec, http.StatusBadGateway, codeUpstreamFailed, "the host's answer was not valid HTTP/1.1")
		return "upstream_failed", http.StatusBadGateway
	default:
		ex.t.log.Debug("exchange failed", "err", err)
		writeError(rec, http.StatusBadGateway, codeUpstreamFailed, "the tunnel to the host failed during the exchange")
		return "upstream_failed", http.StatusBadGateway
	}
}

// requestTargetParts is the request-target sent to the host: the escaped path to forward and the client's query without an
// access token. It is written in pieces, with no string built for it.
type requestTargetParts struct {
	path     string // escaped
	query    string // raw, without "?"
	hasQuery bool   // a "?" follows the path, even with an empty query
}

func requestTarget(path string, in *url.URL) requestTargetParts {
	u := url.URL{RawQuery: in.RawQuery, ForceQuery: in.ForceQuery}
	setPath(&u, path)
	auth.StripQueryToken(&u)
	t := requestTargetParts{path: u.EscapedPath(), query: u.RawQuery, hasQuery: u.ForceQuery || u.RawQuery != ""}
	if t.path == "" {
		t.path = "/"
	}
	return t
}

// writeRequestHead writes the head of the request to the host: the client's header without hop-by-hop and reserved
// names (headerpolicy.go), then the relay's own: forwarding headers, the path prefix, the verified subject, framing.
func (s *Server) writeRequestHead(bw *bufio.Writer, r *http.Request, ex *exchange, tgt requestTargetParts, hasBody bool) {
	_, _ = bw.WriteString(r.Method)
	_ = bw.WriteByte(' ')
	_, _ = bw.WriteString(tgt.path)
	if tgt.hasQuery {
		_ = bw.WriteByte('?')
		_, _ = bw.WriteString(tgt.query)
	}
	_, _ = bw.WriteString(" HTTP/1.1\r\nHost: ")
	writeValue(bw, r.Host)
	_, _ = bw.WriteString("\r\n")
	connection := r.Header["Connection"]
	for k, vs := range r.Header {
		if reservedHeader(k) || k == "Content-Length" || k == "Host" || listedIn(connection, k) {
			continue // hop-by-hop names are reserved too
		}
		for _, v := range vs {
			writeField(bw, k, v)
		}
	}
	if headerHasToken(r.Header, "Te", "trailers") {
		_, _ = bw.WriteString("Te: trailers\r\n")
	}
	if ex.hop {
		// As the peer replica that forwarded the request set and signed them (the hop's verification checked them).
		for _, k := range forwardedHeaders {
			for _, v := range r.Header[k] {
				writeField(bw, k, v)
			}
		}
	} else {
		if ip, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
			_, _ = bw.WriteString("X-Forwarded-For: ")
			if s.cfg.TrustForwardedFor {
				for _, v := range r.Header["X-Forwarded-For"] {
					writeValue(bw, v)
					_, _ = bw.WriteString(", ")
				}
			}
			writeValue(bw, ip)
			_, _ = bw.WriteString("\r\n")
		}
		writeField(bw, "X-Forwarded-Host", r.Host)
		writeField(bw, "X-Forwarded-Proto", s.clientProto(r))
	}
	if ex.prefix != "" {
		writeField(bw, "X-Forwarded-Prefix", ex.prefix)
	}
	if ex.subject != "" {
		writeField(bw, HeaderSubject, ex.subject)
	}
	if hasBody {
		if r.ContentLength < 0 || len(r.Trailer) > 0 {
			_, _ = bw.WriteString("Transfer-Encoding: chunked\r\n")
			stripReservedTrailers(r.Trailer)
			if len(r.Trailer) > 0 {
				_, _ = bw.WriteString("Trailer: ")
				first := true
				for k := range r.Trailer {
					if !first {
						_, _ = bw.WriteString(", ")
					}
					first = false
					writeValue(bw, k)
				}
				_, _ = bw.WriteString("\r\n")
			}
		} else {
			_, _ = bw.WriteString("Content-Length: ")
			var num [20]byte
			_, _ = bw.Write(strconv.AppendInt(num[:0], r.ContentLength, 10))
			_, _ = bw.WriteString("\r\n")
		}
	}
	_, _ = bw.WriteString("\r\n")
}

// listedIn reports whether name is one of the field names listed in the Connection values (hop-by-hop by that).
func listedIn(connection []string, name string) bool {
	for _, v := range connection {
		for f := range strings.SplitSeq(v, ",") {
			if strings.EqualFold(strings.Trim(f, " \t"), name) {
				return true
			}
		}
	}
	return false
}

// writeField writes one header line.
func writeField(bw *bufio.Writer, k, v string) {
	_, _ = bw.WriteString(k)
	_, _ = bw.WriteString(": ")
	writeValue(bw, v)
	_, _ = bw.WriteString("\r\n")
}

// writeValue writes a header value with every control byte (CR and LF among them) replaced by a space, as
// net/http does with newlines: no value can end its line early.
func writeValue(bw *bufio.Writer, v string) {
	v = strings.TrimSpace(v)
	start := 0
	for i := 0; i < len(v); i++ {
		if c := v[i]; c < ' ' && c != '\t' || c == 0x7f {
			_, _ = bw.WriteString(v[start:i])
			_ = bw.WriteByte(' ')
			start = i + 1
		}
	}
	_, _ = bw.WriteString(v[start:])
}
