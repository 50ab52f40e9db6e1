package relay

import (
	"context"
	"errors"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/switchboard-relay/switchboard/internal/directory"
)

// This file holds the directory's health state: whether the directory is known to be down, so that requests stop
// waiting for its timeout and ask the peers at once (askpeers.go).
//
// The state turns down on the first directory call that finds the directory unreachable (directory.Unreachable)
// and on a failed probe; only a probe that succeeds turns it up again. The probe runs every probeEvery with a
// deadline of probeTimeout, so an outage that no call happens to meet (a blackholed Redis: no reset, no answer) is
// known within probeEvery + probeTimeout, and a recovery within probeEvery plus one round trip.

// errDirectoryDown stands for a directory call not made because the directory is known to be down (skip).
var errDirectoryDown = errors.New("directory known to be down; not asked")

// Directory health probe cadence and deadline.
const (
	probeEvery   = 250 * time.Millisecond
	probeTimeout = 500 * time.Millisecond
)

// dirHealth is the directory's health state. Its zero value reads up.
type dirHealth struct {
	down  atomic.Bool
	gauge prometheus.Gauge // switchboard_directory_up; nil in tests that build a bare dirHealth
	log   func(msg string, args ...any)
}

// isDown reports whether the directory is known to be down.
func (h *dirHealth) isDown() bool { return h.down.Load() }

// skip returns errDirectoryDown if the directory is known to be down, and nil otherwise. A tunnel's registration
// calls it before each directory call (the ban check, the claim): asked, a directory known down would only make the
// tunnel wait for its timeout, and a reconnect storm during an outage would pay that once per tunnel.
func (h *dirHealth) skip() error {
	if h.isDown() {
		return errDirectoryDown
	}
	return nil
}

// setDown records that the directory is down (true) or answers (false), and reports whether that changed.
func (h *dirHealth) setDown(down bool, cause error) bool {
	if h.down.Swap(down) == down {
		return false
	}
	if h.gauge != nil {
		if down {
			h.gauge.Set(0)
		} else {
			h.gauge.Set(1)
		}
	}
	if h.log != nil {
		if down {
			h.log("directory down: requests for hosts on other replicas are routed by asking the peers", "err", cause)
		} else {
			h.log("directory answers again: routing by directory lookups")
		}
	}
	return true
}

// observe feeds the result of a directory call made under ctx: a directory that did not answer turns the state
// down. A call that ended because its caller went away or gave up (ctx done) tells nothing.
func (h *dirHealth) observe(ctx context.Context, err error) {
	if err != nil && ctx.Err() == nil && directory.Unreachable(err) && !h.down.Load() {
		h.setDown(true, err)
	}
}

// healthLoop probes the directory every probeEvery until ctx ends. A probe that finds this replica's advertised
// internal URL missing while it has advertised one (Redis restarted empty, or FLUSHALL) advertises it again at once,
// so that the peer list does not lose this replica.
func (s *Server) healthLoop(ctx context.Context) {
	t := time.NewTicker(probeEvery)
	defer t.Stop()
	for {
		pctx, cancel := context.WithTimeout(ctx, probeTimeout)
		advertised := s.advertisedOnce.Load() // before the probe: an advertisement racing it is not a loss
		start := time.Now()
		u, err := s.dir.ProbePeer(pctx, s.cfg.Replica)
		s.cluster.dirSeconds.WithLabelValues(directory.OpProbe).Observe(time.Since(start).Seconds())
		cancel()
		switch {
		case ctx.Err() != nil:
			return
		case err != nil:
			s.cluster.dirErrors.WithLabelValues(directory.OpProbe).Inc()
			s.health.setDown(true, err)
		default:
			s.health.setDown(false, nil)
			if s.cfg.InternalURL != "" && u != s.cfg.InternalURL && advertised {
				s.log.Warn("directory lost this replica's advertisement (redis restarted empty or was flushed); advertising again")
				s.advertise(ctx)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// advertise records this replica's internal URL in the directory, and reports whether it did.
func (s *Server) advertise(ctx context.Context) bool {
	actx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := s.dir.Advertise(actx, s.cfg.Replica, s.cfg.InternalURL); err != nil {
		if ctx.Err() == nil {
			s.log.Warn("advertising the internal url failed", "err", err)
		}
		return false
	}
	s.advertisedOnce.Store(true)
	return true
}

// refreshPeers refreshes the peer list (peering.Peers.Refresh). A listing without this replica means the directory
// lost data: this replica advertises itself again at once.
func (s *Server) refreshPeers(ctx context.Context) {
	if !s.peers.Refresh(ctx) && s.advertisedOnce.Load() {
		s.log.Warn("the directory's peer list lacks this replica (redis restarted empty or was flushed); " +
			"keeping the last list and advertising again")
		s.advertise(ctx)
	}
}
