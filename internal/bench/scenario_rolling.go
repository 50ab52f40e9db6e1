package bench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/switchboard-relay/switchboard/agent"
	"github.com/switchboard-relay/switchboard/internal/tcpfront"
)

// rollingReplicas is the size of the cluster the rolling scenario restarts.
const rollingReplicas = 3

// rollingWorkers is the number of clients that keep calling hosts through the front during the roll.
const rollingWorkers = 16

// runRolling restarts every replica of a three-replica cluster in turn — out of the front's rotation, SIGTERM,
// wait for the drain to finish and the process to exit, start it again on the same sockets (held by the bench) under the same replica
// id, back into the rotation — while RollingHosts agents (the real agent library, in the bench process) stay
// connected through a round-robin TCP front and clients keep calling random hosts through the same front. The
// goal is that not one request fails. The baseline for throughput and latency is the same load on the same
// cluster before the roll.
func runRolling(ctx context.Context, e *env) (*Result, error) {
	res := &Result{}
	redisAddr, stopRedis, err := e.clusterRedis(ctx, res, "rolling restarts replicas")
	if redisAddr == "" {
		return res, err
	}
	defer stopRedis()
	front, err := tcpfront.Listen()
	if err != nil {
		return res, err
	}
	defer front.Close()

	// With the default jitter a drain spreads its notices over 2 s; the CI size keeps the roll short.
	jitter := "2s"
	if e.cfg.Tiny {
		jitter = "300ms"
	}
	replicas := make([]*relayProc, rollingReplicas)
	defer func() {
		for _, r := range replicas {
			if r != nil {
				r.stop()
			}
		}
	}()
	for i := range replicas {
		replicas[i], err = e.startReplica(ctx, "relay-roll-"+strconv.Itoa(i), redisAddr, "R"+strconv.Itoa(i),
			"--drain-jitter", jitter, "--miss-wait", "5s")
		if err != nil {
			return res, err
		}
	}
	inRotation := func(skip int) {
		var addrs []string
		for i, r := range replicas {
			if i != skip {
				addrs = append(addrs, r.Addr)
			}
		}
		front.Set(addrs...)
	}
	inRotation(-1)
	viaFront := &relayProc{Addr: front.Addr(), Base: front.URL()}

	n := e.cfg.RollingHosts
	t0 := time.Now()
	hosts, err := e.startHosts(ctx, viaFront, n)
	if err != nil {
		return res, err
	}
	defer hosts.stop()
	if err := e.routeAll(ctx, viaFront, hosts.ids, 60*time.Second); err != nil {
		return res, fmt.Errorf("hosts connecting: %w", err)
	}
	e.progressf("rolling: %d hosts on %d replicas behind a round-robin front, routable after %.2f s", n, rollingReplicas, time.Since(t0).Seconds())

	wctx, stopWatch := context.WithCancel(ctx)
	watch := e.watchPresence(wctx, viaFront.Base)
	defer func() { stopWatch(); <-watch.done }()
	load := newRollLoad(e, viaFront, hosts.ids)
	defer load.client.CloseIdleConnections()
	lctx, stopLoad := context.WithCancel(ctx)
	var lwg sync.WaitGroup
	defer func() { stopLoad(); lwg.Wait() }()
	for w := range rollingWorkers {
		lwg.Go(func() { load.worker(lctx, w) })
	}
	if !sleepCtx(ctx, e.cfg.Duration) {
		return res, ctx.Err()
	}

	// The roll.
	load.phase.Store(1)
	meter := e.newMeter(nil, nil) // the bench process's own CPU during the roll: agents, clients and front
	delete(meter.pids, "origin")  // the hosts answer themselves; the origin is idle here
	meter.begin()
	rollStart := time.Now()
	var (
		held          float64
		drains, exits Histogram
		restarts      Histogram
	)
	for i, r := range replicas {
		h, _ := scrapeValue(ctx, r.Metrics, "switchboard_tunnels")
		held += h
		inRotation(i) // the load balancer takes the replica out as its drain begins
		sleepCtx(ctx, 50*time.Millisecond)
		d, x, err := drainProcess(ctx, r)
		if err != nil {
			return res, fmt.Errorf("drain R%d: %w", i, err)
		}
		drains.Record(d)
		exits.Record(x)
		t1 := time.Now()
		if err := e.launchRelay(ctx, r, "relay-roll-"+strconv.Itoa(i)+"-restarted"); err != nil {
			return res, err
		}
		inRotation(-1)
		// A restarted replica holds no tunnel; every host must be reachable through it (forwarded to its owner).
		if err := e.routeAll(ctx, r, hosts.ids, 30*time.Second); err != nil {
			return res, fmt.Errorf("after restarting R%d: %w", i, err)
		}
		restarts.Record(time.Since(t1))
		e.progressf("rolling: R%d held %.0f tunnels, all gone after %.2f s, exited after %.2f s; restarted and reached every host in %.2f s",
			i, h, d.Seconds(), x.Seconds(), time.Since(t1).Seconds())
	}
	rollTime := time.Since(rollStart)
	meter.end()
	load.phase.Store(2) // requests after the roll are counted for failures but not in either figure
	sleepCtx(ctx, 200*time.Millisecond)
	stopLoad()
	lwg.Wait()
	sleepCtx(ctx, 500*time.Millisecond) // the last events reach the watcher
	stopWatch()
	<-watch.done
	events := watch.snapshot()
	moved := float64(events["moved"])
	flaps := events["online"] + events["offline"]

	// Every host is on exactly one tunnel once the roll has settled.
	tunnels, err := settleTunnels(ctx, replicas, n, 10*time.Second)
	if err != nil {
		res.notef("%v", err)
	}

	steady, roll := load.merged(0), load.merged(1)
	sent, failed := load.sent.Load(), load.failed.Load()
	e.progressf("rolling: %d requests, %d failed; roll took %.2f s; %.0f tunnels after it for %d hosts", sent, failed, rollTime.Seconds(), tunnels, n)
	ss, rs := steady.hist.Summary(), roll.hist.Summary()
	failRow := row("requests failed", "req", float64(failed), 0, false).withGoal("0", failed == 0)
	s := func(d time.Duration) float64 { return d.Seconds() }
	res.add(
		failRow,
		row("requests sent", "req", float64(sent), 0, true),
		row("rps during the roll", "req/s", roll.rps(), steady.rps(), true).withBaseline("before"),
		row("p50 during the roll", "µs", rs.P50, ss.P50, false).withBaseline("before"),
		row("p99 during the roll", "µs", rs.P99, ss.P99, false).withBaseline("before"),
		row("moved events", "events", moved, held, true).withBaseline("tunnels held at SIGTERM"),
		row("online/offline events", "events", float64(flaps), 0, false).withGoal("0 (a drain move is neither)", flaps == 0),
		row("drain until no tunnel left (max)", "s", s(drains.Quantile(1)), 0, false),
		row("drain until exit (max)", "s", s(exits.Quantile(1)), 0, false),
		row("drain per moved tunnel", "ms", 1000*s(drains.Mean())*float64(drains.Count())/max(moved, 1), 0, false),
		row("restart until every host reachable via it (max)", "s", s(restarts.Quantile(1)), 0, false),
		row("whole roll", "s", s(rollTime), 0, false),
	)
	res.notef("%d replicas sharing a Redis directory, %d hosts (agent library) and %d clients behind one round-robin TCP front; drain jitter %s; each replica leaves the rotation, gets SIGTERM, exits, restarts on the same listening sockets (held by the bench)",
		rollingReplicas, n, rollingWorkers, jitter)
	meter.fill(ctx, res)
	for kind, c := range events {
		if kind != "moved" && kind != "online" && kind != "offline" {
			res.notef("presence stream: %d × %s", c, kind)
		}
	}
	for _, f := range load.failures() {
		res.notef("failed: %s", f)
	}
	return res, nil
}

// drainProcess sends SIGTERM to the relay and waits for it to exit. It returns how long until the relay held no
// tunnel (its tunnels gauge read 0, or its metrics listener was gone, which happens only after the drain) and how
// long until it exited. The two differ by Go's http.Server shutdown rule: a connection that was opened but has
// not sent a request yet (a balancer's or client's spare) counts as busy for up to 5 s.
func drainProcess(ctx context.Context, r *relayProc) (empty, exited time.Duration, err error) {
	t0 := time.Now()
	if err := r.proc.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		return 0, 0, err
	}
	tick := time.NewTicker(25 * time.Millisecond)
	defer tick.Stop()
	limit := time.NewTimer(60 * time.Second)
	defer limit.Stop()
	for {
		select {
		case <-r.proc.done:
			exited = time.Since(t0)
			if empty == 0 {
				empty = exited
			}
			if r.proc.err != nil {
				return empty, exited, fmt.Errorf("exit: %v: %s", r.proc.err, r.proc.describe())
			}
			return empty, exited, nil
		case <-tick.C:
			if empty != 0 {
				continue
			}
			sctx, cancel := context.WithTimeout(ctx, time.Second)
			v, err := scrapeValue(sctx, r.Metrics, "switchboard_tunnels")
			cancel()
			if err != nil || v == 0 {
				empty = time.Since(t0)
			}
		case <-limit.C:
			r.proc.kill()
			return empty, time.Since(t0), errors.New("still draining after 60 s; killed")
		case <-ctx.Done():
			return empty, time.Since(t0), ctx.Err()
		}
	}
}

// presenceWatch reads the cluster's presence event stream through the front, as a consumer would: when the
// replica serving it drains, it reconnects (to another replica) with Last-Event-ID. It counts events by type.
type presenceWatch struct {
	e      *env
	base   string
	mu     sync.Mutex
	counts map[string]int
	last   string
	done   chan struct{}
}

func (e *env) watchPresence(ctx context.Context, base string) *presenceWatch {
	w := &presenceWatch{e: e, base: base, counts: make(map[string]int), done: make(chan struct{})}
	go w.run(ctx)
	return w
}

func (w *presenceWatch) run(ctx context.Context) {
	defer close(w.done)
	client := &http.Client{}
	defer client.CloseIdleConnections()
	for ctx.Err() == nil {
		if err := w.stream(ctx, client); err != nil && ctx.Err() == nil {
			w.count("error: " + err.Error())
		}
		sleepCtx(ctx, 100*time.Millisecond)
	}
}

// stream reads one connection of the event stream until it ends.
func (w *presenceWatch) stream(ctx context.Context, client *http.Client) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, w.base+"/v1/presence/events", nil)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+w.e.clientToken)
	w.mu.Lock()
	if w.last != "" {
		req.Header.Set("Last-Event-ID", w.last)
	}
	w.mu.Unlock()
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil // a draining replica answers 503; the next attempt goes to another
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "id: "):
			w.mu.Lock()
			w.last = strings.TrimPrefix(line, "id: ")
			w.mu.Unlock()
		case strings.HasPrefix(line, "event: "):
			w.count(strings.TrimPrefix(line, "event: "))
		}
	}
	return nil // the stream ends when its replica drains
}

func (w *presenceWatch) count(kind string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.counts[kind]++
}

// snapshot returns the counts so far.
func (w *presenceWatch) snapshot() map[string]int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return maps.Clone(w.counts)
}

// settleTunnels waits until the replicas together hold want tunnels and returns the last total.
func settleTunnels(ctx context.Context, replicas []*relayProc, want int, limit time.Duration) (float64, error) {
	deadline := time.Now().Add(limit)
	for {
		var total float64
		for _, r := range replicas {
			v, _ := scrapeValue(ctx, r.Metrics, "switchboard_tunnels")
			total += v
		}
		if total == float64(want) {
			return total, nil
		}
		if time.Now().After(deadline) || !sleepCtx(ctx, 100*time.Millisecond) {
			return total, fmt.Errorf("the replicas hold %.0f tunnels for %d hosts %s after the roll", total, want, limit)
		}
	}
}

// routeAll calls every host through r until each has answered, at most limit in all.
func (e *env) routeAll(ctx context.Context, r *relayProc, ids []string, limit time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	c := e.routeClient()
	defer c.CloseIdleConnections()
	next := atomic.Int64{}
	var (
		wg    sync.WaitGroup
		once  sync.Once
		first error
	)
	for range 16 {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= len(ids) || ctx.Err() != nil {
					return
				}
				if err := e.routeUntil(ctx, c, r, ids[i], limit); err != nil {
					once.Do(func() { first = err })
					return
				}
			}
		})
	}
	wg.Wait()
	return first
}

// agentHosts are hosts served by the agent library inside the bench process; each answers every request with its
// id, so a misrouted request shows.
type agentHosts struct {
	ids  []string
	srvs []*http.Server
	wg   sync.WaitGroup
}

// startHosts starts n agents registering rolling-0 … rolling-(n-1) through r. It returns at once; the agents
// connect in the background.
func (e *env) startHosts(ctx context.Context, r *relayProc, n int) (*agentHosts, error) {
	h := &agentHosts{}
	for i := range n {
		id := "rolling-" + strconv.Itoa(i)
		tok, err := e.hostToken(id)
		if err != nil {
			h.stop()
			return nil, err
		}
		l, err := agent.Listen(ctx, agent.Config{Relays: []string{r.Base}, HostID: id, Token: tok})
		if err != nil {
			h.stop()
			return nil, err
		}
		srv := &http.Server{
			Handler:           http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, id) }),
			ReadHeaderTimeout: 30 * time.Second,
		}
		h.ids = append(h.ids, id)
		h.srvs = append(h.srvs, srv)
		h.wg.Go(func() { _ = srv.Serve(l) })
	}
	return h, nil
}

// stop closes every agent (Server.Close closes its listener, which ends the tunnel) and waits for them.
func (h *agentHosts) stop() {
	for _, s := range h.srvs {
		_ = s.Close()
	}
	h.wg.Wait()
}

// rollLoad is the clients' side of the rolling scenario.
type rollLoad struct {
	e      *env
	r      *relayProc
	ids    []string
	client *http.Client
	phase  atomic.Int32 // 0 before the roll, 1 during it, 2 after

	sent, failed atomic.Int64
	mu           sync.Mutex
	phases       [2]phaseFigures
	firstFails   []string
}

// phaseFigures are one phase's merged latencies and its length.
type phaseFigures struct {
	hist       Histogram
	start, end time.Time
}

func (p phaseFigures) rps() float64 {
	d := p.end.Sub(p.start).Seconds()
	if d <= 0 {
		return 0
	}
	return float64(p.hist.Count()) / d
}

func newRollLoad(e *env, r *relayProc, ids []string) *rollLoad {
	return &rollLoad{e: e, r: r, ids: ids, client: &http.Client{
		Timeout: 30 * time.Second,
		Transport: &http.Transport{
			MaxIdleConnsPerHost: rollingWorkers, DisableCompression: true,
		},
	}}
}

// worker calls random hosts until ctx ends or the bench's request bound is reached.
func (l *rollLoad) worker(ctx context.Context, w int) {
	var hists [2]Histogram
	var starts, ends [2]time.Time
	rng := rand.New(rand.NewPCG(uint64(w), 1))
	limit := l.e.cfg.MaxRequests
	for ctx.Err() == nil && l.sent.Load() < limit {
		phase := l.phase.Load()
		id := l.ids[rng.IntN(len(l.ids))]
		t0 := time.Now()
		err := l.call(ctx, id)
		if ctx.Err() != nil && err != nil {
			break // cancelled by the end of the run, not failed
		}
		l.sent.Add(1)
		if err != nil {
			l.fail(err)
			continue
		}
		if phase < 2 {
			if starts[phase].IsZero() {
				starts[phase] = t0
			}
			ends[phase] = time.Now()
			hists[phase].Record(time.Since(t0))
		}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	for p := range hists {
		l.phases[p].hist.Merge(&hists[p])
		if !starts[p].IsZero() && (l.phases[p].start.IsZero() || starts[p].Before(l.phases[p].start)) {
			l.phases[p].start = starts[p]
		}
		if ends[p].After(l.phases[p].end) {
			l.phases[p].end = ends[p]
		}
	}
}

// call makes one request for host id and checks that the host itself answered.
func (l *rollLoad) call(ctx context.Context, id string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, l.r.Base+hostPath(id, "/"), nil)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+l.e.clientToken)
	resp, err := l.client.Do(req)
	if err != nil {
		return fmt.Errorf("%s: %w", id, err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	switch {
	case err != nil:
		return fmt.Errorf("%s: read body: %w", id, err)
	case resp.StatusCode != http.StatusOK:
		return fmt.Errorf("%s: status %d: %.200s", id, resp.StatusCode, body)
	case string(body) != id:
		return fmt.Errorf("%s: answered by %q", id, body)
	}
	return nil
}

func (l *rollLoad) fail(err error) {
	l.failed.Add(1)
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.firstFails) < 5 {
		l.firstFails = append(l.firstFails, err.Error())
	}
}

// merged returns a phase's figures; call after the workers have ended.
func (l *rollLoad) merged(phase int) *phaseFigures {
	l.mu.Lock()
	defer l.mu.Unlock()
	return &l.phases[phase]
}

// failures returns the first few failures.
func (l *rollLoad) failures() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.firstFails...)
}
