package relay

import (
	"context"
	"maps"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/switchboard-relay/switchboard/internal/directory"
	"github.com/switchboard-relay/switchboard/internal/presence"
)

// This file emits presence events (docs/presence.md): the relay classifies every claim and release of a host's
// tunnel and appends what changed to Config.Events.
//
//	claim, previous owner live (drain, takeover, duplicate agent)             moved
//	claim, host unknown, offline announced, or previous owner's replica dead  online
//	claim, host released but offline not announced yet (within flap window):
//	  on another replica than the one that released it (a drain)              moved
//	  on the same replica                                                      updated if the metadata changed, else nothing
//	release, and after the flap window the host is still offline at that epoch  offline (exactly once: MarkOffline)
//	a dead replica's hosts (directory.Redis.Reap, on every replica)            offline
//
// A drain move is a claim over a live owner, so it is "moved", and the old tunnel's release is stale (its epoch is
// no longer the host's), so it announces nothing; if the old tunnel was closed before the new one was claimed, the
// claim comes within the flap window on another replica, so it is "moved" too.

// DefaultFlapWindow is how long a host may be gone before its offline is announced.
const DefaultFlapWindow = 5 * time.Second

// staleRelease is how long after a release a claim is taken as a return even if the offline was never announced
// (records written before presence events existed, or an offline lost with its replica and not reaped).
const staleRelease = time.Minute

// reapInterval is how often each replica looks for dead replicas whose hosts' offlines are owed.
const reapInterval = 500 * time.Millisecond

// Events returns the log presence events are appended to (Config.Events, or the Server's own memory log), for
// other readers such as the webhook sender.
func (s *Server) Events() presence.Log { return s.events }

// classify decides the event of a claim of a host whose state before the claim was p, with metadata meta.
func classify(p directory.Prior, replica string, meta directory.Metadata, flap time.Duration, now time.Time) (presence.Kind, bool) {
	switch {
	case p.Replica != "" && p.Live:
		return presence.Moved, true
	case p.Replica != "": // its replica died and it was not reaped yet: the host was offline
		return presence.Online, true
	case !p.Known || p.Announced:
		return presence.Online, true
	case !p.DisconnectedAt.IsZero() && now.Sub(p.DisconnectedAt) > flap+staleRelease:
		return presence.Online, true
	case p.LastReplica != "" && p.LastReplica != replica: // back within the window, elsewhere (a drain)
		return presence.Moved, true
	case !sameMetadata(p.Metadata, meta):
		return presence.Updated, true
	default:
		return "", false
	}
}

// sameMetadata compares metadata, a nil and an empty Labels map being equal.
func sameMetadata(a, b directory.Metadata) bool {
	return a.Name == b.Name && a.OS == b.OS && a.AgentVersion == b.AgentVersion && len(a.Labels) == len(b.Labels) &&
		(len(a.Labels) == 0 || maps.Equal(a.Labels, b.Labels))
}

// announceClaim appends the event of a claim, if any.
func (s *Server) announceClaim(e directory.Entry, p directory.Prior) {
	kind, ok := classify(p, e.Replica, e.Metadata, s.cfg.FlapWindow, time.Now())
	if !ok {
		return
	}
	meta := e.Metadata
	if meta.Labels == nil {
		meta.Labels = map[string]string{} // "labels": {} like the hosts API, never null
	}
	s.appendEvent(presence.Event{Kind: kind, HostID: e.HostID, Epoch: e.Epoch, Seq: presence.SeqOf(kind, e.Epoch),
		Replica: e.Replica, At: e.ConnectedAt, Metadata: &meta})
}

// scheduleOffline waits the flap window after this replica released hostID at epoch, then announces the offline
// if the host is still offline at that epoch. While the directory or the log is unreachable it retries (backing
// off from offlineRetryFirst to offlineRetryLimit, with jitter, for up to offlineRetry): MarkOffline says "gone" once only, so its answer is not lost to a failed append.
// Close abandons the wait: with Redis, the replica's death (its lease) lets another replica reap the offline; with
// the memory directory, the log goes with the process.
func (s *Server) scheduleOffline(hostID string, epoch uint64, at time.Time) {
	s.spawn(func() {
		if !s.sleep(s.cfg.FlapWindow) {
			return
		}
		var gone bool
		if err := s.retry(func(ctx context.Context) (err error) {
			gone, err = s.dir.MarkOffline(ctx, hostID, epoch)
			return err
		}); err != nil {
			s.log.Warn("presence: offline not recorded", "host_id", hostID, "epoch", epoch, "err", err)
			return
		}
		if !gone {
			return
		}
		e := presence.Event{Kind: presence.Offline, HostID: hostID, Epoch: epoch,
			Seq: presence.SeqOf(presence.Offline, epoch), Replica: s.cfg.Replica, At: at}
		if err := s.retry(func(ctx context.Context) error { return s.tryAppend(ctx, e) }); err != nil {
			s.eventLost(e, err)
		}
	})
}

// offlineRetry bounds how long an owed offline is retried while the directory or the event log is unreachable;
// the waits between attempts grow from offlineRetryFirst to offlineRetryLimit, jittered (backoff), so that the
// offlines owed by many tunnels that ended in one outage do not hit the directory in step when it returns.
const (
	offlineRetry      = 5 * time.Minute
	offlineRetryFirst = time.Second
	offlineRetryLimit = 30 * time.Second
)

// retry calls f until it succeeds, backing off between attempts for up to offlineRetry, and returns its last
// error (nil once it succeeded); it gives up early when the Server closes.
func (s *Server) retry(f func(ctx context.Context) error) error {
	deadline := time.Now().Add(offlineRetry)
	b := backoff{first: offlineRetryFirst, limit: offlineRetryLimit}
	for {
		ctx, cancel := context.WithTimeout(s.ctx, 5*time.Second)
		err := f(ctx)
		cancel()
		if err == nil || time.Now().After(deadline) || !s.sleep(b.next()) {
			return err
		}
	}
}

// sleep waits d and reports false if the Server closed first.
func (s *Server) sleep(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-s.ctx.Done():
		return false
	}
}

// moveReaped asks the agents of hosts reaped by another replica (announced offline while this replica was cut off
// from the directory, its tunnels still up) to open a new tunnel: the directory no longer routes to the old one,
// and the new claim announces the host online again under a new epoch.
func (s *Server) moveReaped(hostIDs []string) {
	for _, id := range hostIDs {
		if t := s.lookup(id); t != nil {
			t.log.Warn("host was announced offline while this replica was cut off from the directory; asking its agent to reconnect")
			t.sendDrain(0)
		}
	}
}

// reapLoop announces the offline of hosts whose replica died, until ctx ends.
func (s *Server) reapLoop(ctx context.Context) {
	t := time.NewTicker(reapInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		got, err := s.dir.Reap(ctx)
		if err != nil && ctx.Err() == nil {
			s.log.Warn("presence: reaping dead replicas failed", "err", err)
		}
		for _, rp := range got {
			s.appendEvent(presence.Event{Kind: presence.Offline, HostID: rp.HostID, Epoch: rp.Epoch,
				Seq: presence.SeqOf(presence.Offline, rp.Epoch), Replica: rp.Replica, At: rp.DisconnectedAt})
		}
	}
}

// appendEvent appends e to the log; a failure is logged and counted, never fatal to the tunnel.
func (s *Server) appendEvent(e presence.Event) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.tryAppend(ctx, e); err != nil {
		s.eventLost(e, err)
	}
}

// tryAppend appends e to the log and counts it if it went in; a failure is left to the caller, which may retry.
func (s *Server) tryAppend(ctx context.Context, e presence.Event) error {
	if _, err := s.events.Append(ctx, e); err != nil {
		return err
	}
	s.evm.appended.WithLabelValues(string(e.Kind)).Inc()
	return nil
}

// eventLost logs and counts an event that could not be appended.
func (s *Server) eventLost(e presence.Event, err error) {
	s.evm.failed.Inc()
	s.log.Warn("presence: event not recorded", "host_id", e.HostID, "type", e.Kind, "epoch", e.Epoch, "err", err)
}

// eventMetrics count presence events (the event streams' own metrics are package hostsapi's).
type eventMetrics struct {
	appended *prometheus.CounterVec // type
	failed   prometheus.Counter
}

func newEventMetrics(reg prometheus.Registerer) *eventMetrics {
	m := &eventMetrics{
		appended: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "switchboard", Name: "presence_events_total",
			Help: "Presence events this replica appended to the log, by type.",
		}, []string{"type"}),
		failed: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "switchboard", Name: "presence_event_errors_total",
			Help: "Presence events this replica failed to append to the log.",
		}),
	}
	for _, k := range []presence.Kind{presence.Online, presence.Offline, presence.Moved, presence.Updated} {
		m.appended.WithLabelValues(string(k))
	}
	reg.MustRegister(m.appended, m.failed)
	return m
}
