package relay

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/switchboard-relay/switchboard/internal/httphead"
)

// Bounds on the data path: what a hostile host or a client that never reads can make the relay hold.
//
//   - A response head (status line, headers, and any 1xx heads before it) from a host, or from a peer replica,
//     is read up to Config.MaxResponseHeaderBytes; a longer one ends the exchange with 502
//     upstream_header_too_large and the stream is closed. A head that never ends is cut at the cap, or at the idle
//     timeout if it trickles, or as soon as the client goes away.
//   - A client that accepts no bytes for Config.StallTimeout while the relay has bytes for it is cut, on every path:
//     proxied and forwarded responses (a write deadline on the client connection) and WebSocket passthrough in
//     both directions (a write deadline per write on the client connection and on the host's stream).
//   - A request body that the client sends malformed (bad chunking, cut short) is the client's fault: 400
//     bad_request, not 502.

// DefaultStreamWindow is Config.StreamWindow when zero; minStreamWindow is yamux's smallest.
const (
	DefaultStreamWindow = 4 << 20
	minStreamWindow     = 256 << 10
)

// DefaultMaxResponseHeaderBytes is Config.MaxResponseHeaderBytes when zero.
const DefaultMaxResponseHeaderBytes = 64 << 10

// peerHeadSlack is what a peer replica may add to a host's head when it forwards the answer (its own headers).
const peerHeadSlack = 8 << 10

// clientBodyError is a failure to read a client's request body: the client's fault, not the host's.
type clientBodyError struct{ err error }

func (e *clientBodyError) Error() string { return "read client request body: " + e.err.Error() }
func (e *clientBodyError) Unwrap() error { return e.err }

// Reasons a bound ended an exchange (switchboard_bound_cuts_total).
const (
	cutResponseHead  = "response_head"  // a host's or peer's response head passed MaxResponseHeaderBytes
	cutStalledReader = "stalled_client" // a client accepted no bytes for StallTimeout
	cutStalledHost   = "stalled_host"   // a host accepted no WebSocket bytes for StallTimeout
	cutClientBody    = "client_body"    // a client's request body was malformed or cut short
)

// boundMetrics count the exchanges that a bound ended or refused.
type boundMetrics struct {
	cuts *prometheus.CounterVec // reason
	busy prometheus.Counter     // refused at MaxExchanges
}

func newBoundMetrics(reg prometheus.Registerer) *boundMetrics {
	m := &boundMetrics{
		cuts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "switchboard", Name: "bound_cuts_total",
			Help: "Exchanges ended by a data-path bound, by reason (response_head, stalled_client, stalled_host, client_body).",
		}, []string{"reason"}),
	}
	m.busy = prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: "switchboard", Name: "exchanges_relay_busy_total",
		Help: "Client exchanges refused because the relay had MaxExchanges in flight.",
	})
	for _, r := range []string{cutResponseHead, cutStalledReader, cutStalledHost, cutClientBody} {
		m.cuts.WithLabelValues(r)
	}
	reg.MustRegister(m.cuts, m.busy)
	return m
}

// admitExchange takes a place under MaxExchanges for a client exchange, or answers 503 relay_busy and reports
// false. The caller gives the place back with s.exchanges.Add(-1).
func (s *Server) admitExchange(w http.ResponseWriter, kind string) bool {
	if s.exchanges.Add(1) <= int64(s.cfg.MaxExchanges) {
		return true
	}
	s.exchanges.Add(-1)
	s.bounds.busy.Inc()
	s.countExchange(kind, "relay_busy", http.StatusServiceUnavailable)
	writeError(w, http.StatusServiceUnavailable, codeRelayBusy, "the relay has too many exchanges in flight")
	return false
}

// readCounter is a connection that counts the bytes read from it.
type readCounter interface{ bytesRead() int64 }

// countedConn is a peer connection that counts the bytes read from it.
type countedConn struct {
	net.Conn
	read atomic.Int64
}

func (c *countedConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.read.Add(int64(n))
	return n, err
}

func (c *countedConn) bytesRead() int64 { return c.read.Load() }

// roundTripCapped sends req on t, whose MaxResponseHeaderBytes is set, and marks an error caused by a head longer
// than that with httphead.ErrTooLarge: http.Transport reports it only as text. The connection t used counts its reads
// (t's DialContext returns a readCounter); a failure after the whole allowance was read without a head is that.
func roundTripCapped(t *http.Transport, req *http.Request) (*http.Response, error) {
	var (
		c     readCounter
		start int64
	)
	trace := &httptrace.ClientTrace{
		GotConn: func(i httptrace.GotConnInfo) {
			if rc, ok := i.Conn.(readCounter); ok {
				c, start = rc, rc.bytesRead()
			}
		},
		// ReverseProxy copies a 1xx answer's header to the client from its own hook, which runs after this one
		// and never reaches ModifyResponse: clean it here like a final answer's.
		Got1xxResponse: func(_ int, h textproto.MIMEHeader) error {
			cleanInterimHead(http.Header(h))
			return nil
		},
	}
	resp, err := t.RoundTrip(req.WithContext(httptrace.WithClientTrace(req.Context(), trace)))
	if err != nil && c != nil && c.bytesRead()-start >= int64(t.MaxResponseHeaderBytes) {
		err = fmt.Errorf("%w: %w", httphead.ErrTooLarge, err)
	}
	return resp, err
}

// cleanInterimHead removes from a host's interim (1xx) answer every name a final answer may not carry as sent:
// the names a proxy in front acts on (stripReservedResponse), and what the page rules rewrite on a final answer
// (cookies, Location, CORS), which an interim answer has no business setting.
func cleanInterimHead(h http.Header) {
	stripReservedResponse(h)
	for k := range h {
		if k == "Set-Cookie" || k == "Location" || len(k) > len("Access-Control-") &&
			strings.EqualFold(k[:len("Access-Control-")], "Access-Control-") {
			delete(h, k)
		}
	}
}

// writeDeadline keeps a write deadline StallTimeout ahead of each write on a connection, so that a reader that
// takes nothing for that long is cut. It moves only when a quarter of it has passed, so a fast stream seldom
// touches the timer.
type writeDeadline struct {
	set   func(time.Time) error
	stall time.Duration
	at    time.Time // current deadline; zero before the first write
}

func (d *writeDeadline) extend() {
	now := time.Now()
	if !d.at.IsZero() && d.at.Sub(now) > d.stall-d.stall/4 {
		return
	}
	d.at = now.Add(d.stall)
	_ = d.set(d.at)
}

// stallWriter writes to w with a moving write deadline (see writeDeadline) and counts a write cut by it as reason.
// It is used by one goroutine.
type stallWriter struct {
	w      io.Writer
	d      writeDeadline
	cuts   prometheus.Counter
	cutOne bool
}

func newStallWriter(w io.Writer, set func(time.Time) error, stall time.Duration, cuts prometheus.Counter) *stallWriter {
	return &stallWriter{w: w, d: writeDeadline{set: set, stall: stall}, cuts: cuts}
}

func (s *stallWriter) Write(p []byte) (int, error) {
	s.d.extend()
	n, err := s.w.Write(p)
	if err != nil && isTimeout(err) && !s.cutOne {
		s.cutOne = true
		s.cuts.Inc()
	}
	return n, err
}

// stallResponseWriter gives a forwarded response the client write deadline of the local path (recorder): a client
// that takes no bytes for StallTimeout is cut. A hijack (a forwarded WebSocket) returns the connection with the
// same deadline on every write.
type stallResponseWriter struct {
	http.ResponseWriter
	d    writeDeadline
	cuts prometheus.Counter
	cut  bool
}

func (s *Server) newStallResponseWriter(w http.ResponseWriter) *stallResponseWriter {
	rc := http.NewResponseController(w)
	return &stallResponseWriter{ResponseWriter: w, d: writeDeadline{set: rc.SetWriteDeadline, stall: s.cfg.StallTimeout},
		cuts: s.bounds.cuts.WithLabelValues(cutStalledReader)}
}

func (w *stallResponseWriter) Write(p []byte) (int, error) {
	w.d.extend()
	n, err := w.ResponseWriter.Write(p)
	if err != nil && isTimeout(err) && !w.cut {
		w.cut = true
		w.cuts.Inc()
	}
	return n, err
}

// FlushError flushes under the same deadline; a flush is where a stalled client is often found first (streamed
// answers are flushed after every write).
func (w *stallResponseWriter) FlushError() error {
	w.d.extend()
	err := http.NewResponseController(w.ResponseWriter).Flush()
	if err != nil && isTimeout(err) && !w.cut {
		w.cut = true
		w.cuts.Inc()
	}
	return err
}

// Hijack hands over the client connection with the stall deadline on its writes.
func (w *stallResponseWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	conn, brw, err := http.NewResponseController(w.ResponseWriter).Hijack()
	if err != nil {
		return nil, nil, err
	}
	sc := &stallConn{Conn: conn}
	sc.w = newStallWriter(conn, conn.SetWriteDeadline, w.d.stall, w.cuts)
	// The buffered writer (the 101 head) writes through the deadline too; it is empty after a hijack.
	if brw.Writer.Buffered() == 0 {
		brw.Writer.Reset(sc)
	}
	return sc, brw, nil
}

// Unwrap lets http.ResponseController reach Flush and deadlines.
func (w *stallResponseWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// stallConn is a hijacked client connection whose writes carry the stall deadline. Its writes come from one
// goroutine at a time (ReverseProxy's copy toward the client).
type stallConn struct {
	net.Conn
	w *stallWriter
}

func (c *stallConn) Write(p []byte) (int, error) { return c.w.Write(p) }

// clientBody wraps a client request body so that its read errors are recognisable as the client's
// (clientBodyError), and counts them.
type clientBody struct {
	io.ReadCloser
	cuts prometheus.Counter
	seen bool
}

func (b *clientBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err != nil && err != io.EOF {
		if !b.seen {
			b.seen = true
			b.cuts.Inc()
		}
		return n, &clientBodyError{err: err}
	}
	return n, err
}
