package relay

import (
	"bufio"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/switchboard-relay/switchboard/internal/tunnel"
)

// Access log routes: how an exchange left the replica the client reached.
const (
	routeLocal     = "local"     // carried over a tunnel registered here
	routeForwarded = "forwarded" // forwarded to the replica holding the tunnel
	routeReplayed  = "replayed"  // answered with fly-replay, for Fly's proxy to replay at the owner
	routeNone      = "none"      // answered by this relay without reaching a host (refused, offline, busy)
)

// Bounds on the client-controlled fields of an access log line.
const (
	accessMaxPath    = 1024
	accessMaxSubject = 256
)

// accessEntry is what the access log says of one client exchange, filled in as the exchange goes. Only the
// handler's goroutine touches it, except in and out, which WebSocket pumps add to.
type accessEntry struct {
	start   time.Time
	hostID  string
	method  string
	path    string // escaped, without the query
	kind    string
	subject string
	route   string
	code    string // error code of the relay's answer, or upstream_unreachable, client_gone, stalled_client
	status  int    // first final status sent (101 for an upgrade), 0 until then
	in, out atomic.Int64
}

// accessLine is the JSON form of an entry. Field order is the line's.
type accessLine struct {
	Time     string  `json:"time"`
	Replica  string  `json:"replica"`
	HostID   string  `json:"host_id"`
	Method   string  `json:"method"`
	Path     string  `json:"path"`
	Kind     string  `json:"kind"`
	Route    string  `json:"route"`
	Status   int     `json:"status"`
	BytesIn  int64   `json:"bytes_in"`
	BytesOut int64   `json:"bytes_out"`
	Duration float64 `json:"duration_seconds"`
	Subject  string  `json:"subject,omitempty"`
	Error    string  `json:"error,omitempty"`
	Sample   uint64  `json:"sample"`
}

// startAccess begins the access log entry of a client exchange: it returns w and r wrapped to count bytes and note
// the status, and the entry. Called only when the access log is on.
func (s *Server) startAccess(w http.ResponseWriter, r *http.Request, tg target) (http.ResponseWriter, *http.Request, *accessEntry) {
	e := &accessEntry{start: time.Now(), hostID: truncate(tg.id, tunnel.MaxHostIDLen), method: r.Method,
		path: truncate(r.URL.EscapedPath(), accessMaxPath), kind: kindHTTP, route: routeNone}
	if r.Body != nil && r.Body != http.NoBody {
		r.Body = &accessBody{ReadCloser: r.Body, e: e}
	}
	return &accessWriter{ResponseWriter: w, e: e}, r, e
}

// endAccess writes e's line: always for a failed exchange, one in AccessLogConfig.Sample for a successful one.
func (s *Server) endAccess(e *accessEntry) {
	status := e.status
	if status == 0 { // nothing was answered: the client went away first
		status = 499
		if e.code == "" {
			e.code = "client_gone"
		}
	}
	al := s.cfg.AccessLog
	sample := uint64(1)
	if status < 400 && e.code == "" {
		if !al.sampled() {
			return
		}
		sample = al.sample
	}
	if b := e.line(s.cfg.Replica, status, sample); b != nil {
		al.append(b)
	}
}

// line encodes e as one JSON line ending in '\n' (nil if it cannot be encoded). JSON escapes every control
// character and replaces invalid UTF-8, so a client's path or a token's subject cannot break a line in two.
func (e *accessEntry) line(replica string, status int, sample uint64) []byte {
	b, err := json.Marshal(accessLine{
		Time: e.start.UTC().Format("2006-01-02T15:04:05.000Z07:00"), Replica: replica, HostID: e.hostID,
		Method: e.method, Path: e.path, Kind: e.kind, Route: e.route, Status: status, BytesIn: e.in.Load(),
		BytesOut: e.out.Load(), Duration: time.Since(e.start).Seconds(), Subject: truncate(e.subject, accessMaxSubject),
		Error: e.code, Sample: sample,
	})
	if err != nil {
		return nil
	}
	return append(b, '\n')
}

// truncate cuts s to at most n bytes, at the start of a UTF-8 sequence.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// accessOf finds the access entry in w's chain of wrappers; nil if the exchange has none (the access log is off,
// or the request came from a peer: the replica the client reached logs it).
func accessOf(w http.ResponseWriter) *accessEntry {
	for {
		switch t := w.(type) {
		case *accessWriter:
			return t.e
		case interface{ Unwrap() http.ResponseWriter }:
			w = t.Unwrap()
		default:
			return nil
		}
	}
}

// setAccessRoute records how the exchange left this replica, if w has an access entry.
func (s *Server) setAccessRoute(w http.ResponseWriter, route, kind string) {
	if s.cfg.AccessLog == nil {
		return
	}
	if e := accessOf(w); e != nil {
		e.route, e.kind = route, kind
	}
}

// accessWriter notes the status and counts the body bytes of the answer to the client.
type accessWriter struct {
	http.ResponseWriter
	e *accessEntry
}

func (w *accessWriter) WriteHeader(code int) {
	if w.e.status == 0 && (code >= 200 || code == http.StatusSwitchingProtocols) {
		w.e.status = code
		if w.e.code == "" && upstreamFailed(code, w.Header()) {
			w.e.code = outcomeUpstreamUnreachable
		}
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *accessWriter) Write(p []byte) (int, error) {
	if w.e.status == 0 {
		w.e.status = http.StatusOK
	}
	n, err := w.ResponseWriter.Write(p)
	w.e.out.Add(int64(n))
	return n, err
}

// NoteCode records the error code of the relay's answer (reply.Note), unless one was noted already.
func (w *accessWriter) NoteCode(code string) {
	if w.e.code == "" {
		w.e.code = code
	}
}

// Unwrap lets http.ResponseController reach Flush and deadlines.
func (w *accessWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// Hijack hands over the client connection of an upgrade, counting the bytes that cross it afterwards (read through
// the returned reader or the connection itself, written to the connection; the 101 head written through the
// returned writer is not body and is not counted).
func (w *accessWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	c, brw, err := http.NewResponseController(w.ResponseWriter).Hijack()
	if err != nil {
		return nil, nil, err
	}
	if w.e.status == 0 {
		w.e.status = http.StatusSwitchingProtocols
	}
	brw.Reader = bufio.NewReader(&accessReader{r: brw.Reader, e: w.e})
	return &accessConn{Conn: c, e: w.e}, brw, nil
}

// accessConn counts the bytes of a hijacked client connection.
type accessConn struct {
	net.Conn
	e *accessEntry
}

func (c *accessConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.e.in.Add(int64(n))
	return n, err
}

func (c *accessConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.e.out.Add(int64(n))
	return n, err
}

// CloseWrite half-closes the connection when it can (a *net.TCPConn, or one wrapped by connlimit).
func (c *accessConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// accessReader counts the bytes read from a hijacked connection's buffered reader.
type accessReader struct {
	r io.Reader
	e *accessEntry
}

func (r *accessReader) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	r.e.in.Add(int64(n))
	return n, err
}

// accessBody counts the request body bytes read from the client.
type accessBody struct {
	io.ReadCloser
	e *accessEntry
}

func (b *accessBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.e.in.Add(int64(n))
	return n, err
}
