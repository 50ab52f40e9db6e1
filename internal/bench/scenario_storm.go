package bench

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Storm reconnect policy of the simulated hosts: the agent's documented default (full jitter, 1 s → 5 s).
const (
	stormBackoffBase = time.Second
	stormBackoffCap  = 5 * time.Second
)

// storm tracks when each simulated host became routable in each phase (0: first connect, 1: after the restart).
type storm struct {
	e      *env
	f      *fleet
	r      *relayProc
	client *http.Client
	sem    chan struct{} // bounds concurrent upgrades, like dialParallel

	phase  atomic.Int32
	starts [2]time.Time // phase start, written before the phase begins
	at     [2][]atomic.Int64
	count  [2]atomic.Int64
}

// runStorm connects N hosts, restarts the relay, and measures how long until each is routable again.
func runStorm(ctx context.Context, e *env) (*Result, error) {
	res := &Result{}
	if e.cfg.Relay != "" {
		res.notef("skipped: storm restarts the relay, which needs a relay the bench started")
		return res, nil
	}
	n := e.cfg.StormHosts
	r, err := e.startRelay(ctx, "relay-storm")
	if err != nil {
		return res, err
	}
	defer func() { r.stop() }()
	s := &storm{e: e, r: r, f: newFleet(r, e.hostToken, sourcesFor(n)), client: e.routeClient(), sem: make(chan struct{}, 4*dialParallel)}
	defer s.f.close()
	defer s.client.CloseIdleConnections()
	s.at[0] = make([]atomic.Int64, n)
	s.at[1] = make([]atomic.Int64, n)

	hctx, stopHosts := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() {
		stopHosts()
		wg.Wait()
	}()
	limit := 30*time.Second + time.Duration(n)*2*time.Millisecond
	s.starts[0] = time.Now()
	for i := range n {
		wg.Go(func() { s.host(hctx, i) })
	}
	if err := s.wait(ctx, 0, n, limit); err != nil {
		return res, fmt.Errorf("first connect: %w", err)
	}
	cold := s.durations(0)
	e.progressf("storm: %d hosts routable in %.2f s from a cold start", n, cold.Quantile(1).Seconds())

	// Crash the relay and start it again on the same sockets, which the bench holds as a supervisor would.
	meter := e.newMeter(r, nil)
	s.phase.Store(1)
	s.starts[1] = time.Now()
	r.proc.kill()
	tDown := time.Now()
	if err := e.launchRelay(ctx, r, "relay-storm-2"); err != nil {
		return res, err
	}
	restart := time.Since(tDown)
	meter.pids["relay"] = r.PID()
	meter.begin()
	if err := s.wait(ctx, 1, n, limit); err != nil {
		return res, fmt.Errorf("after restart: %w", err)
	}
	meter.end()
	again := s.durations(1)
	e.progressf("storm: %d hosts routable again %.2f s after the crash (relay back in %.2f s)", n, again.Quantile(1).Seconds(), restart.Seconds())
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	maxRow := row("all routable (max)", "ms", ms(again.Quantile(1)), ms(cold.Quantile(1)), false).withBaseline("cold start")
	res.add(
		row("routable p50", "ms", ms(again.Quantile(0.5)), ms(cold.Quantile(0.5)), false).withBaseline("cold start"),
		row("routable p99", "ms", ms(again.Quantile(0.99)), ms(cold.Quantile(0.99)), false).withBaseline("cold start"),
		maxRow.withGoal("≤ 5000 ms at 10k", maxRow.Relay <= 5000),
		row("relay restart", "ms", ms(restart), 0, false),
	)
	res.notef("relay killed (SIGKILL) and restarted on the same listening sockets, held by the bench as a socket-activating supervisor would (connections meanwhile wait in the backlog); times from the kill; hosts reconnect with full jitter %s → %s; at most %d upgrades in flight",
		stormBackoffBase, stormBackoffCap, cap(s.sem))
	meter.fill(ctx, res)
	return res, nil
}

// host is one simulated host's life: connect, become routable, wait for the tunnel to drop, back off, repeat.
func (s *storm) host(ctx context.Context, i int) {
	id := "storm-" + strconv.Itoa(i)
	b := backoff{base: stormBackoffBase, cap: stormBackoffCap}
	for ctx.Err() == nil {
		t, err := s.dial(ctx, id)
		if err != nil {
			if !sleepCtx(ctx, b.next()) {
				return
			}
			continue
		}
		b.attempt = 0
		phase := s.phase.Load()
		if err := s.e.routeUntil(ctx, s.client, s.r, id, 10*time.Second); err == nil {
			if s.at[phase][i].CompareAndSwap(0, int64(time.Since(s.starts[phase]))) {
				s.count[phase].Add(1)
			}
		}
		select {
		case <-ctx.Done():
			t.abort() // teardown after the measurement: no close handshake for thousands of tunnels
			return
		case <-t.done:
		}
		if !sleepCtx(ctx, b.next()) {
			return
		}
	}
}

// dial opens one tunnel, holding a slot of the upgrade semaphore.
func (s *storm) dial(ctx context.Context, id string) (*simTunnel, error) {
	select {
	case s.sem <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	defer func() { <-s.sem }()
	return s.f.dial(ctx, id)
}

// wait polls until n hosts are routable in phase, or limit passes.
func (s *storm) wait(ctx context.Context, phase, n int, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	last := int64(-1)
	for {
		c := s.count[phase].Load()
		if c >= int64(n) {
			return nil
		}
		if c != last && c > 0 && (c*10/int64(n)) != (last*10/int64(n)) {
			s.e.progressf("storm: %d/%d routable after %.2f s", c, n, time.Since(s.starts[phase]).Seconds())
		}
		last = c
		if time.Now().After(deadline) {
			return fmt.Errorf("only %d of %d hosts routable after %s", c, n, limit)
		}
		if !sleepCtx(ctx, 20*time.Millisecond) {
			return errors.New("interrupted")
		}
	}
}

// durations returns the per-host times to routable of a phase.
func (s *storm) durations(phase int) *Histogram {
	h := &Histogram{}
	for i := range s.at[phase] {
		if v := s.at[phase][i].Load(); v > 0 {
			h.Record(time.Duration(v))
		}
	}
	return h
}

// sleepCtx waits d and reports whether ctx is still alive.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
