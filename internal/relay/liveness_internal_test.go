package relay

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// TestPingScheduleSpreads runs the ping loop's schedule in a synctest bubble (with a recording ping: yamux's
// pooled timers must not enter a bubble): each tunnel is pinged once per interval, the tunnels in pingSlices groups
// spread evenly over the interval rather than all at the same instant, and a tunnel whose ping is still waiting for
// its answer is not pinged again. That a ping unanswered for two intervals aborts its tunnel is yamux's
// ConnectionWriteTimeout (tunnel.Options.YamuxConfig), so a blackholed tunnel goes within three intervals.
func TestPingScheduleSpreads(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const interval = 10 * time.Second
		s := newBubbleServer(t, func(c *Config) { c.PingInterval = interval })
		const n = 40
		tcs := make([]*tunnelConn, n)
		for i := range n {
			tcs[i] = &tunnelConn{hostID: fmt.Sprint("h", i), log: s.log, done: make(chan struct{})}
			s.mu.Lock()
			s.settingUp++ // as reserveSlot would
			s.mu.Unlock()
			if _, ok := s.register(tcs[i]); !ok {
				t.Fatal("register refused a tunnel")
			}
		}
		t.Cleanup(func() { // they have no session for Close to close
			s.mu.Lock()
			clear(s.tunnels)
			s.mu.Unlock()
		})
		stuck := tcs[0] // its first ping is never answered
		var mu sync.Mutex
		pings := map[*tunnelConn][]time.Time{}
		start := time.Now()
		ping := func(tc *tunnelConn) {
			mu.Lock()
			pings[tc] = append(pings[tc], time.Now())
			mu.Unlock()
			if tc != stuck {
				tc.pinging.Store(false)
			}
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { defer close(done); s.pingEvery(ctx, ping) }()

		time.Sleep(3 * interval)
		synctest.Wait()
		cancel()
		<-done
		mu.Lock()
		defer mu.Unlock()
		instants := map[time.Duration]int{}
		for _, tc := range tcs {
			got := pings[tc]
			want := 3
			if tc == stuck {
				want = 1
			}
			if len(got) != want {
				t.Fatalf("%s pinged %d times in three intervals, want %d", tc.hostID, len(got), want)
			}
			for i := 1; i < len(got); i++ {
				if gap := got[i].Sub(got[i-1]); gap != interval {
					t.Fatalf("%s pinged %v apart, want every %v", tc.hostID, gap, interval)
				}
			}
			instants[got[0].Sub(start)]++
		}
		if len(instants) != pingSlices {
			t.Fatalf("first pings at %d instants, want %d (one per slice): %v", len(instants), pingSlices, instants)
		}
		for at, k := range instants {
			if k != n/pingSlices || at <= 0 || at > interval {
				t.Fatalf("%d first pings at %v, want %d per slice within the interval: %v", k, at, n/pingSlices, instants)
			}
		}
	})
}
