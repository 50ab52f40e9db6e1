package relay

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/coder/websocket"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/switchboard-relay/switchboard/internal/auth"
	"github.com/switchboard-relay/switchboard/internal/directory"
	"github.com/switchboard-relay/switchboard/internal/hostsapi"
	"github.com/switchboard-relay/switchboard/internal/tunnel"
	"github.com/switchboard-relay/switchboard/internal/version"
)

// The admin API (docs/operations.md, "Admin API"): /v1/admin/ on the public listener, for admin tokens only
// (auth.Claims.IsAdmin), answered for the whole cluster from any replica. A replica asks its peers over the
// internal protocol (signed hops, internal.go) and reports a peer that does not answer as unreachable, never
// leaves it out.
//
// For Go code in this package (a status page), the same answers are Go values: ClusterReplicas, ClusterTunnels;
// AuthorizeAdmin and RequireAdmin are the admin check.

// Admin actions, the values of switchboard_admin_actions_total's "action" label.
const (
	actReplicas = "replicas"
	actTunnels  = "tunnels"
	actKick     = "kick"
	actDrain    = "drain"
	actRevoke   = "revoke"
	actStatus   = "status" // a browser traded an admin token for a status page session (status.go)
)

// Error codes of the admin API.
const (
	codeAdminRequired = "admin_required" // a valid token that is not an admin token
)

type adminMetrics struct {
	actions *prometheus.CounterVec // action
}

func newAdminMetrics(reg prometheus.Registerer) *adminMetrics {
	m := &adminMetrics{actions: prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "switchboard", Name: "admin_actions_total",
		Help: "Calls of the admin API that passed the admin check, by action (replicas, tunnels, kick, drain, revoke; status: a status page session started).",
	}, []string{"action"})}
	for _, a := range []string{actReplicas, actTunnels, actKick, actDrain, actRevoke, actStatus} {
		m.actions.WithLabelValues(a)
	}
	reg.MustRegister(m.actions)
	return m
}

// AuthorizeAdmin checks that r carries an admin token (Authorization: Bearer only: never a query parameter or a
// cookie, so an admin token is never in a URL or a browser's jar). On failure it has answered: 401 unauthorized
// without a valid token, 403 admin_required with a host or client token (or without authentication configured).
func (s *Server) AuthorizeAdmin(w http.ResponseWriter, r *http.Request) (auth.Claims, bool) {
	claims, err := s.adminClaims(r)
	if err != nil {
		refuseAdmin(w, err)
		return auth.Claims{}, false
	}
	return claims, true
}

// errAdminRequired is the cause of refusing a valid token that is not an admin token.
var errAdminRequired = errors.New("not an admin token")

// adminClaims returns the claims of the admin token r carries in Authorization: Bearer (AuthorizeAdmin's rule),
// or the verifier's error, or errAdminRequired for a valid token that is not an admin token.
func (s *Server) adminClaims(r *http.Request) (auth.Claims, error) {
	token, fromQuery := auth.FromRequest(r)
	if fromQuery {
		token = ""
	}
	claims, err := s.cfg.Verifier.Verify(r.Context(), token)
	if err != nil {
		return auth.Claims{}, err
	}
	if !claims.IsAdmin() {
		return auth.Claims{}, errAdminRequired
	}
	return claims, nil
}

// refuseAdmin answers a request that adminClaims refused with err: 403 admin_required for errAdminRequired, 401
// unauthorized otherwise.
func refuseAdmin(w http.ResponseWriter, err error) {
	if errors.Is(err, errAdminRequired) {
		writeError(w, http.StatusForbidden, codeAdminRequired, "the admin API takes an admin token (switchboard token admin), not a host or client token")
		return
	}
	writeError(w, http.StatusUnauthorized, codeUnauthorized, "admin token missing, invalid or expired (send it as Authorization: Bearer)")
}

// RequireAdmin wraps h so that only admin tokens reach it (AuthorizeAdmin).
func (s *Server) RequireAdmin(h func(w http.ResponseWriter, r *http.Request, admin auth.Claims)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if c, ok := s.AuthorizeAdmin(w, r); ok {
			h(w, r, c)
		}
	})
}

// routeAdmin adds the admin API to the public mux.
func (s *Server) routeAdmin() {
	s.mux.Handle("GET /v1/admin/replicas", s.RequireAdmin(s.handleAdminReplicas))
	s.mux.Handle("GET /v1/admin/tunnels", s.RequireAdmin(s.handleAdminTunnels))
	s.mux.Handle("POST /v1/admin/hosts/{id}/kick", s.RequireAdmin(s.handleAdminKick))
	s.mux.Handle("POST /v1/admin/replicas/{id}/drain", s.RequireAdmin(s.handleAdminDrain))
	s.mux.Handle("POST /v1/admin/revoke", s.RequireAdmin(s.handleAdminRevoke))
	s.mux.Handle("/v1/admin/", s.RequireAdmin(func(w http.ResponseWriter, r *http.Request, _ auth.Claims) {
		writeError(w, http.StatusNotFound, codeNotFound, "no such admin endpoint")
	}))
}

// logAdmin logs and counts one admin action: who (the token's subject and id), what, and the details.
func (s *Server) logAdmin(r *http.Request, admin auth.Claims, action string, args ...any) {
	s.admin.actions.WithLabelValues(action).Inc()
	s.log.Info("admin action", append([]any{"action", action, "admin_subject", admin.Subject, "admin_jti", admin.ID,
		"remote", clientIP(r)}, args...)...)
}

// ReplicaView is one replica as GET /v1/admin/replicas shows it. A replica that did not answer has only ID,
// InternalURL and Error.
type ReplicaView struct {
	ID          string     `json:"id"`
	InternalURL string     `json:"internal_url"`
	Reachable   bool       `json:"reachable"`
	Error       string     `json:"error,omitempty"`
	Version     string     `json:"version,omitempty"`
	Started     *time.Time `json:"started,omitempty"`
	Draining    bool       `json:"draining"`
	Tunnels     int        `json:"tunnels"`
	Exchanges   int64      `json:"exchanges_in_flight"`
	// ExchangesTotal counts the client exchanges the replica ended since it started, and Errors those of them that
	// failed, by error code (every outcome but ok and session).
	ExchangesTotal int64            `json:"exchanges_total"`
	Errors         map[string]int64 `json:"errors,omitempty"`
	// LeaseAgeSeconds is the time since the replica last refreshed its directory lease; null without a lease
	// (the memory directory).
	LeaseAgeSeconds *float64 `json:"lease_age_seconds"`
}

// selfView is this replica's ReplicaView.
func (s *Server) selfView() ReplicaView {
	started := s.started.UTC()
	v := ReplicaView{ID: s.cfg.Replica, InternalURL: s.cfg.InternalURL, Reachable: true, Version: version.String(),
		Started: &started, Draining: s.draining.Load(), Exchanges: s.exchanges.Load()}
	v.ExchangesTotal, v.Errors = s.tally.read()
	s.mu.Lock()
	v.Tunnels = len(s.tunnels)
	s.mu.Unlock()
	if at := s.dir.LeaseRefreshed(); !at.IsZero() {
		age := time.Since(at).Seconds()
		v.LeaseAgeSeconds = &age
	}
	return v
}

// ClusterReplicas returns every replica of the cluster, this one first and then by id; peers that did not answer
// are marked unreachable.
func (s *Server) ClusterReplicas(ctx context.Context) []ReplicaView {
	out := []ReplicaView{s.selfView()}
	answers := s.askAll(ctx, http.MethodGet, adminReplicaPath, "", nil)
	for _, a := range answers {
		v := ReplicaView{ID: a.replica, InternalURL: a.url}
		if a.err == nil {
			a.err = decodePeerJSON(a.body, &v)
		}
		if a.err != nil {
			v = ReplicaView{ID: a.replica, InternalURL: a.url, Error: a.err.Error()}
		}
		v.ID, v.InternalURL, v.Reachable = a.replica, a.url, a.err == nil
		out = append(out, v)
	}
	return out
}

func (s *Server) handleAdminReplicas(w http.ResponseWriter, r *http.Request, admin auth.Claims) {
	s.logAdmin(r, admin, actReplicas)
	writeJSON(w, struct {
		Replicas []ReplicaView `json:"replicas"`
	}{s.ClusterReplicas(r.Context())})
}

// TunnelView is one tunnel as GET /v1/admin/tunnels shows it.
type TunnelView struct {
	HostID       string            `json:"host_id"`
	Replica      string            `json:"replica"`
	Epoch        uint64            `json:"epoch"`
	ConnectedAt  time.Time         `json:"connected_at"`
	RemoteAddr   string            `json:"remote_addr"`
	Transport    string            `json:"transport"`
	AgentVersion string            `json:"agent_version"`
	Name         string            `json:"name"`
	OS           string            `json:"os"`
	Labels       map[string]string `json:"labels"`
	StreamsOpen  int               `json:"streams_open"`
	// BytesIn is what the relay received from the agent over the tunnel (yamux framing included), BytesOut what it
	// sent.
	BytesIn  int64 `json:"bytes_in"`
	BytesOut int64 `json:"bytes_out"`
	// PingRTTSeconds is the round trip of the tunnel's last answered liveness ping; null before the first.
	PingRTTSeconds *float64 `json:"last_ping_rtt_seconds"`
}

// TunnelQuery selects tunnels: the filters of GET /v1/hosts (prefix, label) plus replica, and a page.
type TunnelQuery struct {
	Prefix  string
	Labels  [][2]string
	Replica string
	Limit   int
	// After is the position to continue from: "" for the first page, else a cursor's content (tunnelKey).
	After string
}

// TunnelPage is one page of tunnels; NextCursor is "" on the last page. Unreachable lists the replicas that did
// not answer: their tunnels are missing from the page.
type TunnelPage struct {
	Tunnels     []TunnelView  `json:"tunnels"`
	NextCursor  string        `json:"next_cursor"`
	Unreachable []ReplicaView `json:"unreachable"`
}

// tunnelKey orders tunnels by host id, then replica (a host may briefly have a tunnel on two replicas).
func tunnelKey(hostID, replica string) string { return hostID + "\x00" + replica }

// localTunnels returns this replica's tunnels that q selects after q.After, in key order, at most q.Limit.
func (s *Server) localTunnels(q TunnelQuery) []TunnelView {
	if q.Replica != "" && q.Replica != s.cfg.Replica {
		return []TunnelView{}
	}
	f := hostsapi.Filter{Labels: q.Labels}
	out := []TunnelView{}
	for _, t := range s.snapshot() {
		if !strings.HasPrefix(t.hostID, q.Prefix) || tunnelKey(t.hostID, s.cfg.Replica) <= q.After ||
			!f.Keep(directory.Record{HostID: t.hostID, Online: true, ConnectedAt: t.connectedAt, Metadata: t.meta}) {
			continue
		}
		out = append(out, s.tunnelView(t))
	}
	slices.SortFunc(out, func(a, b TunnelView) int { return strings.Compare(a.HostID, b.HostID) })
	return out[:min(len(out), q.Limit)]
}

// tunnelView shows t.
func (s *Server) tunnelView(t *tunnelConn) TunnelView {
	v := TunnelView{HostID: t.hostID, Replica: s.cfg.Replica, Epoch: t.epoch, ConnectedAt: t.connectedAt.UTC(),
		RemoteAddr: t.remote, Transport: t.transportName, AgentVersion: t.meta.AgentVersion, Name: t.meta.Name,
		OS: t.meta.OS, Labels: t.meta.Labels, StreamsOpen: t.sess.NumStreams(), BytesIn: t.counted.in.Load(),
		BytesOut: t.counted.out.Load()}
	if v.Labels == nil {
		v.Labels = map[string]string{}
	}
	if rtt := t.rtt.Load(); rtt > 0 {
		sec := time.Duration(rtt).Seconds()
		v.PingRTTSeconds = &sec
	}
	return v
}

// ClusterTunnels returns one page of the tunnels of every replica that q selects.
func (s *Server) ClusterTunnels(ctx context.Context, q TunnelQuery) TunnelPage {
	// Each replica gives its first q.Limit+1 after q.After: the first q.Limit of them all are the cluster's, and
	// one more says whether a next page exists.
	lq := q
	lq.Limit++
	all := s.localTunnels(lq)
	page := TunnelPage{Unreachable: []ReplicaView{}}
	var answers []peerAnswer
	switch {
	case q.Replica == s.cfg.Replica:
	case q.Replica == "":
		answers = s.askAll(ctx, http.MethodGet, adminTunnelsPath, tunnelQueryString(q), nil)
	case len(s.cfg.ClusterSecret) > 0: // one other replica: ask it alone
		base, err := s.adminPeerURL(ctx, q.Replica)
		switch {
		case errors.Is(err, errGone) || errors.Is(err, errUnknownPeer): // no such replica: an empty page
		case err != nil:
			answers = []peerAnswer{{replica: q.Replica, err: err}}
		default:
			answers = []peerAnswer{s.askPeer(ctx, q.Replica, base, http.MethodGet, adminTunnelsPath, tunnelQueryString(q), nil)}
		}
	}
	for _, a := range answers {
		var got struct {
			Tunnels []TunnelView `json:"tunnels"`
		}
		if a.err == nil {
			a.err = decodePeerJSON(a.body, &got)
		}
		if a.err != nil {
			page.Unreachable = append(page.Unreachable, ReplicaView{ID: a.replica, InternalURL: a.url, Error: a.err.Error()})
			continue
		}
		all = append(all, got.Tunnels[:min(len(got.Tunnels), lq.Limit)]...)
	}
	slices.SortFunc(all, func(a, b TunnelView) int {
		return strings.Compare(tunnelKey(a.HostID, a.Replica), tunnelKey(b.HostID, b.Replica))
	})
	if len(all) > q.Limit {
		all = all[:q.Limit]
		last := all[len(all)-1]
		page.NextCursor = s.seal.seal(sealCursor, tunnelKey(last.HostID, last.Replica))
	}
	page.Tunnels = all
	return page
}

// tunnelQueryString encodes q for a peer.
func tunnelQueryString(q TunnelQuery) string {
	v := url.Values{"limit": {strconv.Itoa(q.Limit + 1)}, "prefix": {q.Prefix}, "after": {q.After}, "replica": {q.Replica}}
	for _, kv := range q.Labels {
		v.Add("label", kv[0]+"="+kv[1])
	}
	return v.Encode()
}

func (s *Server) handleAdminTunnels(w http.ResponseWriter, r *http.Request, admin auth.Claims) {
	lq, ok := s.hosts.ParseListQuery(w, r, func(c string) bool {
		id, replica, ok := strings.Cut(c, "\x00")
		return ok && validHostID(id) && replica != ""
	})
	if !ok {
		return
	}
	q := TunnelQuery{Prefix: lq.Prefix, Labels: lq.Filter.Labels, Replica: r.URL.Query().Get("replica"),
		Limit: lq.Limit, After: lq.After}
	s.logAdmin(r, admin, actTunnels)
	writeJSON(w, s.ClusterTunnels(r.Context(), q))
}

// kickResult is the answer to a kick.
type kickResult struct {
	HostID      string        `json:"host_id"`
	Closed      []string      `json:"closed_on"` // replicas that held and closed a tunnel of the host
	BannedUntil *time.Time    `json:"banned_until"`
	Unreachable []ReplicaView `json:"unreachable"`
}

func (s *Server) handleAdminKick(w http.ResponseWriter, r *http.Request, admin auth.Claims) {
	id := r.PathValue("id")
	if !validHostID(id) {
		writeError(w, http.StatusBadRequest, codeInvalidHostID, "host id must be 1-128 printable bytes")
		return
	}
	body, ok := readAdminBody(w, r)
	if !ok {
		return
	}
	ban, err := parseKick(body)
	if err != nil {
		writeError(w, http.StatusBadRequest, codeBadRequest, "kick: "+err.Error())
		return
	}
	res := kickResult{HostID: id, Closed: []string{}, Unreachable: []ReplicaView{}}
	msg := "kicked by an operator"
	if ban > 0 {
		until := time.Now().Add(ban).UTC().Truncate(time.Millisecond)
		if err := s.dir.Ban(r.Context(), id, until); err != nil {
			if errors.Is(err, directory.ErrInvalid) {
				writeError(w, http.StatusConflict, codeConflict, "ban refused: "+err.Error())
				return
			}
			s.log.Warn("ban not stored", "host_id", id, "err", err)
			writeError(w, http.StatusServiceUnavailable, codeDirectoryUnavailable, "directory unavailable: the ban was not stored")
			return
		}
		res.BannedUntil = &until
		msg = "banned by an operator until " + until.Format(time.RFC3339)
	}
	s.logAdmin(r, admin, actKick, "host_id", id, "ban", ban.String())
	if s.kickLocal(id, msg) {
		res.Closed = append(res.Closed, s.cfg.Replica)
	}
	for _, a := range s.askAll(r.Context(), http.MethodPost, adminKickPath, url.Values{"host": {id}, "msg": {msg}}.Encode(), nil) {
		switch {
		case a.err != nil:
			res.Unreachable = append(res.Unreachable, ReplicaView{ID: a.replica, InternalURL: a.url, Error: a.err.Error()})
		case strings.TrimSpace(string(a.body)) == "true":
			res.Closed = append(res.Closed, a.replica)
		}
	}
	writeJSON(w, res)
}

// kickLocal closes hostID's tunnel here with 4410 and msg, and reports whether there was one.
func (s *Server) kickLocal(hostID, msg string) bool {
	s.lastKick.Store(time.Now().UnixNano()) // before the lookup: see serveTunnel
	t := s.lookup(hostID)
	if t == nil {
		return false
	}
	t.log.Info("tunnel kicked by an operator", "message", msg)
	s.spawn(func() { t.close(tunnel.CloseKicked, msg, "kicked") }) // none once Close began: Close closes it
	return true
}

// drainResult is the answer to a drain request.
type drainResult struct {
	Replica string `json:"replica"`
	Started bool   `json:"started"` // false: it was draining already
	Exit    bool   `json:"exit"`
}

func (s *Server) handleAdminDrain(w http.ResponseWriter, r *http.Request, admin auth.Claims) {
	id := r.PathValue("id")
	if id == "self" {
		id = s.cfg.Replica
	}
	exit := false
	switch v := r.URL.Query().Get("exit"); v {
	case "", "false":
	case "true":
		exit = true
	default:
		writeError(w, http.StatusBadRequest, codeBadRequest, "exit must be true or false")
		return
	}
	s.logAdmin(r, admin, actDrain, "replica", id, "exit", exit)
	if id == s.cfg.Replica {
		writeJSON(w, drainResult{Replica: id, Started: s.requestDrain(exit), Exit: exit})
		return
	}
	if len(s.cfg.ClusterSecret) == 0 {
		writeError(w, http.StatusNotFound, codeNotFound, "no such replica")
		return
	}
	base, err := s.adminPeerURL(r.Context(), id)
	switch {
	case errors.Is(err, errGone) || errors.Is(err, errUnknownPeer):
		writeError(w, http.StatusNotFound, codeNotFound, "no such replica (it advertises no internal URL)")
		return
	case err != nil:
		writeError(w, http.StatusServiceUnavailable, codeDirectoryUnavailable, "the replica's internal URL could not be read: "+err.Error())
		return
	}
	a := s.askPeer(r.Context(), id, base, http.MethodPost, adminDrainPath, "exit="+strconv.FormatBool(exit), nil)
	if a.err != nil {
		writeError(w, http.StatusBadGateway, codeReplicaUnreachable, "replica "+id+" did not take the drain request: "+a.err.Error())
		return
	}
	var res drainResult
	if err := decodePeerJSON(a.body, &res); err != nil {
		writeError(w, http.StatusBadGateway, codeReplicaUnreachable, "replica "+id+" answered: "+err.Error())
		return
	}
	writeJSON(w, res)
}

// requestDrain starts the drain SIGTERM starts: through Config.OnDrainRequest when set (the process decides, and
// exits if asked), else here under the Server's own goroutine group. It reports false if a drain had begun.
func (s *Server) requestDrain(exit bool) bool {
	if s.draining.Load() || !s.drainAsked.CompareAndSwap(false, true) {
		return false
	}
	if s.cfg.OnDrainRequest != nil {
		s.cfg.OnDrainRequest(exit)
		return true
	}
	return s.spawn(func() {
		ctx, cancel := context.WithTimeout(s.ctx, 30*time.Second)
		defer cancel()
		if err := s.Drain(ctx); err != nil && !errors.Is(err, ErrAlreadyDraining) { // Drain logs its report
			s.log.Warn("drain ended with exchanges in flight", "err", err)
		}
	})
}

// revokeResult is the answer to a revocation.
type revokeResult struct {
	Revocation  directory.Revocation `json:"revocation"`
	Closed      int                  `json:"closed"` // tunnels and live client sessions closed, over every replica
	Unreachable []ReplicaView        `json:"unreachable"`
}

func (s *Server) handleAdminRevoke(w http.ResponseWriter, r *http.Request, admin auth.Claims) {
	body, ok := readAdminBody(w, r)
	if !ok {
		return
	}
	rv, err := parseRevoke(body, time.Now())
	if err != nil {
		writeError(w, http.StatusBadRequest, codeBadRequest, "revoke: "+err.Error())
		return
	}
	if err := s.dir.Revoke(r.Context(), rv); err != nil {
		if errors.Is(err, directory.ErrInvalid) { // e.g. the list is full: not the directory being down
			writeError(w, http.StatusConflict, codeConflict, "revocation refused: "+err.Error())
			return
		}
		s.log.Warn("revocation not stored", "err", err)
		writeError(w, http.StatusServiceUnavailable, codeDirectoryUnavailable, "directory unavailable: the revocation was not stored")
		return
	}
	s.logAdmin(r, admin, actRevoke, "jti", rv.TokenID, "sub", rv.Subject, "until", rv.Until.Format(time.RFC3339))
	s.revoked.add(rv)
	res := revokeResult{Revocation: rv, Closed: s.cutRevoked(), Unreachable: []ReplicaView{}}
	// In the query, which the hop signature covers (the body it does not).
	fwd := url.Values{"jti": {rv.TokenID}, "sub": {rv.Subject}, "until": {rv.Until.Format(time.RFC3339Nano)}}.Encode()
	for _, a := range s.askAll(r.Context(), http.MethodPost, adminRevokedPath, fwd, nil) {
		n, err := 0, a.err
		if err == nil {
			n, err = strconv.Atoi(strings.TrimSpace(string(a.body)))
		}
		if err != nil {
			res.Unreachable = append(res.Unreachable, ReplicaView{ID: a.replica, InternalURL: a.url, Error: err.Error()})
			continue
		}
		res.Closed += n
	}
	writeJSON(w, res)
}

// readAdminBody reads at most maxAdminBody bytes of r's body; on failure it has answered.
func readAdminBody(w http.ResponseWriter, r *http.Request) ([]byte, bool) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxAdminBody))
	if err != nil {
		writeError(w, http.StatusBadRequest, codeBadRequest, fmt.Sprintf("body unreadable or longer than %d bytes", maxAdminBody))
		return nil, false
	}
	return body, true
}

// checkRegistration refuses a tunnel of a banned host or of an agent older than Config.MinAgentVersion: it
// returns the close code and message to close the tunnel with, before it is claimed, or ok. Bans live in the
// directory: while it is down (known down, or failing this call) a ban cannot be read, and the tunnel is accepted,
// as its claim is (docs/operations.md, "Kick").
func (s *Server) checkRegistration(ctx context.Context, hostID string, meta directory.Metadata) (websocket.StatusCode, string, bool) {
	if s.minAgent != nil {
		if v, err := parseAgentVersion(meta.AgentVersion); err != nil || v.less(*s.minAgent) {
			got := meta.AgentVersion
			if got == "" {
				got = "none"
			}
			return tunnel.CloseAgentTooOld, "agent version " + truncateText(got, 64) + " is older than the relay's minimum " +
				s.cfg.MinAgentVersion + "; upgrade the agent", false
		}
	}
	if s.health.skip() != nil {
		return 0, "", true // not asked (dirHealth.skip); the tunnel is accepted, as when the directory fails
	}
	until, err := s.dir.BannedUntil(ctx, hostID)
	if err != nil {
		s.log.Warn("ban not checked: directory unavailable; the tunnel is accepted", "host_id", hostID, "err", err)
		return 0, "", true
	}
	if !until.IsZero() {
		return tunnel.CloseKicked, "host banned by an operator until " + until.UTC().Format(time.RFC3339), false
	}
	return 0, "", true
}
