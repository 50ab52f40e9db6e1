package tcpfront

import (
	"bufio"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// echoName accepts connections and answers each with name and a newline, then echoes what it reads.
func echoName(t *testing.T, name string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_, _ = io.WriteString(c, name+"\n")
				_, _ = io.Copy(c, c)
			}()
		}
	}()
	t.Cleanup(func() { ln.Close(); <-done })
	return ln.Addr().String()
}

// hello connects through the front and returns the first line the backend sends ("" when the front closes).
func hello(t *testing.T, f *Front) (string, net.Conn) {
	t.Helper()
	c, err := net.Dial("tcp", f.Addr())
	if err != nil {
		t.Fatal(err)
	}
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	line, _ := bufio.NewReader(c).ReadString('\n')
	return strings.TrimSpace(line), c
}

func TestRoundRobinAndRotation(t *testing.T) {
	a, b := echoName(t, "a"), echoName(t, "b")
	f, err := Listen()
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()

	if got, c := hello(t, f); got != "" {
		t.Fatalf("empty rotation: connection reached %q, want it closed", got)
	} else {
		c.Close()
	}

	f.Set(a, b)
	seen := map[string]int{}
	var open []net.Conn
	for range 6 {
		got, c := hello(t, f)
		seen[got]++
		open = append(open, c)
	}
	if seen["a"] != 3 || seen["b"] != 3 {
		t.Fatalf("6 connections over a and b went %v, want 3 each", seen)
	}

	f.Set(b) // a leaves the rotation: new connections go to b, open ones stay
	for range 3 {
		got, c := hello(t, f)
		if got != "b" {
			t.Fatalf("after a left the rotation a connection reached %q", got)
		}
		c.Close()
	}
	for _, c := range open {
		if _, err := io.WriteString(c, "ping\n"); err != nil {
			t.Fatalf("an open connection broke when the rotation changed: %v", err)
		}
	}

	// Close cuts the open connections.
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	for _, c := range open {
		buf := make([]byte, 64)
		for {
			_, err := c.Read(buf) // the echoed ping, then the cut
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				t.Fatal("Close left a piped connection open")
			}
			if err != nil {
				break
			}
		}
		c.Close()
	}
}
