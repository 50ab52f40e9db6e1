package relay

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/switchboard-relay/switchboard/internal/directory"
	"github.com/switchboard-relay/switchboard/internal/peering"
)

// InternalHandler serves requests from peer replicas (peering.Handler): forwarded client exchanges for hosts whose
// tunnels are here, eviction notices, questions whether a host's tunnel is here, and the admin API's questions.
// Every request must carry a valid hop signature (Config.ClusterSecret); others get 403. A forwarded request is
// never forwarded again (but for one case, see resolveHop): if the host's tunnel is not here it is answered 503.
// Serve it on a listener that only peers can reach (Config.InternalURL names it to them).
func (s *Server) InternalHandler() http.Handler { return peering.Handler(s.hops, internalSide{s}) }

// internalSide is the Server as the internal handler sees it (peering.Local).
type internalSide struct{ s *Server }

func (in internalSide) ServeForwarded(w http.ResponseWriter, r *http.Request, subject string) bool {
	if !strings.HasPrefix(r.URL.Path, hostsPrefix) && !in.s.isHostModeRequest(r) {
		return false
	}
	in.s.handleForwarded(w, r, subject)
	return true
}

func (in internalSide) Holds(hostID string) bool {
	// serving, not lookup: a tunnel retiring here takes no new exchange, so a peer must not be sent here for it.
	return validHostID(hostID) && in.s.serving(hostID) != nil
}

func (in internalSide) Evicted(hostID, from string, epoch uint64) bool {
	if !validHostID(hostID) {
		return false
	}
	in.s.evicted(hostID, from, epoch)
	return true
}

func (in internalSide) ServeInternal(w http.ResponseWriter, r *http.Request, from string) bool {
	return strings.HasPrefix(r.URL.Path, "/internal/v1/admin/") && in.s.serveAdminInternal(w, r, from)
}

func (in internalSide) Refuse(w http.ResponseWriter, r *http.Request, err error) {
	s := in.s
	switch {
	case errors.Is(err, peering.ErrBadNotice):
		writeError(w, http.StatusBadRequest, codeBadRequest, err.Error())
	case errors.Is(err, peering.ErrNoEndpoint):
		writeError(w, http.StatusNotFound, codeNotFound, err.Error())
	default: // the hop did not verify
		s.cluster.forwards.WithLabelValues(fwdRejected).Inc()
		s.cluster.hopRejections.WithLabelValues(peering.Reason(err)).Inc()
		s.log.Warn("internal request refused", "err", err, "remote", clientIP(r))
		if errors.Is(err, peering.ErrHopCacheFull) {
			writeError(w, http.StatusServiceUnavailable, codeReplicaBusy, "too many requests between replicas to remember; retry")
			return
		}
		writeError(w, http.StatusForbidden, codeForbidden, "requests between replicas must be signed with the cluster secret, fresh and sent once")
	}
}

// handleForwarded serves an exchange a peer forwarded here because the directory named this replica as the owner.
func (s *Server) handleForwarded(w http.ResponseWriter, r *http.Request, subject string) {
	// The peer forwarded the request as the client sent it (Host and path, both signed): find the host the same
	// way, by name in host mode or by path.
	tg, found, valid := s.resolve(r)
	if !found || !valid {
		writeError(w, http.StatusBadRequest, codeInvalidHostID, "host id must be 1-128 printable bytes")
		return
	}
	kind := exchangeKind(r, tg) // the first replica checked a TCP stream's service against the token (tcp.go)
	if !s.admitExchange(w, kind) {
		return
	}
	defer s.exchanges.Add(-1)
	s.routeExchange(w, r, tg, kind, subject, true) // forward.go
}

// passOn forwards a forwarded exchange once more, to the replica at peer, as resolveHop (route.go) decides: this
// replica is draining and its tunnel for the host retired because the host moved there after the peer looked it
// up. The forwarding headers the first replica set and signed are kept.
func (s *Server) passOn(w http.ResponseWriter, r *http.Request, peer *url.URL, subject string) {
	fw := &forwardEx{peer: peer, subject: subject, passedOn: true}
	s.fwd.ServeHTTP(s.newStallResponseWriter(w), r.WithContext(context.WithValue(r.Context(), forwardKey{}, fw)))
	if fw.outcome == "" {
		fw.outcome = fwdOK
	}
	s.cluster.forwards.WithLabelValues(fw.outcome).Inc()
}

// awaitLocal waits for hostID's tunnel to register here while the directory names this replica as its owner with
// a claim younger than registerWindow, for at most registerWindow. Otherwise it repairs a stale entry naming this
// replica and returns nil at once. A directory known down is not read (dirhealth.go): it returns at once.
func (s *Server) awaitLocal(ctx context.Context, hostID string) *tunnelConn {
	if s.health.isDown() {
		return s.serving(hostID)
	}
	ctx, cancel := context.WithTimeout(ctx, registerWindow)
	defer cancel()
	tick := time.NewTicker(missPoll)
	defer tick.Stop()
	for {
		e, err := s.dir.Lookup(ctx, hostID)
		if err != nil || e.Replica != s.cfg.Replica {
			return s.serving(hostID)
		}
		if time.Since(e.ConnectedAt) >= registerWindow {
			s.repairStale(e)
			return s.serving(hostID)
		}
		select {
		case <-ctx.Done():
			return s.serving(hostID)
		case <-tick.C:
		}
		if t := s.serving(hostID); t != nil {
			return t
		}
	}
}

// registerWindow bounds the time between a tunnel's directory claim and its local registration (the upgrade and
// the agent's control stream): an entry naming this replica without a local tunnel is stale only when older.
const registerWindow = controlAcceptTimeout + 5*time.Second

// repairStale releases e, an entry naming this replica that is older than registerWindow, if no tunnel here holds
// its host: a release that failed, or a crash between claim and cleanup, left it behind.
func (s *Server) repairStale(e directory.Entry) {
	if e.Replica != s.cfg.Replica || time.Since(e.ConnectedAt) < registerWindow || s.lookup(e.HostID) != nil {
		return
	}
	ctx, cancel := context.WithTimeout(s.ctx, 5*time.Second)
	defer cancel()
	ok, err := s.dir.Release(ctx, e.HostID, e.Epoch)
	if err != nil {
		s.log.Warn("stale directory entry not repaired", "host_id", e.HostID, "epoch", e.Epoch, "err", err)
		return
	}
	if ok {
		s.log.Info("stale directory entry released: it named this replica, which holds no such tunnel",
			"host_id", e.HostID, "epoch", e.Epoch)
	}
}

// evicted takes an eviction notice: replica from claimed id with epoch. It notes the notice and closes the local
// tunnel of id if it is older.
func (s *Server) evicted(id, from string, epoch uint64) {
	// Noted before the lookup, so a tunnel registering meanwhile sees the note or is found (see serveTunnel).
	s.evictions.Note(id, from, epoch)
	// A draining replica keeps the old tunnel until its exchanges finished (make-before-break: the agent opened the
	// newer tunnel because this replica asked it to move); Drain closes it.
	if t := s.lookup(id); t != nil && t.epoch < epoch && !s.draining.Load() {
		s.evictLocal(t, from, epoch)
	}
}

// evictLocal retires t as replaced by a newer tunnel on replica from (retireReplaced: requests landing here are
// forwarded to the new owner while t's exchanges in flight finish), then closes it.
func (s *Server) evictLocal(t *tunnelConn, from string, epoch uint64) {
	if !s.spawn(func() { s.retireReplaced(t) }) {
		return // Close has begun and closes t
	}
	s.metrics.registrations.WithLabelValues(regReplaced).Inc()
	t.log.Info("tunnel replaced by a newer registration on another replica", "new_epoch", epoch, "new_replica", from)
}

// notifyEvict tells replica, the previous owner of hostID, that this replica now holds it with epoch. A notice
// that fails (the peer unreachable for a moment, a refused answer) is sent again, up to evictAttempts times with
// growing pauses; if all fail, the old tunnel lingers on that replica (serving only requests that land there) until
// it ends or that replica's drain finds the newer entry in the directory.
func (s *Server) notifyEvict(replica, hostID string, epoch uint64) {
	pause := evictRetryPause
	for attempt := 1; ; attempt++ {
		err := s.sendEvict(replica, hostID, epoch)
		if err == nil {
			return
		}
		if attempt == evictAttempts {
			s.log.Warn("previous owner not told of the newer tunnel", "host_id", hostID, "previous_replica", replica,
				"attempts", attempt, "err", err)
			return
		}
		select {
		case <-s.ctx.Done():
			return
		case <-time.After(jitter(pause)):
		}
		pause *= 3
	}
}

// Retries of an eviction notice: evictAttempts sends, the pause between them growing 3× from evictRetryPause
// (0.2 s, 0.6 s, 1.8 s: up to 2.6 s in all, within a replica's restart or a brief partition), each pause drawn
// from its upper half (jitter) so that the notices of many moved hosts do not retry in step.
const (
	evictAttempts   = 4
	evictRetryPause = 200 * time.Millisecond
)

// sendEvict sends one eviction notice.
func (s *Server) sendEvict(replica, hostID string, epoch uint64) error {
	ctx, cancel := context.WithTimeout(s.ctx, 5*time.Second)
	defer cancel()
	base, err := s.peers.URL(ctx, replica)
	if err != nil {
		return err
	}
	return s.peerClient.Evict(ctx, base, hostID, epoch)
}

// Owned returns an entry for every tunnel registered here: what this replica re-asserts when the directory lost
// its data (directory.RedisConfig.Owned).
func (s *Server) Owned() []directory.Entry {
	ts := s.snapshot()
	out := make([]directory.Entry, 0, len(ts))
	for _, t := range ts {
		out = append(out, directory.Entry{HostID: t.hostID, Replica: s.cfg.Replica, Epoch: t.epoch,
			ConnectedAt: t.connectedAt, Metadata: t.meta})
	}
	return out
}
