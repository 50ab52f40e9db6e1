package relay

import (
	"context"
	"errors"
	"testing"
	"testing/synctest"
	"time"

	"github.com/switchboard-relay/switchboard/internal/auth"
	"github.com/switchboard-relay/switchboard/internal/directory"
	"github.com/switchboard-relay/switchboard/internal/presence"
)

// These tests run the relay's time-driven logic in synctest bubbles: fake time, no wall-clock waits.

// newBubbleServer returns a Server on a memory directory with no network, for a synctest bubble; it is closed
// before the bubble ends.
func newBubbleServer(t *testing.T, mutate func(*Config)) *Server {
	t.Helper()
	cfg := Config{Verifier: auth.AllowAll()}
	if mutate != nil {
		mutate(&cfg)
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// TestBackoffJitter: each wait lies in the upper half of a ceiling that doubles from first up to limit.
func TestBackoffJitter(t *testing.T) {
	b := backoff{first: 100 * time.Millisecond, limit: time.Second}
	ceil := []time.Duration{100, 200, 400, 800, 1000, 1000}
	for i, c := range ceil {
		c *= time.Millisecond
		if d := b.next(); d < c/2 || d >= c {
			t.Fatalf("wait %d: %v, want in [%v, %v)", i+1, d, c/2, c)
		}
	}
	seen := map[time.Duration]bool{}
	for range 20 {
		seen[jitter(time.Second)] = true
	}
	if len(seen) < 2 {
		t.Fatal("jitter gave the same wait 20 times")
	}
}

// TestRetryBacksOff: an owed offline whose directory stays unreachable is retried with growing, jittered waits,
// and given up after offlineRetry; Close ends the retrying at once.
func TestRetryBacksOff(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := newBubbleServer(t, nil)
		var at []time.Time
		start := time.Now()
		errDown := errors.New("directory down")
		err := s.retry(func(context.Context) error { at = append(at, time.Now()); return errDown })
		if !errors.Is(err, errDown) {
			t.Fatalf("retry: %v, want the last error", err)
		}
		if took := time.Since(start); took < offlineRetry || took > offlineRetry+offlineRetryLimit {
			t.Fatalf("gave up after %v, want %v plus at most one wait", took, offlineRetry)
		}
		ceil := offlineRetryFirst
		for i := 1; i < len(at); i++ {
			if gap := at[i].Sub(at[i-1]); gap < ceil/2 || gap >= ceil {
				t.Fatalf("wait %d: %v, want in [%v, %v)", i, gap, ceil/2, ceil)
			}
			ceil = min(2*ceil, offlineRetryLimit)
		}
		if n := len(at); n > 30 {
			t.Fatalf("%d attempts in %v: not backing off", n, offlineRetry)
		}

		done := make(chan error, 1)
		go func() { done <- s.retry(func(context.Context) error { return errDown }) }()
		time.Sleep(time.Minute)
		synctest.Wait()
		select {
		case <-done:
			t.Fatal("retry ended before offlineRetry without a Close")
		default:
		}
		_ = s.Close()
		synctest.Wait()
		select {
		case <-done:
		default:
			t.Fatal("retry still waiting after Close")
		}
	})
}

// TestFlapWindow: a host's offline is announced once the flap window has passed after its release, not before.
func TestFlapWindow(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const flap = 5 * time.Second
		s := newBubbleServer(t, func(c *Config) { c.FlapWindow = flap })
		ctx := context.Background()
		e, _, err := s.dir.Claim(ctx, "h", s.cfg.Replica, directory.Metadata{})
		if err != nil {
			t.Fatal(err)
		}
		s.releaseEntry("h", e.Epoch)
		offline := func() bool {
			evs, err := s.events.Read(ctx, "", 10, 0)
			if err != nil {
				t.Fatal(err)
			}
			for _, ev := range evs {
				if ev.Kind == presence.Offline && ev.HostID == "h" && ev.Epoch == e.Epoch {
					return true
				}
			}
			return false
		}
		time.Sleep(flap - time.Millisecond)
		synctest.Wait()
		if offline() {
			t.Fatal("offline announced within the flap window")
		}
		time.Sleep(time.Millisecond)
		synctest.Wait()
		if !offline() {
			t.Fatal("offline not announced once the flap window passed")
		}
	})
}

// TestRetireWaitsForExchanges: a retiring tunnel admits nothing new and retire returns once its last exchange
// ended, however long that takes; retire gives up when its context ends.
func TestRetireWaitsForExchanges(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		tc := &tunnelConn{done: make(chan struct{})}
		if _, ok := tc.admit(); !ok {
			t.Fatal("a live tunnel refused an exchange")
		}
		retired := make(chan error, 1)
		go func() { retired <- tc.retire(context.Background()) }()
		time.Sleep(time.Hour)
		synctest.Wait()
		select {
		case err := <-retired:
			t.Fatalf("retire returned %v with an exchange in flight", err)
		default:
		}
		if _, ok := tc.admit(); ok {
			t.Fatal("a retiring tunnel admitted an exchange")
		}
		tc.active.Add(-1)
		time.Sleep(time.Second)
		synctest.Wait()
		select {
		case err := <-retired:
			if err != nil {
				t.Fatalf("retire: %v", err)
			}
		default:
			t.Fatal("retire still waiting after the last exchange ended")
		}

		busy := &tunnelConn{done: make(chan struct{})}
		busy.admit()
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := busy.retire(ctx); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("retire past its context: %v", err)
		}
	})
}

// TestRunSweepsLimiters: Run forgets the upgrade limiters' addresses not seen for ten minutes, on its own tick.
func TestRunSweepsLimiters(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := newBubbleServer(t, nil)
		ctx, cancel := context.WithCancel(context.Background())
		ran := make(chan error, 1)
		go func() { ran <- s.Run(ctx) }()
		s.limiter.allow("192.0.2.1", time.Now())
		s.authFails.allow("192.0.2.1", time.Now())
		held := func(l *ipLimiter) int {
			l.mu.Lock()
			defer l.mu.Unlock()
			return len(l.limiters)
		}
		time.Sleep(10 * time.Minute)
		synctest.Wait()
		if held(s.limiter) != 1 || held(s.authFails) != 1 {
			t.Fatal("an address was forgotten within ten minutes")
		}
		time.Sleep(2 * time.Minute)
		synctest.Wait()
		if n, m := held(s.limiter), held(s.authFails); n != 0 || m != 0 {
			t.Fatalf("after twelve minutes the limiters hold %d and %d addresses, want 0", n, m)
		}
		cancel()
		if err := <-ran; err != nil {
			t.Fatalf("Run: %v", err)
		}
	})
}
