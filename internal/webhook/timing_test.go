package webhook

import (
	"context"
	"errors"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/switchboard-relay/switchboard/internal/presence"
)

// These tests run the sender's time-driven logic in synctest bubbles: fake time, no wall-clock waits.

// failingCursors is a Memory store whose Cursor fails, recording when it was asked.
type failingCursors struct {
	*Memory
	mu sync.Mutex
	at []time.Time
}

func (f *failingCursors) Cursor(context.Context, string) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.at = append(f.at, time.Now())
	return "", errors.New("store unavailable")
}

func (f *failingCursors) times() []time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]time.Time(nil), f.at...)
}

// TestDeliveryBackoff: while the cursor store fails, the leader retries with waits that double from MinBackoff to
// MaxBackoff, each drawn from its upper half; Close ends the retrying.
func TestDeliveryBackoff(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const minB, maxB = time.Second, 16 * time.Second
		store := &failingCursors{Memory: NewMemory()}
		s, err := New(Config{Log: presence.NewMemory(presence.MemoryConfig{}), URLs: []string{"http://hooks.example/h"},
			Secret: []byte("k"), Store: store, MinBackoff: minB, MaxBackoff: maxB})
		if err != nil {
			t.Fatal(err)
		}
		ran := make(chan error, 1)
		go func() { ran <- s.Run(context.Background()) }()
		time.Sleep(3 * time.Minute)
		synctest.Wait()
		at := store.times()
		if len(at) < 8 {
			t.Fatalf("%d attempts in three minutes, want at least 8", len(at))
		}
		ceil := minB
		for i := 1; i < len(at); i++ {
			if gap := at[i].Sub(at[i-1]); gap < ceil/2 || gap > ceil {
				t.Fatalf("wait %d: %v, want in [%v, %v]", i, gap, ceil/2, ceil)
			}
			ceil = min(2*ceil, maxB)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		if err := <-ran; err != nil {
			t.Fatalf("Run: %v", err)
		}
	})
}

// TestMemoryLeaseExpires: the memory store's lease is held for its ttl, then another holder may take it.
func TestMemoryLeaseExpires(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := context.Background()
		m := NewMemory()
		if ok, _ := m.Lead(ctx, "a", 10*time.Second); !ok {
			t.Fatal("a cannot take a free lease")
		}
		time.Sleep(10*time.Second - time.Millisecond)
		if ok, _ := m.Lead(ctx, "b", time.Minute); ok {
			t.Fatal("b took the lease before it expired")
		}
		time.Sleep(time.Millisecond)
		if ok, _ := m.Lead(ctx, "b", time.Minute); !ok {
			t.Fatal("b cannot take the expired lease")
		}
		if err := m.SetCursor(ctx, "a", "u", "1"); !errors.Is(err, ErrNotLeader) {
			t.Fatalf("a sets a cursor after its lease expired: %v", err)
		}
	})
}
