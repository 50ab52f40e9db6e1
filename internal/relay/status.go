package relay

import (
	"bytes"
	"cmp"
	"context"
	"embed"
	"encoding/json"
	"errors"
	"html/template"
	"net/http"
	"slices"
	"time"

	"github.com/switchboard-relay/switchboard/internal/auth"
	"github.com/switchboard-relay/switchboard/internal/presence"
	"github.com/switchboard-relay/switchboard/internal/sse"
)

// The status page (docs/operations.md, "Status page"): GET /status shows the cluster to an operator — replicas,
// hosts online, exchanges per second, errors by code and recent presence events — and keeps itself up to date over
// GET /status/events (SSE, one snapshot every statusInterval). The HTML is rendered here, with its CSS and script
// embedded in the binary and served from /status/assets/: no external asset, no build toolchain.
//
// Where: on the metrics listener (MetricsHandler), never on the public one. The public origin serves hosts' pages
// in path mode (/hosts/{id}/...): a host's script there is same-origin with anything else the relay serves, so it
// could read the status page with the operator's cookie. The metrics listener serves no host content.
//
// Who may see it: admin tokens only, like the admin API it is built on (ClusterReplicas). A browser presents the
// token once, as ?access_token= on a navigation to /status; the relay answers 303 to /status and sets
// statusCookie: HttpOnly, SameSite=Strict, Path=/status, Secure over TLS. Its value is not the token but a status
// session sealed for this purpose (seal.go): the token's subject and id and an end, the token's own or
// statusSessionTTL from now, whichever is sooner. A cookie is not kept apart by port, so the public listener on the
// same host name receives it too; sealed, it grants nothing there nor at the admin API, and it can only be read by
// the relay that sealed it (or its cluster, which shares the key). The cookie is read on GET /status and
// /status/events only; a revocation of the token's id or subject ends the session as it ends the token, and a stream
// ends when its session or token ends.

// statusCookie is the name of the status page's session cookie.
const statusCookie = "switchboard_admin"

// statusSessionTTL bounds a status session: a long-lived admin token does not make a long-lived cookie.
const statusSessionTTL = 12 * time.Hour

// statusInterval is how often a status stream sends a snapshot.
const statusInterval = 2 * time.Second

// maxStatusStreams bounds the status streams one replica serves at once: each asks every peer for its figures
// every statusInterval.
const maxStatusStreams = 16

// statusEvents is how many recent presence events the page lists.
const statusEvents = 20

//go:embed status
var statusFiles embed.FS

var statusPage = template.Must(template.ParseFS(statusFiles, "status/status.html"))

// statusView is one snapshot of the cluster as the status page shows it; GET /status/events sends it as JSON.
type statusView struct {
	At      time.Time `json:"at"`
	Replica string    `json:"replica"` // the replica that answered
	// Replicas are every replica of the cluster (ClusterReplicas), this one first.
	Replicas []ReplicaView `json:"replicas"`
	// HostsOnline is the number of tunnels on the replicas that answered.
	HostsOnline int `json:"hosts_online"`
	// Unreachable counts the replicas that did not answer: their figures are missing from the sums.
	Unreachable int   `json:"unreachable"`
	InFlight    int64 `json:"exchanges_in_flight"`
	// Exchanges is the number of client exchanges the answering replicas ended since they started.
	Exchanges int64 `json:"exchanges_total"`
	// PerSecond is the rate of Exchanges since the stream's previous snapshot; null in the first.
	PerSecond *float64 `json:"exchanges_per_second"`
	// Errors are the answering replicas' exchanges by error code, most frequent first.
	Errors []errorCount `json:"errors"`
	// Events are the most recent presence events of the cluster that this replica has seen, newest first.
	Events []presence.Event `json:"events"`
}

// errorCount is one row of statusView.Errors.
type errorCount struct {
	Code  string `json:"code"`
	Count int64  `json:"count"`
}

// routeStatus adds the status page to m, the metrics listener's mux.
func (s *Server) routeStatus(m *http.ServeMux) {
	m.HandleFunc("GET /status", s.handleStatus)
	m.HandleFunc("GET /status/events", s.handleStatusEvents)
	assets := http.FileServerFS(statusFiles)
	m.HandleFunc("GET /status/assets/{file}", func(w http.ResponseWriter, r *http.Request) {
		switch f := r.PathValue("file"); f {
		case "status.css", "status.js":
			statusHeaders(w.Header())
			w.Header().Set("Cache-Control", "no-cache")
			r2 := r.Clone(r.Context())
			r2.URL.Path = "/status/" + f
			assets.ServeHTTP(w, r2)
		default:
			writeError(w, http.StatusNotFound, codeNotFound, "no such asset")
		}
	})
}

// statusHeaders are the headers of every answer of the status page: nothing but its own assets may run or load,
// no other site may frame it, and no address it links to learns where the operator came from.
func statusHeaders(h http.Header) {
	h.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "+
		"img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "no-referrer")
}

// authorizeStatus checks that r may see the status page (statusClaims). On failure it has answered: as
// AuthorizeAdmin for a token in Authorization; 401 unauthorized without a cookie; 401 unauthorized, and the cookie
// cleared, for a session that does not open.
func (s *Server) authorizeStatus(w http.ResponseWriter, r *http.Request) (auth.Claims, bool) {
	claims, err := s.statusClaims(r)
	var bad *statusSessionError
	switch {
	case err == nil:
		return claims, true
	case errors.Is(err, errNoStatusSession):
		writeError(w, http.StatusUnauthorized, codeUnauthorized,
			"the status page takes an admin token: open /status?access_token=TOKEN once (switchboard token admin)")
	case errors.As(err, &bad):
		s.clearStatusCookie(w, r)
		writeError(w, http.StatusUnauthorized, codeUnauthorized, bad.Error()+": open /status?access_token=TOKEN again")
	default:
		refuseAdmin(w, err)
	}
	return auth.Claims{}, false
}

// errNoStatusSession is the cause of refusing a status request that carries neither Authorization nor a status
// cookie.
var errNoStatusSession = errors.New("no admin token and no status session")

// statusSessionError is the cause of refusing a status cookie whose session does not open: reason, from
// openStatusSession, completes "the status page's session ...".
type statusSessionError struct{ reason error }

func (e *statusSessionError) Error() string { return "the status page's session " + e.reason.Error() }

// statusClaims returns the claims r may see the status page with: the admin token in Authorization if r has that
// header (adminClaims, whose errors it returns), or else the session in statusCookie, revocations and expiry
// included (errNoStatusSession without one, a *statusSessionError if it does not open). Both the first check of a
// request (authorizeStatus) and a stream's re-checks read r through it, so they cannot disagree.
func (s *Server) statusClaims(r *http.Request) (auth.Claims, error) {
	if r.Header.Get("Authorization") != "" {
		return s.adminClaims(r)
	}
	c, err := r.Cookie(statusCookie)
	if err != nil || c.Value == "" {
		return auth.Claims{}, errNoStatusSession
	}
	claims, err := s.openStatusSession(c.Value, time.Now())
	if err != nil {
		return auth.Claims{}, &statusSessionError{reason: err}
	}
	return claims, nil
}

// statusSession is what a status cookie holds, sealed.
type statusSession struct {
	Subject string `json:"sub"`
	ID      string `json:"jti,omitempty"`
	End     int64  `json:"end"` // Unix milliseconds
}

// sealStatusSession returns the cookie value for a session of claims, an admin token's, and when it ends.
func (s *Server) sealStatusSession(claims auth.Claims, now time.Time) (string, time.Time) {
	end := now.Add(statusSessionTTL)
	if !claims.ExpiresAt.IsZero() && claims.ExpiresAt.Before(end) {
		end = claims.ExpiresAt
	}
	end = end.Truncate(time.Millisecond)
	b, _ := json.Marshal(statusSession{Subject: claims.Subject, ID: claims.ID, End: end.UnixMilli()})
	return s.seal.sealRandom(sealStatus, string(b)), end
}

// openStatusSession returns the claims of the admin token a status cookie's session was started with, or an error
// that completes "the status page's session ...".
func (s *Server) openStatusSession(v string, now time.Time) (auth.Claims, error) {
	plain, err := s.seal.open(sealStatus, v)
	var ss statusSession
	if err != nil || json.Unmarshal([]byte(plain), &ss) != nil {
		return auth.Claims{}, errors.New("is not one this relay started")
	}
	claims := auth.Claims{Subject: ss.Subject, ID: ss.ID, Kind: auth.KindAdmin, ExpiresAt: time.UnixMilli(ss.End)}
	switch {
	case !now.Before(claims.ExpiresAt):
		return auth.Claims{}, errors.New("has expired")
	case s.revoked.revoked(claims, now):
		return auth.Claims{}, errors.New("was revoked")
	}
	return claims, nil
}

// startStatusSession trades an admin token in ?access_token= for statusCookie: 303 to /status without it. It
// reports false, having written nothing, if r carries no token in its query.
func (s *Server) startStatusSession(w http.ResponseWriter, r *http.Request) bool {
	tok, fromQuery := auth.FromRequest(r)
	if !fromQuery {
		return false
	}
	statusHeaders(w.Header())
	claims, err := s.cfg.Verifier.Verify(r.Context(), tok)
	switch {
	case err != nil:
		writeError(w, http.StatusUnauthorized, codeUnauthorized, "admin token invalid or expired")
		return true
	case !claims.IsAdmin():
		writeError(w, http.StatusForbidden, codeAdminRequired, "the status page takes an admin token, not a host or client token")
		return true
	}
	now := time.Now()
	session, end := s.sealStatusSession(claims, now)
	c := &http.Cookie{Name: statusCookie, Value: session, Path: "/status", HttpOnly: true,
		SameSite: http.SameSiteStrictMode, Secure: s.clientProto(r) == "https",
		Expires: end, MaxAge: max(1, int(end.Sub(now).Seconds()))}
	s.logAdmin(r, claims, actStatus)
	h := w.Header()
	h.Add("Set-Cookie", c.String())
	h.Set("Location", "/status")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusSeeOther)
	return true
}

// clearStatusCookie removes a status session that no longer verifies.
func (s *Server) clearStatusCookie(w http.ResponseWriter, r *http.Request) {
	c := &http.Cookie{Name: statusCookie, Value: "", Path: "/status", MaxAge: -1, HttpOnly: true,
		SameSite: http.SameSiteStrictMode, Secure: s.clientProto(r) == "https"}
	w.Header().Add("Set-Cookie", c.String())
}

func (s *Server) handleStatus(w http.ResponseWriter, r *http.Request) {
	if s.startStatusSession(w, r) {
		return
	}
	statusHeaders(w.Header())
	if _, ok := s.authorizeStatus(w, r); !ok {
		return
	}
	v := s.statusSnapshot(r.Context(), nil)
	var buf bytes.Buffer
	if err := statusPage.Execute(&buf, v); err != nil {
		s.log.Error("status page", "err", err)
		writeError(w, http.StatusInternalServerError, "internal", "the status page could not be rendered")
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	_, _ = w.Write(buf.Bytes())
}

// handleStatusEvents streams a statusView every statusInterval until the client leaves, the relay closes, or the
// token expires or is revoked.
func (s *Server) handleStatusEvents(w http.ResponseWriter, r *http.Request) {
	statusHeaders(w.Header())
	if _, ok := s.authorizeStatus(w, r); !ok {
		return
	}
	// A draining replica keeps serving its status page (a drain without exit leaves it up, and the page is how an
	// operator watches it); streams end when the relay closes.
	if s.closed.Load() {
		writeError(w, http.StatusServiceUnavailable, codeDraining, "relay is closing")
		return
	}
	if n := s.statusStreams.Add(1); n > maxStatusStreams {
		s.statusStreams.Add(-1)
		writeError(w, http.StatusTooManyRequests, codeRateLimited, "too many status pages open on this replica")
		return
	}
	defer s.statusStreams.Add(-1)
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	stop := context.AfterFunc(s.ctx, cancel)
	defer stop()

	st := sse.Start(w, s.cfg.StallTimeout, s.bounds.cuts.WithLabelValues(cutStalledReader))
	var prev *statusView
	t := time.NewTicker(statusInterval)
	defer t.Stop()
	st.Append("retry: 2000\n\n")
	for {
		v := s.statusSnapshot(ctx, prev)
		if ctx.Err() != nil {
			return
		}
		data, err := json.Marshal(v)
		if err != nil {
			return
		}
		st.Event("", "snapshot", data)
		if st.Flush() != nil {
			return
		}
		prev = &v
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if _, err := s.statusClaims(r); err != nil {
			return // expired or revoked: the page shows the stream ended and asks for the token again
		}
	}
}

// statusSnapshot gathers the cluster's figures; prev, the stream's previous snapshot, gives the rate.
func (s *Server) statusSnapshot(ctx context.Context, prev *statusView) statusView {
	v := statusView{At: time.Now().UTC(), Replica: s.cfg.Replica, Replicas: s.ClusterReplicas(ctx)}
	byCode := map[string]int64{}
	for _, rv := range v.Replicas {
		if !rv.Reachable {
			v.Unreachable++
			continue
		}
		v.HostsOnline += rv.Tunnels
		v.InFlight += rv.Exchanges
		v.Exchanges += rv.ExchangesTotal
		for code, n := range rv.Errors {
			byCode[code] += n
		}
	}
	v.Errors = make([]errorCount, 0, len(byCode))
	for code, n := range byCode {
		v.Errors = append(v.Errors, errorCount{code, n})
	}
	slices.SortFunc(v.Errors, func(a, b errorCount) int { return cmp.Or(cmp.Compare(b.Count, a.Count), cmp.Compare(a.Code, b.Code)) })
	if prev != nil {
		v.PerSecond = exchangeRate(prev, &v)
	}
	v.Events = s.hub.Recent(statusEvents)
	for i := range v.Events {
		v.Events[i].ID = "" // the log's raw position: nothing the page needs
	}
	return v
}

// exchangeRate is the cluster's exchanges per second between two snapshots: the sum, over the replicas that
// answered both times without restarting in between, of what each ended meanwhile. A replica that restarted,
// joined or stopped answering adds nothing rather than a jump of its whole total.
func exchangeRate(prev, cur *statusView) *float64 {
	dt := cur.At.Sub(prev.At).Seconds()
	if dt <= 0 {
		return nil
	}
	type mark struct {
		started time.Time
		total   int64
	}
	before := make(map[string]mark, len(prev.Replicas))
	for _, rv := range prev.Replicas {
		if rv.Reachable && rv.Started != nil {
			before[rv.ID] = mark{*rv.Started, rv.ExchangesTotal}
		}
	}
	var n int64
	for _, rv := range cur.Replicas {
		if b, ok := before[rv.ID]; ok && rv.Reachable && rv.Started != nil && rv.Started.Equal(b.started) && rv.ExchangesTotal >= b.total {
			n += rv.ExchangesTotal - b.total
		}
	}
	rate := float64(n) / dt
	return &rate
}
