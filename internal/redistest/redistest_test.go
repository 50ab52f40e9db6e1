package redistest

import (
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestStartRestartStop(t *testing.T) {
	s := StartServer(t)
	if err := ping(s.Addr); err != nil {
		t.Fatalf("ping after start: %v", err)
	}
	s.Restart()
	if err := ping(s.Addr); err != nil {
		t.Fatalf("ping after restart: %v", err)
	}
	s.Stop()
	s.Stop()
	if err := ping(s.Addr); err == nil {
		t.Fatalf("ping after stop succeeded")
	}
}

// TestStartOnTakenPort: a server whose port another Redis took is not mistaken for that one, which answers there.
func TestStartOnTakenPort(t *testing.T) {
	taker := StartServer(t)
	taker.mu.Lock()
	port := taker.port
	taker.mu.Unlock()
	s := &Server{t: t, bin: taker.bin, dir: t.TempDir(), port: port}
	if err := s.start(); err == nil {
		s.Stop()
		t.Fatalf("started on port %d, which another Redis holds", port)
	}
	if err := ping(taker.Addr); err != nil {
		t.Fatalf("the other Redis after the attempt: %v", err)
	}
}

func TestStart(t *testing.T) {
	addr, stop := Start(t)
	defer stop()
	if err := ping(addr); err != nil {
		t.Fatalf("ping: %v", err)
	}
}

func TestStartCluster(t *testing.T) {
	addrs, stop := StartCluster(t, 3)
	defer stop()
	for _, a := range addrs {
		if err := ping(a); err != nil {
			t.Fatalf("ping %s: %v", a, err)
		}
	}
}

func TestSentinelGroupFailover(t *testing.T) {
	g := StartSentinelGroup(t)
	old := g.Primary()
	if _, err := g.Do(old, "set", "k", "v"); err != nil {
		t.Fatalf("set on the primary: %v", err)
	}
	if _, err := g.Do(old, "wait", "1", "0"); err != nil {
		t.Fatalf("wait for the replica: %v", err)
	}
	if got := g.KillPrimary(); got != old {
		t.Fatalf("killed %s, want %s", got, old)
	}
	now := g.WaitFailover(old)
	if now == old || g.Node(now) == nil {
		t.Fatalf("primary after failover %s (was %s)", now, old)
	}
	if v, err := g.Do(now, "get", "k"); err != nil || v != "v" {
		t.Fatalf("get on the promoted replica = %q, %v; want the replicated value", v, err)
	}
}
