package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"github.com/switchboard-relay/switchboard/internal/listen"
)

// The pipe is the physical floor of any relay with two processes in the path: two chained child processes that
// only copy bytes both ways, one TCP connection per client connection, no parsing and no multiplexing. Every
// scenario that measures a direct figure measures the pipe too, in the same run, so a report says how far the
// relay is from what two extra processes cost on this machine (relay ÷ pipe) as well as from no relay at all.
//
// io.Copy between two TCP connections moves the bytes with splice(2) on Linux: they never enter the pipe's memory.
// No relay that reads what it carries (one that frames it into a multiplexed tunnel, or parses HTTP) can do that,
// so the bulk scenario also measures a copying pipe: the same chain, but every byte read into a buffer and written
// from it, the floor of a relay that must look at its bytes.

// pipeBufSize is each copy's buffer: large enough that bulk transfers are not limited by it.
const pipeBufSize = 256 << 10

// ServePipe accepts on addr (a listen address, or fd:N for a socket the parent passed down) and carries every
// connection to target, copying bytes both ways until both directions end, until ctx ends. Run calls it when
// Config.PipeServe is set: that is how the bench starts the two pipe processes.
// With copying set, every byte passes through a buffer in the process instead of splice(2).
func ServePipe(ctx context.Context, addr, target string, copying bool) error {
	if target == "" {
		return errors.New("pipe: no target address")
	}
	ln, err := listen.Open(addr)
	if err != nil {
		return fmt.Errorf("pipe: %w", err)
	}
	return servePipe(ctx, ln, target, copying)
}

// servePipe is ServePipe on an open listener, which it closes.
func servePipe(ctx context.Context, ln net.Listener, target string, copying bool) error {
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		conns = make(map[net.Conn]struct{})
	)
	track := func(c net.Conn, add bool) {
		mu.Lock()
		defer mu.Unlock()
		if add {
			conns[c] = struct{}{}
		} else {
			delete(conns, c)
		}
	}
	stop := context.AfterFunc(ctx, func() {
		_ = ln.Close()
		mu.Lock()
		defer mu.Unlock()
		for c := range conns {
			_ = c.Close()
		}
	})
	defer stop()
	var acceptErr error
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() == nil {
				acceptErr = fmt.Errorf("pipe: accept: %w", err)
				_ = ln.Close()
			}
			break
		}
		track(c, true)
		wg.Go(func() {
			defer track(c, false)
			pipeConn(c, target, track, copying)
		})
	}
	wg.Wait()
	return acceptErr
}

// pipeConn carries one client connection to a new connection to target. A direction that ends is half-closed on
// the other side, so request bodies and responses finish as they would without the pipe.
func pipeConn(c net.Conn, target string, track func(net.Conn, bool), copying bool) {
	defer c.Close()
	d := net.Dialer{Timeout: 10 * time.Second}
	u, err := d.Dial("tcp", target)
	if err != nil {
		return
	}
	track(u, true)
	defer track(u, false)
	defer u.Close()
	var wg sync.WaitGroup
	wg.Go(func() { copyHalf(u, c, copying) })
	copyHalf(c, u, copying)
	wg.Wait()
}

// copyHalf copies src to dst, then half-closes dst for writing (or closes both if dst cannot half-close). Unless
// copying is set, io.CopyBuffer hands the copy to dst's ReadFrom, which splices.
func copyHalf(dst, src net.Conn, copying bool) {
	buf := make([]byte, pipeBufSize)
	var (
		w io.Writer = dst
		r io.Reader = src
	)
	if copying { // hide ReadFrom and WriteTo: read into buf, write from it
		w, r = struct{ io.Writer }{dst}, struct{ io.Reader }{src}
	}
	_, err := io.CopyBuffer(w, r, buf)
	if cw, ok := dst.(interface{ CloseWrite() error }); ok && err == nil {
		_ = cw.CloseWrite()
		return
	}
	_ = dst.Close()
	_ = src.Close()
}

// pipeChain is the two pipe processes between the generator and the origin.
type pipeChain struct {
	// Addr is where the generator connects: the first pipe.
	Addr  string
	procs [2]*child
	socks [2]*socket
}

// startPipe starts pipe 2 (to the origin) and pipe 1 (to pipe 2) as children of this binary and waits until a GET
// through both reaches the origin. copying makes them copy through their memory instead of splicing.
func (e *env) startPipe(ctx context.Context, copying bool) (*pipeChain, error) {
	p := &pipeChain{}
	target := e.origin.Addr
	for i := 1; i >= 0; i-- {
		s, err := newSocket()
		if err != nil {
			p.stop()
			return nil, err
		}
		p.socks[i] = s
		name, args := fmt.Sprintf("pipe-%d", i+1), []string{"bench", "--pipe-serve", fdArg(0), "--pipe-to", target}
		if copying {
			name, args = "copying-"+name, append(args, "--pipe-copy")
		}
		c, err := startChild(e.exe, name, e.logDir, args, nil, s.file)
		if err != nil {
			p.stop()
			return nil, err
		}
		p.procs[i] = c
		target = s.Addr
	}
	p.Addr = p.socks[0].Addr
	if err := waitReady(ctx, "http://"+p.Addr+"/small", p.procs[0], 10*time.Second, nil); err != nil {
		p.stop()
		return nil, fmt.Errorf("start pipe: %w", err)
	}
	return p, nil
}

// stop ends both pipe processes and releases their sockets.
func (p *pipeChain) stop() {
	for i := range p.procs {
		if p.procs[i] != nil {
			p.procs[i].stop(2 * time.Second)
		}
		if p.socks[i] != nil {
			p.socks[i].close()
		}
	}
}

// PIDs are the two pipe processes.
func (p *pipeChain) PIDs() []int {
	var out []int
	for _, c := range p.procs {
		if c != nil {
			out = append(out, c.PID())
		}
	}
	return out
}
