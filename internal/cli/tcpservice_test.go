package cli_test

import (
	"io"
	"net"
	"sync"
	"testing"
)

// startTCPService runs a loopback TCP server that hands each connection to serve (which may half-close by
// returning: the connection is then closed), and returns its address. Goroutines are waited for in t.Cleanup.
func startTCPService(t *testing.T, serve func(io.ReadWriter)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() { defer c.Close(); serve(c) })
		}
	})
	t.Cleanup(func() { _ = ln.Close(); wg.Wait() })
	return ln.Addr().String()
}

// dialOK reports whether addr accepts a TCP connection now.
func dialOK(addr string) bool {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return false
	}
	_ = c.Close()
	return true
}
