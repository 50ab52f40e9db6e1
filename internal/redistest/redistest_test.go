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
