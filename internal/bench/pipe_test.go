package bench

import (
	"bytes"
	"context"
	"io"
	"net"
	"testing"
)

// TestPipeCarriesBothWaysWithHalfClose: bytes pass both ways intact through two chained pipes, splicing or
// copying, a client's half-close reaches the target (which answers only after reading to EOF), and ServePipe
// returns when its context ends, cutting what is still open.
func TestPipeCarriesBothWaysWithHalfClose(t *testing.T) {
	for _, copying := range []bool{false, true} {
		t.Run(map[bool]string{false: "splice", true: "copying"}[copying], func(t *testing.T) {
			testPipeCarriesBothWays(t, copying)
		})
	}
}

func testPipeCarriesBothWays(t *testing.T, copying bool) {
	target, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer target.Close()
	go func() {
		for {
			c, err := target.Accept()
			if err != nil {
				return
			}
			go func() { // reads to EOF, then echoes everything: it answers only once the half-close arrived
				defer c.Close()
				b, _ := io.ReadAll(c)
				_, _ = c.Write(b)
			}()
		}
	}()
	ctx, cancel := context.WithCancel(context.Background())
	var addrs [2]string
	done := make(chan error, 2)
	next := target.Addr().String()
	for i := 1; i >= 0; i-- {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addrs[i] = ln.Addr().String()
		to := next
		go func() { done <- servePipe(ctx, ln, to, copying) }()
		next = addrs[i]
	}
	c, err := net.Dial("tcp", addrs[0])
	if err != nil {
		t.Fatal(err)
	}
	payload := bytes.Repeat([]byte("0123456789abcdef"), 64<<10) // 1 MiB
	go func() {
		_, _ = c.Write(payload)
		_ = c.(*net.TCPConn).CloseWrite()
	}()
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, payload) {
		t.Fatalf("got %d bytes back, want the %d sent", len(got), len(payload))
	}
	held, err := net.Dial("tcp", addrs[0])
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	cancel()
	for range 2 {
		if err := <-done; err != nil {
			t.Fatalf("ServePipe: %v", err)
		}
	}
	if _, err := held.Read(make([]byte, 1)); err == nil {
		t.Fatal("a connection still open when the pipe stopped was not cut")
	}
}
