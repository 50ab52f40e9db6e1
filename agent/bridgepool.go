package agent

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// upstreamConn is one keep-alive connection to the upstream.
type upstreamConn struct {
	nc     net.Conn // what the bridge reads and writes (TLS over tcp for https://)
	tcp    net.Conn // the TCP connection under nc, for the liveness check
	br     *bufio.Reader
	secure bool
	idle   time.Time   // Guarded by the pool's mu while pooled.
	closed atomic.Bool // set by close, which the watcher may call from its goroutine
}

func (c *upstreamConn) close() {
	if c.closed.CompareAndSwap(false, true) {
		_ = c.nc.Close()
	}
}

// upstreamPool keeps idle upstream connections, most recently used last: at most bridgeMaxIdle, none idle longer
// than bridgeIdleTimeout (checked when the pool is used: no timer goroutine).
type upstreamPool struct {
	mu     sync.Mutex
	idle   []*upstreamConn // Guarded by mu.
	closed bool            // Guarded by mu.
}

// get returns an idle connection (reused) or dials a new one. With check (a request that cannot be sent twice: a
// streamed body, or a method that is not replayable), a pooled connection is first checked for a close from the
// upstream or bytes nobody asked for.
func (p *upstreamPool) get(b *Bridge, check bool) (c *upstreamConn, reused bool, err error) {
	now := time.Now()
	var stale []*upstreamConn
	p.mu.Lock()
	for len(p.idle) > 0 {
		last := p.idle[len(p.idle)-1]
		p.idle = p.idle[:len(p.idle)-1]
		if now.Sub(last.idle) > bridgeIdleTimeout || (check && !stillOpen(last)) {
			stale = append(stale, last)
			continue
		}
		c = last
		break
	}
	p.mu.Unlock()
	for _, s := range stale {
		s.close()
	}
	if c != nil {
		return c, true, nil
	}
	c, err = b.dial()
	return c, false, err
}

// put returns c to the pool, or closes it when the pool is full or closed.
func (p *upstreamPool) put(c *upstreamConn) {
	c.idle = time.Now()
	var drop []*upstreamConn
	p.mu.Lock()
	if p.closed || len(p.idle) >= bridgeMaxIdle {
		drop = append(drop, c)
	} else {
		p.idle = append(p.idle, c)
	}
	// The oldest are first: drop those idle too long.
	n := 0
	for n < len(p.idle) && c.idle.Sub(p.idle[n].idle) > bridgeIdleTimeout {
		n++
	}
	drop = append(drop, p.idle[:n]...)
	p.idle = append(p.idle[:0], p.idle[n:]...)
	p.mu.Unlock()
	for _, d := range drop {
		d.close()
	}
}

func (p *upstreamPool) close() {
	p.mu.Lock()
	idle := p.idle
	p.idle, p.closed = nil, true
	p.mu.Unlock()
	for _, c := range idle {
		c.close()
	}
}

// dial connects to the upstream (TLS for https://).
func (b *Bridge) dial() (*upstreamConn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), bridgeDialTimeout)
	defer cancel()
	nc, err := b.dialer.DialContext(ctx, "tcp", b.addr)
	if err != nil {
		return nil, err
	}
	c := &upstreamConn{nc: nc, tcp: nc}
	if b.tls != nil {
		tc := tls.Client(nc, b.tls)
		if err := tc.HandshakeContext(ctx); err != nil {
			_ = nc.Close()
			return nil, fmt.Errorf("tls: %w", err)
		}
		c.nc, c.secure = tc, true
	}
	c.br = bufio.NewReaderSize(c.nc, 16<<10)
	return c, nil
}

// stillOpen reports whether the upstream has not closed an idle connection: a non-blocking peek at the socket
// (where the platform offers one) finds no end of stream, nor, on plain TCP, bytes nobody asked for.
func stillOpen(c *upstreamConn) bool {
	sc, ok := c.tcp.(syscall.Conn)
	if !ok {
		return true
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	open := true
	if err := rc.Read(func(fd uintptr) bool {
		open = peekOpen(fd, c.secure)
		return true
	}); err != nil {
		return false
	}
	return open
}

// isReset reports a connection reset or broken pipe: the upstream closed a pooled connection as it was used.
func isReset(err error) bool {
	return errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}
