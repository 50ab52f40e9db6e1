package agent_test

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/switchboard-relay/switchboard/agent"
)

// TestReconnectBackoff runs the agent's retry loop in a synctest bubble: while every attempt fails (here its token
// source fails, so no network is involved), the waits between attempts grow from MinBackoff to MaxBackoff, each
// drawn from [MinBackoff/2, ceiling]; Close ends the loop during a wait.
func TestReconnectBackoff(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const minB, maxB = time.Second, 8 * time.Second
		var mu sync.Mutex
		var at []time.Time
		ln, err := agent.Listen(context.Background(), agent.Config{
			Relays: []string{"http://relay.invalid"}, HostID: "h", MinBackoff: minB, MaxBackoff: maxB,
			Logger: slog.New(slog.DiscardHandler),
			TokenSource: func(context.Context) (string, error) {
				mu.Lock()
				defer mu.Unlock()
				at = append(at, time.Now())
				return "", errors.New("token service unavailable")
			},
		})
		if err != nil {
			t.Fatal(err)
		}
		time.Sleep(2 * time.Minute)
		synctest.Wait()
		mu.Lock()
		got := append([]time.Time(nil), at...)
		mu.Unlock()
		if len(got) < 10 {
			t.Fatalf("%d attempts in two minutes, want at least 10", len(got))
		}
		ceil := minB
		for i := 1; i < len(got); i++ {
			gap := got[i].Sub(got[i-1])
			if gap < minB/2 || gap > ceil {
				t.Fatalf("wait %d: %v, want in [%v, %v]", i, gap, minB/2, ceil)
			}
			ceil = min(2*ceil, maxB)
		}
		// Past the first few, waits are uniform in [0.5 s, 8 s] (mean 4.25 s): 60 attempts would mean a 2 s mean,
		// five standard deviations below — the backoff is not growing.
		if n := len(got); n > 60 {
			t.Fatalf("%d attempts in two minutes: the waits do not grow", n)
		}
		closed := make(chan error, 1)
		go func() { closed <- ln.Close() }()
		synctest.Wait()
		select {
		case err := <-closed:
			if err != nil {
				t.Fatalf("Close: %v", err)
			}
		default:
			t.Fatal("Close did not end the retry loop during its wait")
		}
		mu.Lock()
		n := len(at)
		mu.Unlock()
		time.Sleep(time.Hour)
		synctest.Wait()
		mu.Lock()
		defer mu.Unlock()
		if len(at) != n {
			t.Fatalf("%d attempts after Close", len(at)-n)
		}
	})
}
