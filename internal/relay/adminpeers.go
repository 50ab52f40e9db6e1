package relay

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/switchboard-relay/switchboard/internal/directory"
	"github.com/switchboard-relay/switchboard/internal/peering"
)

// The admin API's internal endpoints: what a replica asks its peers to answer the admin API for the whole cluster.
// Like every internal request, each carries a hop signature (internal.go).
//
//	GET  /internal/v1/admin/replica                    → this replica's ReplicaView
//	GET  /internal/v1/admin/tunnels?limit&prefix&after&replica&label…  → {"tunnels": [TunnelView…]}
//	POST /internal/v1/admin/kick?host=ID&msg=M         → true if a tunnel of ID was here and is closing, else false
//	POST /internal/v1/admin/drain?exit=B               → drainResult
//	POST /internal/v1/admin/revoked?jti=J&sub=S&until=T  → how many tunnels and sessions were closed
const (
	adminReplicaPath = "/internal/v1/admin/replica"
	adminTunnelsPath = "/internal/v1/admin/tunnels"
	adminKickPath    = "/internal/v1/admin/kick"
	adminDrainPath   = "/internal/v1/admin/drain"
	adminRevokedPath = "/internal/v1/admin/revoked"
)

// adminAskTimeout bounds one peer's answer to an admin question; a slower peer is reported unreachable.
const adminAskTimeout = 5 * time.Second

// maxPeerAnswer bounds what a peer's answer may hold (a page of 1,000 tunnels is well under it).
const maxPeerAnswer = 8 << 20

// peerAnswer is one peer's answer, or why there is none.
type peerAnswer struct {
	replica, url string
	body         []byte
	err          error
}

// askAll sends one internal request to every other live replica at once and returns their answers in replica
// order. A replica is live while its advertisement is (the directory drops it once the replica stops
// re-advertising); one that does not answer in adminAskTimeout is in the list with its error.
func (s *Server) askAll(ctx context.Context, method, path, query string, body []byte) []peerAnswer {
	if len(s.cfg.ClusterSecret) == 0 {
		return nil
	}
	var all map[string]string
	if !s.health.isDown() {
		all, _ = s.dir.ListPeers(ctx)
	}
	if all == nil {
		all = s.peers.Known() // the directory is down: the peer list kept in memory
	}
	ids := make([]string, 0, len(all))
	for id := range all {
		if id != s.cfg.Replica {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	var skipped []string
	if len(ids) > peering.MaxAsked { // bounded fan-out; the rest are reported, never left out silently
		ids, skipped = ids[:peering.MaxAsked], ids[peering.MaxAsked:]
	}
	out := make([]peerAnswer, len(ids), len(ids)+len(skipped))
	var wg sync.WaitGroup
	for i, id := range ids {
		wg.Go(func() {
			base, err := s.adminPeerURL(ctx, id)
			if err != nil {
				out[i] = peerAnswer{replica: id, url: all[id], err: err}
				return
			}
			out[i] = s.askPeer(ctx, id, base, method, path, query, body)
		})
	}
	wg.Wait()
	for _, id := range skipped {
		out = append(out, peerAnswer{replica: id, url: all[id], err: errNotAsked})
	}
	// A replica whose advertisement expired stopped for good (or long ago): it is not a member to report.
	return slices.DeleteFunc(out, func(a peerAnswer) bool { return errors.Is(a.err, errGone) })
}

// errNotAsked marks a replica beyond the peering.MaxAsked one admin call asks.
var errNotAsked = fmt.Errorf("not asked: one admin call asks at most %d peers", peering.MaxAsked)

// errGone marks a listed replica whose advertisement has expired.
var errGone = errors.New("replica gone")

// errUnknownPeer: the directory cannot be read and the peer list kept in memory does not hold the replica.
var errUnknownPeer = errors.New("replica not in the peer list")

// adminPeerURL finds replica id's internal URL for an admin call: from the directory, or, while the directory is
// known down or does not answer, from the peer list kept in memory (the last URLs read). errGone: the directory
// says id advertises none.
func (s *Server) adminPeerURL(ctx context.Context, id string) (*url.URL, error) {
	var dirErr error
	if !s.health.isDown() {
		raw, err := s.dir.PeerURL(ctx, id)
		switch {
		case errors.Is(err, directory.ErrNotFound):
			return nil, errGone
		case err == nil:
			base, err := url.Parse(raw)
			if err != nil || base.Host == "" {
				return nil, fmt.Errorf("bad internal url %q", raw)
			}
			return base, nil
		}
		dirErr = err
	}
	if u, ok := s.peers.KnownURL(id); ok {
		return u, nil
	}
	if dirErr != nil {
		return nil, dirErr
	}
	return nil, errUnknownPeer
}

// askPeer sends one signed internal request to the peer replica at base.
func (s *Server) askPeer(ctx context.Context, replica string, base *url.URL, method, path, query string, body []byte) peerAnswer {
	a := peerAnswer{replica: replica, url: base.String()}
	ctx, cancel := context.WithTimeout(ctx, adminAskTimeout)
	defer cancel()
	u := *base
	u.Path, u.RawQuery = path, query
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, u.String(), rd)
	if err != nil {
		a.err = err
		return a
	}
	s.hops.Sign(req, "")
	resp, err := s.peerTransport.RoundTrip(req)
	if err != nil {
		a.err = fmt.Errorf("unreachable: %w", err)
		return a
	}
	defer resp.Body.Close()
	a.body, err = io.ReadAll(io.LimitReader(resp.Body, maxPeerAnswer))
	switch {
	case err != nil:
		a.err = fmt.Errorf("answer unreadable: %w", err)
	case resp.StatusCode != http.StatusOK:
		a.err = fmt.Errorf("answered %s", resp.Status)
	}
	return a
}

// decodePeerJSON decodes a peer's JSON answer.
func decodePeerJSON(b []byte, v any) error {
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("answer is not the JSON expected: %w", err)
	}
	return nil
}

// serveAdminInternal answers a peer's admin request; it reports false if path is not an admin endpoint. The hop
// is verified already.
func (s *Server) serveAdminInternal(w http.ResponseWriter, r *http.Request, from string) bool {
	q := r.URL.Query()
	switch {
	case r.URL.Path == adminReplicaPath && r.Method == http.MethodGet:
		writeJSON(w, s.selfView())
	case r.URL.Path == adminTunnelsPath && r.Method == http.MethodGet:
		limit, err := strconv.Atoi(q.Get("limit"))
		if err != nil || limit < 1 || limit > listMaxLimit+1 {
			writeError(w, http.StatusBadRequest, codeBadRequest, "limit out of range")
			return true
		}
		tq := TunnelQuery{Prefix: q.Get("prefix"), After: q.Get("after"), Replica: q.Get("replica"), Limit: limit}
		for _, kv := range q["label"] {
			if k, v, ok := strings.Cut(kv, "="); ok && len(tq.Labels) < 16 {
				tq.Labels = append(tq.Labels, [2]string{k, v})
			}
		}
		writeJSON(w, struct {
			Tunnels []TunnelView `json:"tunnels"`
		}{s.localTunnels(tq)})
	case r.URL.Path == adminKickPath && r.Method == http.MethodPost:
		id := q.Get("host")
		if !validHostID(id) {
			writeError(w, http.StatusBadRequest, codeInvalidHostID, "bad host id")
			return true
		}
		s.log.Info("admin kick from a peer", "host_id", id, "from_replica", from)
		writeJSON(w, s.kickLocal(id, truncateText(q.Get("msg"), 100)))
	case r.URL.Path == adminDrainPath && r.Method == http.MethodPost:
		exit := q.Get("exit") == "true"
		s.log.Info("admin drain from a peer", "from_replica", from, "exit", exit)
		writeJSON(w, drainResult{Replica: s.cfg.Replica, Started: s.requestDrain(exit), Exit: exit})
	case r.URL.Path == adminRevokedPath && r.Method == http.MethodPost:
		rv, err := revokeRequest{JTI: q.Get("jti"), Sub: q.Get("sub"), Until: q.Get("until")}.revocation(time.Now())
		if err != nil {
			writeError(w, http.StatusBadRequest, codeBadRequest, "revoke: "+err.Error())
			return true
		}
		s.revoked.add(rv)
		writeJSON(w, s.cutRevoked())
	default:
		return false
	}
	return true
}
