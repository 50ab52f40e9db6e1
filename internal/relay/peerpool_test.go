package relay

import (
	"net"
	"testing"
	"time"
)

// TestPeerPool: connections come back last in, first out; one idle for longer than peerIdleTimeout is neither
// handed out nor kept by prune; closeIdle closes the rest.
func TestPeerPool(t *testing.T) {
	var p peerPool
	mk := func() (*peerConn, net.Conn) {
		a, b := net.Pipe()
		t.Cleanup(func() { a.Close(); b.Close() })
		return &peerConn{nc: a}, b
	}
	if p.get("x") != nil {
		t.Fatal("empty pool handed out a connection")
	}
	c1, far1 := mk()
	c2, _ := mk()
	p.put("x", c1)
	p.put("x", c2)
	if got := p.get("x"); got != c2 {
		t.Fatal("pool did not hand out the most recently returned connection")
	}
	c1.used = time.Now().Add(-2 * peerIdleTimeout)
	p.prune()
	if got := p.get("x"); got != nil {
		t.Fatal("a connection idle past the timeout was handed out")
	}
	_ = far1.SetReadDeadline(time.Now().Add(time.Second))
	if _, err := far1.Read(make([]byte, 1)); err == nil || isTimeout(err) {
		t.Fatalf("pruned connection not closed: read on its far end gave %v", err)
	}
	c3, far3 := mk()
	p.put("y", c3)
	p.closeIdle()
	_ = far3.SetReadDeadline(time.Now().Add(time.Second))
	if _, err := far3.Read(make([]byte, 1)); err == nil || isTimeout(err) {
		t.Fatalf("closeIdle left a connection open: read on its far end gave %v", err)
	}
}
