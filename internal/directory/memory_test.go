package directory

import (
	"testing"
	"testing/synctest"
	"time"
)

func TestMemoryContract(t *testing.T) {
	runContract(t, func(t *testing.T) Directory {
		m := NewMemory()
		t.Cleanup(func() { m.Close() })
		return m
	})
}

// TestMemoryTimes checks the recorded times against a fake clock.
func TestMemoryTimes(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := NewMemory()
		defer m.Close()
		start := time.Now()
		e := mustClaim(t, m, "host-a", "r1", Metadata{})
		if !e.ConnectedAt.Equal(start) {
			t.Fatalf("connected at %v, want %v", e.ConnectedAt, start)
		}
		time.Sleep(90 * time.Second)
		if ok, err := m.Release(t.Context(), "host-a", e.Epoch); err != nil || !ok {
			t.Fatalf("release: %v, %v", ok, err)
		}
		recs, err := m.Records(t.Context(), []string{"host-a"})
		if err != nil {
			t.Fatalf("records: %v", err)
		}
		if got, want := recs[0].DisconnectedAt.Sub(recs[0].ConnectedAt), 90*time.Second; got != want {
			t.Fatalf("connected for %v, want %v", got, want)
		}
	})
}

// TestMemoryInjectedClock checks that the clock field is honoured.
func TestMemoryInjectedClock(t *testing.T) {
	at := time.Date(2030, 1, 2, 3, 4, 5, 6, time.UTC)
	m := NewMemory()
	m.now = func() time.Time { return at }
	e := mustClaim(t, m, "host-a", "r1", Metadata{})
	if !e.ConnectedAt.Equal(at) {
		t.Fatalf("connected at %v, want %v", e.ConnectedAt, at)
	}
}
