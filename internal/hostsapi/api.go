// Package hostsapi serves the hosts and presence API of the relay (docs/presence.md): GET /v1/hosts/{id} (one
// host's presence and metadata), GET /v1/hosts (a batch by ids, or a listing with filters and pages: hostlist.go)
// and GET /v1/presence/events (presence events as Server-Sent Events: events.go).
//
// Every answer is filtered by the caller's scope, the hosts its client token may reach (auth.Claims.MayReach):
// a host outside it is answered exactly like an unknown one, a listing reads only the parts of the directory in
// scope, and an event stream writes nothing, not even a position, for an event outside it. The positions handed
// to callers (listing cursors, event ids) are sealed (Sealer), so they reveal nothing and cannot be forged.
//
// The API depends on small interfaces rather than on the relay: the directory's records (Records, and a
// Lister for listings), the presence fan-out (Events), sealing (Sealer) and the relay that mounts it
// (Relay: its host URLs, whether it is stopping, and the tie of a long-lived stream to its token's revocation).
// The relay (internal/relay) builds one API in its New and mounts it with Route. Errors are written by package
// reply, as the relay writes its own.
package hostsapi

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/switchboard-relay/switchboard/internal/auth"
	"github.com/switchboard-relay/switchboard/internal/directory"
	"github.com/switchboard-relay/switchboard/internal/presence"
	"github.com/switchboard-relay/switchboard/internal/reply"
	"github.com/switchboard-relay/switchboard/internal/tunnel"
)

// Records gives what the directory knows of hosts (directory.Directory).
type Records interface {
	// Records returns what is known of each of hostIDs, in the same order; a host never seen has a Record with
	// only HostID set.
	Records(ctx context.Context, hostIDs []string) ([]directory.Record, error)
}

// Lister lists the hosts the directory knows (directory.Memory and directory.Redis).
type Lister interface {
	// ListHosts returns up to limit ids of known hosts that start with prefix and sort after `after` (byte order),
	// in byte order. Fewer than limit means there are no more.
	ListHosts(ctx context.Context, prefix, after string, limit int) ([]string, error)
}

// Events serves presence events from the log to many streams (presence.Fanout).
type Events interface {
	// Read returns up to max events after the position after, waiting up to block for one; presence.ErrGap if
	// after fell out of the log.
	Read(ctx context.Context, after string, max int, block time.Duration) ([]presence.Event, error)
	// Newest returns the position of the newest event of the log.
	Newest(ctx context.Context) (string, error)
}

// Sealer seals the positions the API hands callers and opens those they hand back; one Sealer serves one kind of
// position, so a cursor never opens as an event id or the other way round.
type Sealer interface {
	// Seal is deterministic: one position, one sealed value.
	Seal(position string) string
	// SealRandom seals with a random nonce, for a position the caller must not be able to compare with others.
	SealRandom(position string) string
	// Open returns the position sealed in v, or an error if v is not a value sealed for this kind.
	Open(v string) (string, error)
}

// Relay is what the API needs of the relay that mounts it.
type Relay interface {
	// HostURLs returns a host's base URLs as seen from r: on its own origin (host mode; "" if off) and in path mode.
	HostURLs(r *http.Request, id string) (hostURL, pathURL string)
	// Stopping reports whether the relay is draining or closed: event streams end, and new ones are refused.
	Stopping() bool
	// Hold ties a long-lived stream authorized by c to the relay: the returned context ends with ctx, when c's
	// token is revoked, or when the relay closes. release must be called when the stream ends.
	Hold(ctx context.Context, c auth.Claims) (held context.Context, release func())
}

// Config configures an API. Every zero value has a documented default, applied in New.
type Config struct {
	// Verifier checks client tokens. Required.
	Verifier auth.Verifier
	// Directory gives the hosts' records. Required.
	Directory Records
	// Lister lists the hosts of the directory for GET /v1/hosts without ids. If nil, such a call is answered 400.
	Lister Lister
	// Events serves GET /v1/presence/events. Required.
	Events Events
	// Cursors seals GET /v1/hosts cursors, EventIDs presence event ids. Required.
	Cursors, EventIDs Sealer
	// Relay is the relay that mounts the API. Required.
	Relay Relay
	// Logger receives structured logs. If nil, logs are discarded.
	Logger *slog.Logger
	// Registerer receives the API's metrics. If nil, a fresh registry.
	Registerer prometheus.Registerer
	// MaxBatchIDs bounds GET /v1/hosts?ids=. Zero means 100.
	MaxBatchIDs int
	// EventsHeartbeat is how often an event stream writes a comment line, on a fixed schedule from the stream's
	// start. Zero means 15 s.
	EventsHeartbeat time.Duration
	// StallTimeout is how long an event stream's client may accept no bytes before the stream is cut. Zero means
	// 60 s.
	StallTimeout time.Duration
	// Stalled counts event streams cut for StallTimeout. If nil, they are not counted.
	Stalled prometheus.Counter
}

// API serves the hosts and presence API. Mount it on a mux with Route.
type API struct {
	// Immutable after New.
	cfg     Config
	log     *slog.Logger
	metrics *metrics
}

// New validates cfg, applies defaults and returns an API. It starts nothing.
func New(cfg Config) (*API, error) {
	if cfg.Verifier == nil || cfg.Directory == nil || cfg.Events == nil || cfg.Cursors == nil || cfg.EventIDs == nil || cfg.Relay == nil {
		return nil, errors.New("hostsapi: Config.Verifier, Directory, Events, Cursors, EventIDs and Relay are required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Registerer == nil {
		cfg.Registerer = prometheus.NewRegistry()
	}
	if cfg.MaxBatchIDs <= 0 {
		cfg.MaxBatchIDs = 100
	}
	if cfg.EventsHeartbeat <= 0 {
		cfg.EventsHeartbeat = 15 * time.Second
	}
	if cfg.StallTimeout <= 0 {
		cfg.StallTimeout = 60 * time.Second
	}
	return &API{cfg: cfg, log: cfg.Logger, metrics: newMetrics(cfg.Registerer)}, nil
}

// Route adds the API's endpoints to m.
func (a *API) Route(m *http.ServeMux) {
	m.HandleFunc("GET /v1/hosts/{id}", a.handleHost)
	m.HandleFunc("GET /v1/hosts", a.handleHosts)
	m.HandleFunc("GET /v1/presence/events", a.handleEvents)
}

// hostView is a host's presence as the API shows it.
type hostView struct {
	ID             string             `json:"id"`
	Online         bool               `json:"online"`
	ConnectedAt    *time.Time         `json:"connected_at"`
	DisconnectedAt *time.Time         `json:"disconnected_at"`
	Metadata       directory.Metadata `json:"metadata"`
	// URL is the host's base URL for browsers and programs: on its own origin when host mode is on, else in path
	// mode. PathURL is always the path-mode URL.
	URL     string `json:"url"`
	PathURL string `json:"path_url"`
}

// viewOf shows rec to the caller of r.
func (a *API) viewOf(r *http.Request, rec directory.Record) hostView {
	v := hostView{ID: rec.HostID, Online: rec.Online, Metadata: rec.Metadata}
	hostURL, pathURL := a.cfg.Relay.HostURLs(r, rec.HostID)
	v.URL, v.PathURL = pathURL, pathURL
	if hostURL != "" {
		v.URL = hostURL
	}
	if !rec.ConnectedAt.IsZero() {
		t := rec.ConnectedAt.UTC()
		v.ConnectedAt = &t
	}
	if !rec.DisconnectedAt.IsZero() {
		t := rec.DisconnectedAt.UTC()
		v.DisconnectedAt = &t
	}
	if v.Metadata.Labels == nil {
		v.Metadata.Labels = map[string]string{}
	}
	return v
}

// authorizeClient verifies the client token of an API call; on failure it has answered.
func (a *API) authorizeClient(w http.ResponseWriter, r *http.Request) (auth.Claims, bool) {
	token, _ := auth.FromRequest(r)
	claims, err := a.cfg.Verifier.Verify(r.Context(), token)
	if err != nil {
		reply.Error(w, http.StatusUnauthorized, reply.CodeUnauthorized, "client token missing, invalid or expired")
		return claims, false
	}
	if !claims.Unrestricted && claims.Kind != auth.KindClient {
		// A host token reaches no host's presence; refusing it says so instead of serving an empty view.
		reply.Error(w, http.StatusUnauthorized, reply.CodeUnauthorized, "this API takes a client token, not a host token")
		return claims, false
	}
	return claims, true
}

// handleHost answers GET /v1/hosts/{id}. A host the token may not reach is answered exactly like an unknown one.
func (a *API) handleHost(w http.ResponseWriter, r *http.Request) {
	claims, ok := a.authorizeClient(w, r)
	if !ok {
		return
	}
	id := r.PathValue("id")
	if !tunnel.ValidHostID(id) {
		reply.Error(w, http.StatusBadRequest, reply.CodeInvalidHostID, "host id must be 1-128 printable bytes")
		return
	}
	if !claims.MayReach(id) {
		reply.Error(w, http.StatusNotFound, reply.CodeNotFound, "no such host")
		return
	}
	recs, err := a.cfg.Directory.Records(r.Context(), []string{id})
	if err != nil {
		reply.Error(w, http.StatusServiceUnavailable, reply.CodeHostOffline, "directory unavailable")
		return
	}
	if len(recs) != 1 || (recs[0].ConnectedAt.IsZero() && !recs[0].Online) {
		reply.Error(w, http.StatusNotFound, reply.CodeNotFound, "no such host")
		return
	}
	reply.JSON(w, a.viewOf(r, recs[0]))
}

// handleHosts answers GET /v1/hosts?ids=a,b,c with the hosts the token may reach and the relay has seen; without
// ids, it lists hosts (see listHosts).
func (a *API) handleHosts(w http.ResponseWriter, r *http.Request) {
	claims, ok := a.authorizeClient(w, r)
	if !ok {
		return
	}
	if !r.URL.Query().Has("ids") {
		a.listHosts(w, r, claims)
		return
	}
	raw := r.URL.Query().Get("ids")
	if raw == "" {
		reply.Error(w, http.StatusBadRequest, reply.CodeBadRequest, "query parameter ids=a,b,c must list at least one id")
		return
	}
	parts := strings.Split(raw, ",")
	if len(parts) > a.cfg.MaxBatchIDs {
		reply.Error(w, http.StatusBadRequest, reply.CodeTooManyIDs, fmt.Sprintf("at most %d ids per call", a.cfg.MaxBatchIDs))
		return
	}
	ids := make([]string, 0, len(parts))
	seen := make(map[string]bool, len(parts))
	for _, id := range parts {
		if !tunnel.ValidHostID(id) {
			reply.Error(w, http.StatusBadRequest, reply.CodeInvalidHostID, "host id must be 1-128 printable bytes")
			return
		}
		if claims.MayReach(id) && !seen[id] {
			seen[id] = true
			ids = append(ids, id)
		}
	}
	recs, err := a.cfg.Directory.Records(r.Context(), ids)
	if err != nil {
		reply.Error(w, http.StatusServiceUnavailable, reply.CodeHostOffline, "directory unavailable")
		return
	}
	out := struct {
		Hosts []hostView `json:"hosts"`
	}{Hosts: []hostView{}}
	for _, rec := range recs {
		if rec.ConnectedAt.IsZero() && !rec.Online {
			continue
		}
		out.Hosts = append(out.Hosts, a.viewOf(r, rec))
	}
	reply.JSON(w, out)
}
