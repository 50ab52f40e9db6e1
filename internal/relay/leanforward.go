package relay

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"strings"
	"sync"
	"syscall"
	"time"
)

// The lean forward carries the commonest forwarded exchange — a GET, HEAD, OPTIONS or TRACE without a body and
// without an upgrade (page loads, API reads, SSE streams) — to the owner replica on a pooled keep-alive connection, on the handler's
// own goroutine. httputil.ReverseProxy with http.Transport does the same with two goroutines per connection and a
// hand-off per exchange, and flushes on a timer; here the response is flushed whenever the owner has sent nothing
// more for the moment (flush-when-idle), which costs no timer and delays no byte. Requests with a body or an
// upgrade, and other methods, go through ReverseProxy: they cannot be sent again when a pooled connection turns out
// to be closed.

// peerConn is a keep-alive connection to a peer's internal listener.
type peerConn struct {
	nc   net.Conn
	hl   *headLimit // under br: bounds each response head
	br   *bufio.Reader
	bw   *bufio.Writer
	used time.Time // when it was last returned to the pool
}

// peerPool holds idle connections per peer address.
type peerPool struct {
	mu   sync.Mutex
	idle map[string][]*peerConn
}

// peerIdleTimeout is how long an idle pooled connection is kept (the owner's internal listener keeps them longer).
const peerIdleTimeout = 60 * time.Second

// maxIdlePerPeer bounds the idle connections kept per peer.
const maxIdlePerPeer = 256

// get returns the most recently used idle connection to addr, or nil. (prune closes those idle too long; one the
// peer closed meanwhile is found stale by roundTripOn.)
func (p *peerPool) get(addr string) *peerConn {
	p.mu.Lock()
	defer p.mu.Unlock()
	cs := p.idle[addr]
	if len(cs) == 0 {
		return nil
	}
	c := cs[len(cs)-1]
	p.idle[addr] = cs[:len(cs)-1]
	return c
}

// put returns c to the pool (or closes it when the pool for addr is full).
func (p *peerPool) put(addr string, c *peerConn) {
	c.used = time.Now()
	p.mu.Lock()
	full := len(p.idle[addr]) >= maxIdlePerPeer
	if !full {
		if p.idle == nil {
			p.idle = make(map[string][]*peerConn)
		}
		p.idle[addr] = append(p.idle[addr], c)
	}
	p.mu.Unlock()
	if full {
		_ = c.nc.Close()
	}
}

// prune closes the connections idle for longer than peerIdleTimeout (those of a peer that went away included).
func (p *peerPool) prune() {
	closeAll(p.take(func(c *peerConn) bool { return time.Since(c.used) >= peerIdleTimeout }))
}

// closeIdle closes every idle connection.
func (p *peerPool) closeIdle() {
	closeAll(p.take(func(*peerConn) bool { return true }))
}

// take removes from the pool the connections for which drop is true and returns them, to be closed without the
// lock held.
func (p *peerPool) take(drop func(*peerConn) bool) []*peerConn {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []*peerConn
	for addr, cs := range p.idle {
		keep := cs[:0]
		for _, c := range cs {
			if drop(c) {
				out = append(out, c)
			} else {
				keep = append(keep, c)
			}
		}
		if len(keep) == 0 {
			delete(p.idle, addr)
		} else {
			p.idle[addr] = keep
		}
	}
	return out
}

func closeAll(cs []*peerConn) {
	for _, c := range cs {
		_ = c.nc.Close()
	}
}

// leanForwardable reports whether r can take the lean forward: a method that may be sent twice (RFC 9110 § 9.2.2:
// GET, HEAD, OPTIONS, TRACE), no body, no upgrade. A request on a pooled connection that the peer had closed is then
// sent again on a fresh one, as http.Transport does.
func leanForwardable(r *http.Request) bool {
	switch r.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace:
	default:
		return false
	}
	return (r.Body == nil || r.Body == http.NoBody || r.ContentLength == 0 && len(r.TransferEncoding) == 0) &&
		r.Header.Get("Upgrade") == "" && len(r.Trailer) == 0
}

// errStaleConn reports a pooled connection that the peer had closed before the request reached it.
var errStaleConn = errors.New("pooled connection closed by the peer")

// leanForward forwards r (see leanForwardable) to fw.peer and copies the answer to w.
func (s *Server) leanForward(w http.ResponseWriter, r *http.Request, fw *forwardEx) {
	// The outbound request is prepared as ReverseProxy prepares it for rewriteForward: hop-by-hop and forwarding
	// headers removed first (rewriteForward decides what the peer learns about the client), no default
	// User-Agent added.
	out := r.Clone(r.Context())
	out.Body, out.ContentLength = nil, 0
	out.Close = false
	removeHopHeaders(out.Header)
	if headerHasToken(r.Header, "Te", "trailers") {
		out.Header.Set("Te", "trailers")
	}
	for _, k := range []string{"Forwarded", "X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto"} {
		delete(out.Header, k)
	}
	if _, ok := out.Header["User-Agent"]; !ok {
		out.Header.Set("User-Agent", "")
	}
	s.rewriteForward(&httputil.ProxyRequest{In: r, Out: out})
	addr := fw.peer.Host

	var (
		c    *peerConn
		resp *http.Response
		err  error
	)
	// A pooled connection may have been closed by the peer meanwhile (its idle timeout, its restart); the request
	// is then sent again on a fresh one.
	for attempt := 0; attempt < 2; attempt++ {
		c = nil
		if attempt == 0 {
			c = s.peerConns.get(addr)
		} else {
			s.hops.Sign(out, fw.subject) // a fresh nonce: the peer may have seen the first one
		}
		reused := c != nil
		if c == nil {
			if c, err = s.dialPeer(r.Context(), addr); err != nil {
				break
			}
		}
		resp, err = s.roundTripOn(r.Context(), c, out)
		if err == nil {
			break
		}
		_ = c.nc.Close()
		if !reused || !errors.Is(err, errStaleConn) || r.Context().Err() != nil {
			break
		}
	}
	if err != nil {
		s.forwardError(w, r, err)
		return
	}
	stop := context.AfterFunc(r.Context(), func() { _ = c.nc.Close() }) // a client that goes ends the exchange
	fw.status = resp.StatusCode
	if !s.copyResponse(w, resp, c.br) {
		_ = c.nc.Close()
		// As ReverseProxy does: the response is cut, so the client must not see a clean end of it.
		panic(http.ErrAbortHandler)
	}
	_ = resp.Body.Close() // at its end: reads nothing more
	if stop() && !resp.Close {
		s.peerConns.put(addr, c)
		return
	}
	_ = c.nc.Close()
}

// dialPeer opens a connection to a peer's internal listener.
func (s *Server) dialPeer(ctx context.Context, addr string) (*peerConn, error) {
	d := net.Dialer{Timeout: 2 * time.Second, KeepAlive: 15 * time.Second}
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	hl := &headLimit{r: nc}
	return &peerConn{nc: nc, hl: hl, br: bufio.NewReaderSize(hl, 16<<10), bw: bufio.NewWriterSize(nc, 4<<10)}, nil
}

// roundTripOn writes out on c and reads the response head. Interim answers (1xx other than 101) are dropped: the
// client of a bodiless request has no use for 100 Continue, and 103 Early Hints are only hints. It returns
// errStaleConn when the peer closed the connection before answering anything.
func (s *Server) roundTripOn(ctx context.Context, c *peerConn, out *http.Request) (*http.Response, error) {
	stop := context.AfterFunc(ctx, func() { _ = c.nc.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	_ = c.nc.SetDeadline(time.Now().Add(s.cfg.IdleTimeout + 10*time.Second)) // the owner answers 504 itself first
	defer c.nc.SetDeadline(time.Time{})
	if err := out.Write(c.bw); err != nil {
		return nil, errors.Join(errStaleConn, err) // nothing reached the peer
	}
	if err := c.bw.Flush(); err != nil {
		return nil, errors.Join(errStaleConn, err)
	}
	c.hl.limit(s.cfg.MaxResponseHeaderBytes + peerHeadSlack) // for every head up to the final one, peeks included
	for {
		if _, err := c.br.Peek(1); err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) || errors.Is(err, syscall.ECONNRESET) {
				return nil, errStaleConn
			}
			return nil, err
		}
		resp, err := readHead(c.br, c.hl, out, s.cfg.MaxResponseHeaderBytes+peerHeadSlack)
		if err != nil {
			return nil, err
		}
		if resp.StatusCode >= 200 || resp.StatusCode == http.StatusSwitchingProtocols {
			return resp, nil
		}
	}
}

// copyResponse writes resp to w, flushing whenever br (the peer connection's reader) holds nothing more, and
// reports whether the body was read to its end (so the connection can be reused).
// The body is not closed: after a failure its Close would drain what is left, so the caller closes the
// connection instead.
func (s *Server) copyResponse(w http.ResponseWriter, resp *http.Response, br *bufio.Reader) bool {
	removeHopHeaders(resp.Header)
	stripReservedResponse(resp.Header)
	h := w.Header()
	for k, vs := range resp.Header {
		h[k] = append(h[k], vs...)
	}
	if len(resp.Trailer) > 0 {
		names := make([]string, 0, len(resp.Trailer))
		for k := range resp.Trailer {
			names = append(names, k)
		}
		h["Trailer"] = []string{strings.Join(names, ", ")}
	}
	w.WriteHeader(resp.StatusCode)
	rc := http.NewResponseController(w)
	if br.Buffered() == 0 && resp.ContentLength != 0 {
		_ = rc.Flush() // the body is not here yet (an SSE stream, a slow answer): the head goes now
	}
	buf := bufferPool{}.Get()
	defer bufferPool{}.Put(buf)
	for {
		n, err := resp.Body.Read(buf)
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				return false
			}
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return false
		}
		if br.Buffered() == 0 {
			if rc.Flush() != nil {
				return false
			}
		}
	}
	for k, vs := range resp.Trailer {
		h[http.TrailerPrefix+k] = vs
	}
	return true
}
