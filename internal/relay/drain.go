package relay

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/switchboard-relay/switchboard/internal/tunnel"
)

// This file is the drain (make-before-break): every agent is told to move, and each tunnel retires on its own as
// soon as its own exchanges have ended, so one long WebSocket holds its own tunnel, never the others.

// DrainReport says what a drain did with the tunnels it found.
type DrainReport struct {
	// Tunnels is how many tunnels the drain handled: those registered when it began, and those whose setup was
	// under way then and registered during it.
	Tunnels int
	// Retired is how many the drain closed with no exchange in flight. Moved of them had first opened a newer
	// tunnel on another replica (make-before-break); the others had nowhere to move (a lone relay), or did not
	// move within DrainJitter plus moveGrace.
	Retired, Moved int
	// Ended is how many ended before the drain closed them: their agent closed them, the network dropped them,
	// or a newer registration replaced them.
	Ended int
	// Cut is how many still carried exchanges when the drain's context ended and were closed under them;
	// ExchangesCut is how many exchanges that cut.
	Cut          int
	ExchangesCut int64
	// Unnotified is how many agents the drain notice did not reach (a stalled tunnel, or the context ended
	// first); they learn of the drain from the close.
	Unnotified int
}

// ErrAlreadyDraining is returned by Drain after the first call.
var ErrAlreadyDraining = errors.New("relay: already draining")

// Drain stops the relay nicely: /readyz turns 503, new tunnels are refused, and every agent is told in-band to
// open a new tunnel elsewhere (spread over DrainJitter). Each tunnel then retires on its own, as soon as its own
// exchanges allow: in a cluster, once its host has moved to a newer tunnel on another replica, it admits no new
// exchange (those go to the new owner), lets those in flight finish and closes with the drain close code; a tunnel
// whose host did not move within DrainJitter+moveGrace, and every tunnel on a lone relay, retires once no exchange
// is in flight on it. A long exchange (a WebSocket, an event stream) holds only its own tunnel.
//
// When ctx ends, Drain stops waiting: the tunnels still busy are closed under their exchanges and Drain returns
// an error wrapping ctx's. It logs what it did; DrainWithReport returns it too.
func (s *Server) Drain(ctx context.Context) error {
	_, err := s.DrainWithReport(ctx)
	return err
}

// DrainWithReport is Drain, and reports what the drain did (also when it returns an error).
func (s *Server) DrainWithReport(ctx context.Context) (DrainReport, error) {
	s.mu.Lock() // handleTunnel reads draining under mu: no setup begins after this
	already := s.draining.Swap(true)
	s.mu.Unlock()
	if already {
		return DrainReport{}, ErrAlreadyDraining
	}
	s.metrics.draining.Set(1)
	start := time.Now()
	d := &drainRun{s: s, tunnels: make(map[*tunnelConn]*drainState)}
	d.notices = workQueue{max: drainNoticeWorkers, do: d.notify, wg: &d.wg}
	d.closes = workQueue{max: drainCloseWorkers, do: d.retire, wg: &d.wg}
	s.log.Info("draining", "tunnels", len(s.snapshot()), "jitter", s.cfg.DrainJitter.String())
	err := d.run(ctx)
	d.wg.Wait()
	rep := d.rep
	rep.Unnotified = int(d.unnotified.Load())
	s.log.Info("drain done", "tunnels", rep.Tunnels, "retired", rep.Retired, "moved", rep.Moved, "ended", rep.Ended,
		"cut", rep.Cut, "exchanges_cut", rep.ExchangesCut, "unnotified", rep.Unnotified,
		"took", time.Since(start).Round(time.Millisecond).String())
	if err != nil {
		return rep, fmt.Errorf("drain: %d exchanges still in flight on %d tunnels: %w", rep.ExchangesCut, rep.Cut, err)
	}
	return rep, nil
}

// moveGrace is how long, past DrainJitter, a draining replica waits for agents to open their new tunnels elsewhere
// before it retires the tunnels that did not move.
const moveGrace = 5 * time.Second

// drainPoll is how often a drain looks at its tunnels' exchanges in flight and, in a cluster, at eviction notices
// (the directory every drainLookupEvery rounds, for a lost notice).
const (
	drainPoll        = 25 * time.Millisecond
	drainLookupEvery = 10
)

// Drain notices and closes run on bounded pools: a notice waits up to 5 s for a stalled tunnel, and a close for
// the agent's close answer, so they run in parallel, but a drain of 100,000 tunnels does not start 100,000
// goroutines at once.
const (
	drainNoticeWorkers = 64
	drainCloseWorkers  = 256
)

// drainRun is one drain's state. Owned by run, except where noted.
type drainRun struct {
	s       *Server
	tunnels map[*tunnelConn]*drainState
	rep     DrainReport
	notices workQueue
	closes  workQueue
	wg      sync.WaitGroup // the pools' workers

	unnotified atomic.Int64 // written by notify
}

// drainState is one tunnel's place in a drain.
type drainState struct {
	moved   bool // its host opened a newer tunnel on another replica
	closing bool // handed to the close pool, or found ended

	notified atomic.Bool // its notice was sent or given up (set by notify): it closes only after
}

// run drives the drain until every tunnel has retired or ended, or ctx ends.
func (d *drainRun) run(ctx context.Context) error {
	s := d.s
	cluster := len(s.cfg.ClusterSecret) > 0
	giveUp := time.Now().Add(s.cfg.DrainJitter + moveGrace)
	tick := time.NewTicker(drainPoll)
	defer tick.Stop()
	warned := false
	for round := 0; ; round++ {
		d.adopt(ctx, s.snapshot())
		lookup := cluster && round%drainLookupEvery == 0
		late := !cluster || !time.Now().Before(giveUp)
		left := 0
		for t, st := range d.tunnels {
			if st.closing {
				continue
			}
			if d.ended(t, st) {
				continue
			}
			if cluster && !st.moved && (s.evictions.Supersedes(t.hostID, t.epoch) || lookup && s.movedInDirectory(ctx, t)) {
				st.moved = true
				s.cluster.drainMoves.Inc()
				t.retiring.Store(true)
			}
			if !t.retiring.Load() && (late && t.active.Load() == 0 || !time.Now().Before(giveUp)) {
				// An idle tunnel retires; past giveUp a busy one too, so that it admits no more and the drain
				// ends. The count is read again below, after the mark: an exchange admitted in between is waited
				// for (see admit).
				t.retiring.Store(true)
			}
			if t.retiring.Load() && t.active.Load() == 0 && st.notified.Load() {
				st.closing = true
				d.rep.Retired++
				if st.moved {
					d.rep.Moved++
				}
				d.closes.add(t)
				continue
			}
			left++
		}
		if left == 0 && d.finish() {
			return nil
		}
		if cluster && !warned && left > 0 && !time.Now().Before(giveUp) {
			warned = true
			s.log.Info("drain: some agents did not move to another replica in time", "tunnels", left)
		}
		select {
		case <-ctx.Done():
			d.cut()
			return ctx.Err()
		case <-tick.C:
		}
	}
}

// adopt takes every tunnel of ts the drain does not know yet: it counts it and queues its notice.
func (d *drainRun) adopt(ctx context.Context, ts []*tunnelConn) {
	for _, t := range ts {
		if d.tunnels[t] != nil {
			continue
		}
		st := &drainState{}
		d.tunnels[t] = st
		d.rep.Tunnels++
		d.notices.add(drainNotice{ctx: ctx, t: t, st: st, delay: randDuration(d.s.cfg.DrainJitter)})
	}
}

// ended reports whether t ended without the drain closing it, and counts it if so.
func (d *drainRun) ended(t *tunnelConn, st *drainState) bool {
	select {
	case <-t.done:
		st.closing = true
		d.rep.Ended++
		return true
	default:
		return false
	}
}

// finish ends the drain if no tunnel registered since the last snapshot; from then on, a registration that was
// still being set up is refused (register). It reports false when there is a tunnel to adopt.
func (d *drainRun) finish() bool {
	s := d.s
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, t := range s.tunnels {
		if d.tunnels[t] == nil {
			return false
		}
	}
	s.drained = true
	return true
}

// drainOver reports whether a drain has ended.
func (s *Server) drainOver() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.drained
}

// cut closes every tunnel the drain has not closed yet, busy or not, once ctx ended.
func (d *drainRun) cut() {
	s := d.s
	s.mu.Lock()
	s.drained = true
	ts := make([]*tunnelConn, 0, len(s.tunnels))
	for _, t := range s.tunnels {
		ts = append(ts, t)
	}
	s.mu.Unlock()
	for _, t := range ts {
		if d.tunnels[t] == nil {
			d.tunnels[t] = &drainState{}
			d.rep.Tunnels++
			d.unnotified.Add(1)
		}
	}
	for t, st := range d.tunnels {
		if st.closing || d.ended(t, st) {
			continue
		}
		st.closing = true
		t.retiring.Store(true)
		if n := t.active.Load(); n > 0 {
			d.rep.Cut++
			d.rep.ExchangesCut += n
			t.log.Info("drain: closing the tunnel under its exchanges", "active", n)
		} else {
			d.rep.Retired++
		}
		d.closes.add(t)
	}
}

// drainNotice is a drain notice to send.
type drainNotice struct {
	ctx   context.Context
	t     *tunnelConn
	st    *drainState
	delay time.Duration
}

// notify sends one drain notice; it gives up when the notice's context ends.
func (d *drainRun) notify(item any) {
	n := item.(drainNotice)
	if err := n.t.sendControlCtx(n.ctx, tunnel.Control{Type: tunnel.ControlDrain, DelayMillis: n.delay.Milliseconds()}); err != nil {
		d.unnotified.Add(1)
	}
	n.st.notified.Store(true)
}

// retire closes a tunnel the drain is done with.
func (d *drainRun) retire(item any) {
	item.(*tunnelConn).close(tunnel.CloseDrain, "relay draining", "drain")
}

// workQueue runs do on every item added, on at most max goroutines at once, started as work arrives and ended
// when it runs out; wg counts them.
type workQueue struct {
	max int
	do  func(any)
	wg  *sync.WaitGroup

	mu      sync.Mutex
	items   []any
	workers int
}

func (q *workQueue) add(item any) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.items = append(q.items, item)
	if q.workers < q.max {
		q.workers++
		q.wg.Go(q.work)
	}
}

func (q *workQueue) work() {
	for {
		q.mu.Lock()
		if len(q.items) == 0 {
			q.workers--
			q.items = nil // drop the drained backing array
			q.mu.Unlock()
			return
		}
		item := q.items[0]
		q.items[0] = nil
		q.items = q.items[1:]
		q.mu.Unlock()
		q.do(item)
	}
}

// movedInDirectory reports whether the directory names a newer tunnel than t for t's host.
func (s *Server) movedInDirectory(ctx context.Context, t *tunnelConn) bool {
	e, err := s.dir.Lookup(ctx, t.hostID)
	return err == nil && e.Epoch > t.epoch
}
