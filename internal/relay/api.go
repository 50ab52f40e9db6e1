package relay

import (
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/switchboard-relay/switchboard/internal/auth"
	"github.com/switchboard-relay/switchboard/internal/directory"
)

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
func (s *Server) viewOf(r *http.Request, rec directory.Record) hostView {
	v := hostView{ID: rec.HostID, Online: rec.Online, Metadata: rec.Metadata}
	hostURL, pathURL := s.hostURLs(r, rec.HostID)
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
func (s *Server) authorizeClient(w http.ResponseWriter, r *http.Request) (auth.Claims, bool) {
	token, _ := auth.FromRequest(r)
	claims, err := s.cfg.Verifier.Verify(r.Context(), token)
	if err != nil {
		writeError(w, http.StatusUnauthorized, codeUnauthorized, "client token missing, invalid or expired")
		return claims, false
	}
	if !claims.Unrestricted && claims.Kind != auth.KindClient {
		// A host token reaches no host's presence; refusing it says so instead of serving an empty view.
		writeError(w, http.StatusUnauthorized, codeUnauthorized, "this API takes a client token, not a host token")
		return claims, false
	}
	return claims, true
}

// handleHost answers GET /v1/hosts/{id}. A host the token may not reach is answered exactly like an unknown one.
func (s *Server) handleHost(w http.ResponseWriter, r *http.Request) {
	claims, ok := s.authorizeClient(w, r)
	if !ok {
		return
	}
	id := r.PathValue("id")
	if !validHostID(id) {
		writeError(w, http.StatusBadRequest, codeInvalidHostID, "host id must be 1-128 printable bytes")
		return
	}
	if !claims.MayReach(id) {
		writeError(w, http.StatusNotFound, codeNotFound, "no such host")
		return
	}
	recs, err := s.dir.Records(r.Context(), []string{id})
	if err != nil {
		writeError(w, http.StatusServiceUnavailable, codeHostOffline, "directory unavailable")
		return
	}
	if len(recs) != 1 || (recs[0].ConnectedAt.IsZero() && !recs[0].Online) {
		writeError(w, http.StatusNotFound, codeNotFound, "no such host")
		return
	}
	writeJSON(w, s.viewOf(r, recs[0]))
}

// handleHosts answers GET /v1/hosts?ids=a,b,c with the hosts the token may reach and the relay has seen; without
// ids, it lists hosts (see listHosts).
func (s *Server) handleHosts(w http.ResponseWriter, r *http.Request) {
	claims, ok := s.authorizeClient(w, r)
	if !ok {
		return
	}
	if !r.URL.Query().Has("ids") {
		s.listHosts(w, r, claims)
		return
	}
	raw := r.URL.Query().Get("ids")
	if raw == "" {
		writeError(w, http.StatusBadRequest, codeBadRequest, "query parameter ids=a,b,c must list at least one id")
		return
	}
	parts := strings.Split(raw, ",")
	if len(parts) > s.cfg.MaxBatchIDs {
		writeError(w, http.StatusBadRequest, codeTooManyIDs, fmt.Sprintf("at most %d ids per call", s.cfg.MaxBatchIDs))
		return
	}
	ids := make([]string, 0, len(parts))
	seen := make(map[string]bool, len(parts))
	for _, id := range parts {
		if !validHostID(id) {
			writeError(w, http.StatusBadRequest, codeInvalidHostID, "host id must be 1-128 printable bytes")
			return
		}
		if claims.MayReach(id) && !seen[id] {
			seen[id] = true
			ids = append(ids, id)
		}
	}
	recs, err := s.dir.Records(r.Context(), ids)
	if err != nil {
		writeError(w, http.StatusServiceUnavailable, codeHostOffline, "directory unavailable")
		return
	}
	out := struct {
		Hosts []hostView `json:"hosts"`
	}{Hosts: []hostView{}}
	for _, rec := range recs {
		if rec.ConnectedAt.IsZero() && !rec.Online {
			continue
		}
		out.Hosts = append(out.Hosts, s.viewOf(r, rec))
	}
	writeJSON(w, out)
}
