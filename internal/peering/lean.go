package peering

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"sync"
	"syscall"
	"time"

	"github.com/switchboard-relay/switchboard/internal/httphead"
)

// LeanClient carries the commonest forwarded exchange — a request that may be sent twice (GET, HEAD, OPTIONS,
// TRACE) without a body and without an upgrade — to a peer's internal listener over plain HTTP/1.1, on pooled
// keep-alive connections and on the caller's goroutine. http.Transport does the same with two goroutines per
// connection and a hand-off per exchange. A pooled connection that the peer closed meanwhile (its idle timeout,
// its restart) is found when it gives end-of-file before any answer; the request is then signed again and sent on
// a fresh connection, as http.Transport does for such requests. A request with a body cannot be sent twice and does
// not come here.
//
// Signer and MaxHeadBytes are required; the pool needs no setup. Its methods are safe for concurrent use.
type LeanClient struct {
	// Signer signs a request sent again, with a fresh nonce: the peer may have seen the first.
	Signer *Signer
	// MaxHeadBytes bounds the response heads of one exchange, interim 1xx heads included; a longer one fails with
	// httphead.ErrTooLarge.
	MaxHeadBytes int
	// HeadTimeout bounds the writing of a request and the wait for its response head. Zero means no bound.
	HeadTimeout time.Duration

	mu   sync.Mutex // guards idle
	idle map[string][]*LeanConn
}

// LeanConn is a keep-alive connection to a peer's internal listener. RoundTrip hands it out with a response whose
// body reads from it; Release ends the exchange.
type LeanConn struct {
	// Immutable after dial.
	owner *LeanClient
	addr  string
	nc    net.Conn
	hl    *httphead.Limiter // under br: bounds each response head
	br    *bufio.Reader
	bw    *bufio.Writer
	abort func() // closes nc; made once per connection, so arming it costs no closure per exchange

	// Owned by the exchange that holds the connection, or by the pool while idle.
	stop func() bool // disarms the exchange's context.AfterFunc(abort)
	keep bool        // the peer did not ask to close the connection after this response
	used time.Time   // when it was last returned to the pool
}

// LeanIdleTimeout is how long an idle pooled connection is kept (the owner's internal listener keeps them longer).
const LeanIdleTimeout = 60 * time.Second

// maxIdlePerPeer bounds the idle connections kept per peer.
const maxIdlePerPeer = 256

// errStaleConn reports a pooled connection that the peer had closed before the request reached it.
var errStaleConn = errors.New("pooled connection closed by the peer")

// RoundTrip sends req, signed for subject (Signer.Sign) and bodiless, to the peer listening at addr (host:port) and
// returns the final response head, its body unread, with the connection that carries it. Interim answers (1xx
// other than 101) are dropped: the client of a bodiless request has no use for 100 Continue, and 103 Early Hints
// are only hints. Once ctx ends the connection is closed, which ends the body's reads too. Dial failures are
// returned as the dialer gives them (a *net.OpError with Op "dial").
//
// The caller reads the body, then calls Release; it must not close the body after a failed read (Close would
// drain what is left): Release(false) closes the connection instead.
func (c *LeanClient) RoundTrip(ctx context.Context, addr string, req *http.Request, subject string) (*http.Response, *LeanConn, error) {
	var err error
	for attempt := 0; attempt < 2; attempt++ {
		var conn *LeanConn
		if attempt == 0 {
			conn = c.get(addr)
		} else {
			c.Signer.Sign(req, subject)
		}
		reused := conn != nil
		if conn == nil {
			if conn, err = c.dial(ctx, addr); err != nil {
				return nil, nil, err
			}
		}
		var resp *http.Response
		if resp, err = c.exchange(ctx, conn, req); err == nil {
			return resp, conn, nil
		}
		if !reused || !errors.Is(err, errStaleConn) || ctx.Err() != nil {
			break
		}
	}
	return nil, nil, err
}

// Buffered reports the bytes of the response already read from the peer and not yet consumed: none means that
// the peer has sent nothing more for the moment, the time to flush what was copied.
func (c *LeanConn) Buffered() int { return c.br.Buffered() }

// Release ends the exchange on c. With reuse (the body was read to its end and closed) c goes back to the pool,
// unless the peer asked to close it or the exchange's context ended; otherwise it is closed. Neither c nor the
// response may be used afterwards.
func (c *LeanConn) Release(reuse bool) {
	if c.stop() && reuse && c.keep {
		c.owner.put(c)
		return
	}
	_ = c.nc.Close()
}

// dial opens a connection to a peer's internal listener.
func (c *LeanClient) dial(ctx context.Context, addr string) (*LeanConn, error) {
	d := net.Dialer{Timeout: 2 * time.Second, KeepAlive: 15 * time.Second}
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	hl := &httphead.Limiter{R: nc}
	return &LeanConn{owner: c, addr: addr, nc: nc, hl: hl, br: bufio.NewReaderSize(hl, 16<<10),
		bw: bufio.NewWriterSize(nc, 4<<10), abort: func() { _ = nc.Close() }}, nil
}

// exchange writes req on conn and reads the final response head, with conn's abort armed on ctx. On failure conn
// is closed. It returns errStaleConn when the peer closed the connection before answering anything.
func (c *LeanClient) exchange(ctx context.Context, conn *LeanConn, req *http.Request) (*http.Response, error) {
	conn.stop = context.AfterFunc(ctx, conn.abort)
	if c.HeadTimeout > 0 {
		_ = conn.nc.SetDeadline(time.Now().Add(c.HeadTimeout))
	}
	resp, err := c.readResponse(conn, req)
	if err != nil {
		conn.stop()
		_ = conn.nc.Close()
		return nil, err
	}
	if c.HeadTimeout > 0 {
		_ = conn.nc.SetDeadline(time.Time{})
	}
	conn.keep = !resp.Close
	return resp, nil
}

// readResponse writes req on conn and reads heads up to the final one.
func (c *LeanClient) readResponse(conn *LeanConn, req *http.Request) (*http.Response, error) {
	if err := req.Write(conn.bw); err != nil {
		return nil, errors.Join(errStaleConn, err) // nothing reached the peer
	}
	if err := conn.bw.Flush(); err != nil {
		return nil, errors.Join(errStaleConn, err)
	}
	conn.hl.Limit(c.MaxHeadBytes) // for every head up to the final one, peeks included
	for {
		if _, err := conn.br.Peek(1); err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) || errors.Is(err, syscall.ECONNRESET) {
				return nil, errStaleConn
			}
			return nil, err
		}
		resp, err := httphead.ReadResponse(conn.br, conn.hl, req, c.MaxHeadBytes)
		if err != nil {
			return nil, err
		}
		if resp.StatusCode >= 200 || resp.StatusCode == http.StatusSwitchingProtocols {
			return resp, nil
		}
	}
}

// get returns the most recently used idle connection to addr, or nil. (Prune closes those idle too long; one the
// peer closed meanwhile is found stale by RoundTrip.)
func (c *LeanClient) get(addr string) *LeanConn {
	c.mu.Lock()
	defer c.mu.Unlock()
	cs := c.idle[addr]
	if len(cs) == 0 {
		return nil
	}
	conn := cs[len(cs)-1]
	cs[len(cs)-1] = nil
	c.idle[addr] = cs[:len(cs)-1]
	return conn
}

// put returns conn to the pool (or closes it when the pool for its peer is full).
func (c *LeanClient) put(conn *LeanConn) {
	conn.used = time.Now()
	c.mu.Lock()
	full := len(c.idle[conn.addr]) >= maxIdlePerPeer
	if !full {
		if c.idle == nil {
			c.idle = make(map[string][]*LeanConn)
		}
		c.idle[conn.addr] = append(c.idle[conn.addr], conn)
	}
	c.mu.Unlock()
	if full {
		_ = conn.nc.Close()
	}
}

// Prune closes the connections idle for longer than LeanIdleTimeout (those of a peer that went away included).
func (c *LeanClient) Prune() {
	closeAll(c.take(func(conn *LeanConn) bool { return time.Since(conn.used) >= LeanIdleTimeout }))
}

// CloseIdle closes every idle connection.
func (c *LeanClient) CloseIdle() {
	closeAll(c.take(func(*LeanConn) bool { return true }))
}

// take removes from the pool the connections for which drop is true and returns them, to be closed without the
// lock held.
func (c *LeanClient) take(drop func(*LeanConn) bool) []*LeanConn {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []*LeanConn
	for addr, cs := range c.idle {
		keep := cs[:0]
		for _, conn := range cs {
			if drop(conn) {
				out = append(out, conn)
			} else {
				keep = append(keep, conn)
			}
		}
		clear(cs[len(keep):])
		if len(keep) == 0 {
			delete(c.idle, addr)
		} else {
			c.idle[addr] = keep
		}
	}
	return out
}

func closeAll(cs []*LeanConn) {
	for _, conn := range cs {
		_ = conn.nc.Close()
	}
}
