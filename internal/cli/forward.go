package cli

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/switchboard-relay/switchboard/internal/listen"
	"github.com/switchboard-relay/switchboard/internal/tcpstream"
)

// ForwardCmd is `switchboard forward --listen ADDR HOST SERVICE`.
type ForwardCmd struct {
	Listen  string `help:"Local address to accept connections on, e.g. 127.0.0.1:5433 (or fd:N, an inherited socket)." required:"" env:"SWITCHBOARD_FORWARD_LISTEN"`
	Host    string `arg:"" help:"Host id."`
	Service string `arg:"" help:"Name of a TCP service the host publishes (switchboard host --tcp NAME=ADDR)."`
	tcpClientFlags

	ready func(net.Addr) `kong:"-"` // tests: called with the bound address once it accepts
}

// Run accepts connections until ctx ends; each one gets its own stream through the relay. A refused stream
// (offline host, unknown service, refused token) closes that connection and is logged; the listener goes on.
func (c *ForwardCmd) Run(ctx context.Context, g *Globals) error {
	if err := c.check(c.Host, c.Service); err != nil {
		return &exitError{code: 2, err: err}
	}
	opts, err := c.dialOptions()
	if err != nil {
		return &exitError{code: 2, err: err}
	}
	ln, err := listen.Open(c.Listen)
	if err != nil {
		return &exitError{code: 1, err: fmt.Errorf("--listen %s: %w", c.Listen, err)}
	}
	log := g.logger().With("host_id", c.Host, "service", c.Service)
	log.Info("forwarding", "listen", ln.Addr().String())
	if c.ready != nil {
		c.ready(ln.Addr())
	}
	f := &forwarder{cmd: c, opts: opts, conns: make(map[net.Conn]struct{})}
	stop := context.AfterFunc(ctx, func() { _ = ln.Close() })
	defer stop()
	var wg sync.WaitGroup // one per accepted connection
	var acceptErr error
	for {
		nc, err := ln.Accept()
		if err != nil {
			if ctx.Err() == nil && !errors.Is(err, net.ErrClosed) {
				acceptErr = err
			}
			break
		}
		wg.Go(func() { f.serve(ctx, nc, log) })
	}
	f.closeAll()
	wg.Wait()
	if acceptErr != nil {
		return &exitError{code: 1, err: fmt.Errorf("accept: %w", acceptErr)}
	}
	return nil
}

type forwarder struct {
	cmd  *ForwardCmd
	opts tcpstream.DialOptions

	mu    sync.Mutex
	conns map[net.Conn]struct{} // guarded by mu: connections in flight, closed when the command stops
}

// serve carries one local connection through the relay.
func (f *forwarder) serve(ctx context.Context, nc net.Conn, log *slog.Logger) {
	f.mu.Lock()
	f.conns[nc] = struct{}{}
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		delete(f.conns, nc)
		f.mu.Unlock()
		_ = nc.Close()
	}()
	dctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	ws, err := tcpstream.Dial(dctx, f.cmd.Relay, f.cmd.Host, f.cmd.Service, f.cmd.Token, f.opts)
	cancel()
	if err != nil {
		log.Warn("stream refused", "client", nc.RemoteAddr().String(), "err", err)
		return
	}
	local, ok := nc.(tcpstream.Local)
	if !ok {
		local = halfless{nc}
	}
	start := time.Now()
	res, err := tcpstream.Bridge(ctx, ws, local)
	attrs := []any{"client", nc.RemoteAddr().String(), "sent", res.Sent, "received", res.Received,
		"duration", time.Since(start).Round(time.Millisecond).String()}
	if err != nil && ctx.Err() == nil {
		log.Warn("stream aborted", append(attrs, "err", err)...)
		return
	}
	log.Info("stream ended", attrs...)
}

// closeAll ends every connection in flight.
func (f *forwarder) closeAll() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for nc := range f.conns {
		_ = nc.Close()
	}
}

// halfless is a connection without half-close (an inherited socket of another kind): CloseWrite closes it.
type halfless struct{ net.Conn }

func (h halfless) CloseWrite() error { return h.Close() }
