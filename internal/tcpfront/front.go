// Package tcpfront is a round-robin TCP load balancer for tests and the bench: it spreads connections over a
// rotation of backends, as a platform's load balancer spreads them over relay replicas. A backend leaves the
// rotation when its drain begins and joins it again when it is back; connections already open stay where they are,
// as they would behind a real layer-4 balancer.
package tcpfront

import (
	"io"
	"net"
	"sync"
)

// Front accepts on a loopback port and pipes each connection to the next backend of its rotation.
type Front struct {
	ln    net.Listener
	conns sync.WaitGroup

	// Guarded by mu.
	mu       sync.Mutex
	backends []string // host:port in rotation
	next     int
	open     map[net.Conn]struct{}
	closed   bool
}

// Listen starts a front on a free port of 127.0.0.1 with an empty rotation; a connection that arrives while the
// rotation is empty is closed at once.
func Listen() (*Front, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	f := &Front{ln: ln, open: make(map[net.Conn]struct{})}
	f.conns.Go(f.accept)
	return f, nil
}

// Addr is the front's host:port.
func (f *Front) Addr() string { return f.ln.Addr().String() }

// URL is the front's base URL, "http://host:port".
func (f *Front) URL() string { return "http://" + f.Addr() }

// Set replaces the rotation with backends (host:port each).
func (f *Front) Set(backends ...string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.backends = append(f.backends[:0], backends...)
}

// Close stops accepting, cuts every open connection and waits for the pipes to end.
func (f *Front) Close() error {
	err := f.ln.Close()
	f.mu.Lock()
	f.closed = true
	for c := range f.open {
		_ = c.Close()
	}
	f.mu.Unlock()
	f.conns.Wait()
	return err
}

func (f *Front) pick() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.backends) == 0 {
		return ""
	}
	f.next++
	return f.backends[f.next%len(f.backends)]
}

// track adds or removes open connections; it reports false (and adds nothing) once the front is closed.
func (f *Front) track(add bool, cs ...net.Conn) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if add && f.closed {
		return false
	}
	for _, c := range cs {
		if add {
			f.open[c] = struct{}{}
		} else {
			delete(f.open, c)
		}
	}
	return true
}

func (f *Front) accept() {
	for {
		c, err := f.ln.Accept()
		if err != nil {
			return
		}
		f.conns.Go(func() { f.pipe(c) })
	}
}

func (f *Front) pipe(c net.Conn) {
	defer c.Close()
	backend := f.pick()
	if backend == "" {
		return
	}
	b, err := net.Dial("tcp", backend)
	if err != nil {
		return
	}
	defer b.Close()
	if !f.track(true, c, b) {
		return
	}
	defer f.track(false, c, b)
	done := make(chan struct{}, 2)
	go func() { _, _ = io.Copy(b, c); done <- struct{}{} }()
	go func() { _, _ = io.Copy(c, b); done <- struct{}{} }()
	<-done // either side ending ends both, as a layer-4 balancer's idle or reset handling would
	_ = c.Close()
	_ = b.Close()
	<-done
}
