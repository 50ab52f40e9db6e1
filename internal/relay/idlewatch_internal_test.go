package relay

import (
	"errors"
	"net"
	"testing"
	"time"

	"github.com/hashicorp/yamux"
)

// TestIdleWatch: expire times out exactly the watched streams idle for their timeout, a stream no longer watched is
// left alone, and a timed-out stream's blocked read wakes with a timeout.
func TestIdleWatch(t *testing.T) {
	a, b := net.Pipe()
	cfg := yamux.DefaultConfig()
	cfg.EnableKeepAlive = false
	cfg.LogOutput = nil
	cfg.Logger = nopLogger{}
	client, err := yamux.Client(a, cfg)
	if err != nil {
		t.Fatal(err)
	}
	server, err := yamux.Server(b, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = client.Close(); _ = server.Close() })
	conns := make([]*idleConn, 4)
	for i := range conns {
		st, err := client.OpenStream()
		if err != nil {
			t.Fatal(err)
		}
		conns[i] = &idleConn{Stream: st, idle: time.Minute}
	}
	var w idleWatch
	for _, c := range conns {
		w.add(c)
	}
	w.remove(conns[1]) // from the middle: the last takes its slot
	w.remove(conns[3]) // the last, which moved
	now := time.Now()
	conns[0].moved.Store(now.Add(-2 * time.Minute).UnixNano()) // idle for longer than its timeout
	conns[1].moved.Store(now.Add(-2 * time.Minute).UnixNano()) // as idle, but no longer watched
	done := make(chan error, 1)
	go func() { _, err := conns[0].Read(make([]byte, 1)); done <- err }()
	w.expire(now)
	if err := <-done; !isTimeout(err) || !errors.Is(err, yamux.ErrTimeout) {
		t.Fatalf("the idle stream's read: %v, want a timeout", err)
	}
	for i, want := range []bool{true, false, false, false} {
		if got := conns[i].timedOut.Load(); got != want {
			t.Fatalf("stream %d timed out: %v, want %v", i, got, want)
		}
	}
	if len(w.conns) != 2 || w.conns[0] != conns[0] || w.conns[1] != conns[2] || conns[2].slot != 1 {
		t.Fatalf("watched %v, want streams 0 and 2 in slots 0 and 1", w.conns)
	}
}

// nopLogger silences yamux.
type nopLogger struct{}

func (nopLogger) Print(...any)          {}
func (nopLogger) Printf(string, ...any) {}
func (nopLogger) Println(...any)        {}
