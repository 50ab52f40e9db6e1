package bench

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// dialParallel is how many tunnel upgrades the bench has in flight at once when it opens many.
const dialParallel = 64

// sourcesFor returns how many loopback source addresses n connections need (one address has about 28k ephemeral
// ports).
func sourcesFor(n int) int { return n/20_000 + 1 }

// relayFootprint is the relay's memory and goroutines at one moment.
type relayFootprint struct {
	rssKiB     int64
	heapBytes  float64 // in use (spans)
	liveBytes  float64 // allocated; live after a forced GC
	freeBytes  float64 // freed heap the runtime still holds (part of RSS)
	stackBytes float64 // goroutine stacks
	goroutines float64
	haveProc   bool
	haveMetric bool
	forcedGC   bool
}

// footprint reads the relay's RSS (when it is our child) and, after a forced collection where the relay serves
// pprof, its heap and goroutines from /metrics.
func footprint(ctx context.Context, r *relayProc) relayFootprint {
	var f relayFootprint
	if r.Metrics != "" {
		sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		if s, err := scrapeMetrics(sctx, r.Metrics, true); err == nil {
			f.heapBytes, f.liveBytes, f.goroutines, f.haveMetric, f.forcedGC = s.HeapInuse, s.HeapAlloc, s.Goroutines, true, s.ForcedGC
			f.freeBytes, f.stackBytes = s.HeapFree, s.StackInuse
		}
		cancel()
	}
	if pid := r.PID(); pid != 0 {
		if st, err := readProc(pid); err == nil {
			f.rssKiB, f.haveProc = st.RSSKiB, true
		}
	}
	return f
}

// idlePingWindow is how long the idle scenario samples the relay's goroutines: one default ping interval
// (tunnel.DefaultPingInterval) and a second, so every tunnel is pinged once within it.
const (
	idlePingWindow  = 11 * time.Second
	peakSampleEvery = 10 * time.Millisecond
)

// peakGoroutines samples the relay's go_goroutines every peakSampleEvery for d and returns the highest value and
// how many samples it took (0 if the relay serves no metrics).
func peakGoroutines(ctx context.Context, r *relayProc, d time.Duration) (peak float64, samples int) {
	if r.Metrics == "" {
		return 0, 0
	}
	end := time.Now().Add(d)
	for time.Now().Before(end) && ctx.Err() == nil {
		sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		v, err := scrapeValue(sctx, r.Metrics, "go_goroutines")
		cancel()
		if err == nil {
			samples++
			peak = max(peak, v)
		}
		settle(ctx, peakSampleEvery)
	}
	return peak, samples
}

// settle waits d unless ctx ends first (letting the relay's background work quiesce before a measurement).
func settle(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// routeClient calls hosts through the relay.
func (e *env) routeClient() *http.Client {
	return &http.Client{
		Timeout:   10 * time.Second,
		Transport: &http.Transport{MaxIdleConnsPerHost: 128, MaxConnsPerHost: 128, DisableCompression: true},
	}
}

// routeOnce calls host id through the relay and reports whether the host answered.
func (e *env) routeOnce(ctx context.Context, c *http.Client, r *relayProc, id string) (bool, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, r.Base+hostPath(id, "/ping"), nil)
	if err != nil {
		return false, err
	}
	req.Header.Set("Authorization", "Bearer "+e.clientToken)
	resp, err := c.Do(req)
	if err != nil {
		return false, err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return false, fmt.Errorf("status %d", resp.StatusCode)
	}
	return true, nil
}

// routeUntil calls host id until it answers or timeout passes.
func (e *env) routeUntil(ctx context.Context, c *http.Client, r *relayProc, id string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var last error
	wait := time.Millisecond
	for {
		ok, err := e.routeOnce(ctx, c, r, id)
		if ok {
			return nil
		}
		last = err
		// Poll fast first: a tunnel is normally routable within milliseconds of its upgrade.
		if !sleepCtx(ctx, wait) {
			return fmt.Errorf("route to %s: %w", id, last)
		}
		wait = min(2*wait, 50*time.Millisecond)
	}
}

// runIdle holds N idle tunnels and measures the relay's footprint per tunnel.
func runIdle(ctx context.Context, e *env) (*Result, error) {
	res := &Result{}
	n := e.cfg.IdleTunnels
	r, err := e.startRelay(ctx, "relay-idle")
	if err != nil {
		return res, err
	}
	defer r.stop()
	settle(ctx, 500*time.Millisecond)
	before := footprint(ctx, r)
	selfBefore, _ := readProc(os.Getpid())

	f := newFleet(r, e.hostToken, sourcesFor(n))
	defer f.close()
	m := e.newMeter(r, nil)
	m.begin()
	t0 := time.Now()
	step := max(n/10, 1)
	ts, err := f.dialMany(ctx, "idle", n, dialParallel, func(d int) {
		if d%step == 0 {
			e.progressf("idle: %d/%d tunnels (%.0f/s)", d, n, float64(d)/time.Since(t0).Seconds())
		}
	})
	connect := time.Since(t0)
	m.end()
	if err != nil {
		return res, fmt.Errorf("open %d tunnels: %w", n, err)
	}
	defer abortAll(ts)
	c := e.routeClient()
	defer c.CloseIdleConnections()
	for _, i := range []int{0, n - 1} {
		if err := e.routeUntil(ctx, c, r, ts[i].id, 10*time.Second); err != nil {
			return res, fmt.Errorf("tunnels open but not routable: %w", err)
		}
	}
	settle(ctx, max(time.Second, e.cfg.Duration))
	peak, samples := peakGoroutines(ctx, r, idlePingWindow)
	after := footprint(ctx, r)
	e.heapProfile(ctx, r, "tunnels")
	selfAfter, _ := readProc(os.Getpid())
	e.progressf("idle: %d tunnels in %.1f s; relay RSS %.1f → %.1f MiB, heap %.1f → %.1f MiB, goroutines %.0f → %.0f",
		n, connect.Seconds(), float64(before.rssKiB)/1024, float64(after.rssKiB)/1024,
		before.heapBytes/(1<<20), after.heapBytes/(1<<20), before.goroutines, after.goroutines)

	nf := float64(n)
	if before.haveProc && after.haveProc {
		per := float64(after.rssKiB-before.rssKiB) / nf
		res.add(row(fmt.Sprintf("RSS, %d tunnels", n), "MiB", float64(after.rssKiB)/1024, float64(before.rssKiB)/1024, false).withBaseline("0 tunnels"),
			row("RSS per tunnel", "KiB", per, 0, false).withGoal("≤ 20 KiB", per <= 20))
		if before.haveMetric && after.haveMetric {
			// RSS less the freed heap the runtime keeps: what the tunnels hold. RSS itself also carries whatever
			// the runtime has not yet returned after the connect burst, which differs from run to run.
			net := (float64(after.rssKiB)*1024 - after.freeBytes - (float64(before.rssKiB)*1024 - before.freeBytes)) / nf / 1024
			// No ratio: the runtime may have returned every freed byte, before or after (a zero is a measurement).
			res.add(row(fmt.Sprintf("freed heap not yet returned, %d tunnels", n), "MiB", after.freeBytes/(1<<20), 0, false),
				row("RSS per tunnel less freed heap", "KiB", net, 0, false),
				row("stacks per tunnel", "KiB", (after.stackBytes-before.stackBytes)/1024/nf, 0, false))
			res.notef("RSS per tunnel swings with freed heap the Go runtime keeps after the connect burst (up to the GC goal, 2× live heap); \"RSS per tunnel less freed heap\" is the figure to compare between runs")
		}
	} else {
		res.notef("relay RSS unavailable (not a child of the bench)")
	}
	if before.haveMetric && after.haveMetric {
		res.add(row(fmt.Sprintf("heap in use, %d tunnels", n), "MiB", after.heapBytes/(1<<20), before.heapBytes/(1<<20), false).withBaseline("0 tunnels"),
			row("heap per tunnel", "KiB", (after.heapBytes-before.heapBytes)/1024/nf, 0, false),
			row(fmt.Sprintf("goroutines, %d tunnels", n), "", after.goroutines, before.goroutines, false).withBaseline("0 tunnels"),
			row("goroutines per tunnel", "", (after.goroutines-before.goroutines)/nf, 0, false))
		if samples > 0 {
			// The relay's pings: the goroutines (each with a timer) that wait for answers, over a ping interval.
			res.add(row("goroutines at peak over a ping interval, per tunnel", "", (peak-before.goroutines)/nf, 0, false))
			res.notef("peak of %d goroutine samples over %v, every %v", samples, idlePingWindow, peakSampleEvery)
		}
		if !after.forcedGC {
			res.notef("the relay does not serve /debug/pprof on its metrics listener: heap figures are without a forced GC")
		}
	} else {
		res.notef("relay /metrics unavailable: no heap or goroutine figures")
	}
	res.add(row("connect rate", "tunnels/s", nf/connect.Seconds(), 0, true))
	res.notef("bench process RSS per simulated host: %.1f KiB", float64(selfAfter.RSSKiB-selfBefore.RSSKiB)/nf)
	m.fill(ctx, res)
	return res, nil
}

// Churn shape: parallel workers, each reusing a few host ids.
const (
	churnParallel     = 16
	churnIDsPerWorker = 4
)

// runChurn connects and disconnects hosts M times (each routed once) and compares the relay before and after.
func runChurn(ctx context.Context, e *env) (*Result, error) {
	res := &Result{}
	m := e.cfg.ChurnCycles
	r, err := e.startRelay(ctx, "relay-churn")
	if err != nil {
		return res, err
	}
	defer r.stop()
	f := newFleet(r, e.hostToken, sourcesFor(dialParallel))
	defer f.close()
	c := e.routeClient()
	defer c.CloseIdleConnections()

	cycle := func(ctx context.Context, id string) error {
		t, err := f.dial(ctx, id)
		if err != nil {
			return err
		}
		defer t.close()
		return e.routeUntil(ctx, c, r, id, 10*time.Second)
	}
	runCycles := func(prefix string, count int) (int, error) {
		var (
			next, done atomic.Int64
			mu         sync.Mutex
			first      error
			wg         sync.WaitGroup
		)
		step := max(count/10, 1)
		for w := range min(churnParallel, count) {
			wg.Go(func() {
				for k := 0; ctx.Err() == nil; k++ {
					i := int(next.Add(1) - 1)
					if i >= count {
						return
					}
					// Each worker cycles through its own few ids, so the relay sees the same bounded set of host
					// ids again and again: state it keeps per id by design (presence, last-seen times) is in the
					// baseline, and only per-connection leftovers can grow.
					id := "churn-" + strconv.Itoa(w) + "-" + strconv.Itoa(k%churnIDsPerWorker)
					if err := cycle(ctx, id); err != nil {
						mu.Lock()
						if first == nil {
							first = err
						}
						mu.Unlock()
						return
					}
					if d := done.Add(1); prefix == "churn" && d%int64(step) == 0 {
						e.progressf("churn: %d/%d cycles", d, count)
					}
				}
			})
		}
		wg.Wait()
		return int(done.Load()), first
	}
	// Warm up: every id once (and lazily built state) before the baseline.
	if _, err := runCycles("warmup", churnParallel*churnIDsPerWorker); err != nil {
		return res, fmt.Errorf("warm-up: %w", err)
	}
	settle(ctx, time.Second)
	before := footprint(ctx, r)
	e.heapProfile(ctx, r, "before")
	meter := e.newMeter(r, nil)
	meter.begin()
	// Let the relay finish closing; poll until goroutines are back within 5 % or a bound passes.
	quiesce := func() relayFootprint {
		deadline := time.Now().Add(max(5*time.Second, 2*e.cfg.Duration))
		for {
			settle(ctx, 250*time.Millisecond)
			f := footprint(ctx, r)
			if !f.haveMetric || f.goroutines <= before.goroutines*1.05 || time.Now().After(deadline) || ctx.Err() != nil {
				return f
			}
		}
	}
	// Two halves with a reading between them: growth that only the first half shows is warm-up (pools, maps
	// reaching their working size); growth in the second half as well is a leak.
	t0 := time.Now()
	done, err := runCycles("churn", m/2)
	elapsed := time.Since(t0)
	meter.end()
	if err != nil {
		return res, fmt.Errorf("after %d cycles: %w", done, err)
	}
	mid := quiesce()
	e.heapProfile(ctx, r, "mid")
	meter.begin()
	t1 := time.Now()
	done2, err := runCycles("churn", m-m/2)
	elapsed += time.Since(t1)
	meter.end()
	done += done2
	if err != nil {
		return res, fmt.Errorf("after %d cycles: %w", done, err)
	}
	after := quiesce()
	e.heapProfile(ctx, r, "after")
	e.progressf("churn: %d cycles in %.1f s; goroutines %.0f → %.0f, live heap %.2f → %.2f MiB, RSS %.1f → %.1f MiB",
		done, elapsed.Seconds(), before.goroutines, after.goroutines, before.liveBytes/(1<<20), after.liveBytes/(1<<20),
		float64(before.rssKiB)/1024, float64(after.rssKiB)/1024)
	if before.haveMetric && after.haveMetric {
		g := row("goroutines", "", after.goroutines, before.goroutines, false).withBaseline("before")
		live := row("live heap", "MiB", after.liveBytes/(1<<20), before.liveBytes/(1<<20), false).withBaseline("before")
		res.add(g.withGoal("within 5 %", g.Ratio <= 1.05), live.withGoal("within 5 %", live.Ratio <= 1.05),
			row("live heap, second half", "MiB", after.liveBytes/(1<<20), mid.liveBytes/(1<<20), false).withBaseline("half-way"),
			row("heap in use (spans)", "MiB", after.heapBytes/(1<<20), before.heapBytes/(1<<20), false).withBaseline("before"))
		if !after.forcedGC {
			res.notef("the relay does not serve /debug/pprof on its metrics listener: heap compared without a forced GC")
		}
	} else {
		res.notef("relay /metrics unavailable: no goroutine or heap figures")
	}
	if before.haveProc && after.haveProc {
		res.add(row("RSS", "MiB", float64(after.rssKiB)/1024, float64(before.rssKiB)/1024, false).withBaseline("before"))
	}
	res.add(row("cycle rate", "cycles/s", float64(done)/elapsed.Seconds(), 0, true))
	res.notef("a cycle is: open a tunnel, route one request to it, close it; %d in parallel over %d host ids; baseline after one warm-up cycle per id",
		churnParallel, churnParallel*churnIDsPerWorker)
	meter.fill(ctx, res)
	return res, nil
}
