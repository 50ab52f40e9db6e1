package relay

import (
	"encoding/base64"
	"net/http"
	"strconv"
	"strings"

	"github.com/switchboard-relay/switchboard/internal/auth"
	"github.com/switchboard-relay/switchboard/internal/directory"
)

// Bounds of GET /v1/hosts listing.
const (
	listDefaultLimit = 100
	listMaxLimit     = 1000
	// listScanFactor bounds the hosts one call examines to this many times its limit, so a selective filter over a
	// large directory answers a short page with a cursor rather than scanning everything.
	listScanFactor = 10
)

// listFilter is what a listing keeps.
type listFilter struct {
	online *bool
	labels [][2]string // every key=value must hold
}

func (f listFilter) keep(rec directory.Record) bool {
	if rec.ConnectedAt.IsZero() && !rec.Online {
		return false // never seen, or its record expired
	}
	if f.online != nil && rec.Online != *f.online {
		return false
	}
	for _, kv := range f.labels {
		if got, ok := rec.Metadata.Labels[kv[0]]; !ok || got != kv[1] {
			return false
		}
	}
	return true
}

// listHosts answers GET /v1/hosts?[online=true|false][&label=k=v...][&prefix=p][&limit=n][&cursor=c]: the hosts
// the token may reach, in id order, one page at a time; next_cursor is "" on the last page.
func (s *Server) listHosts(w http.ResponseWriter, r *http.Request, claims auth.Claims) {
	lister, ok := s.dir.Directory.(directory.Lister)
	if !ok {
		writeError(w, http.StatusBadRequest, codeBadRequest, "this directory cannot list hosts; query ids=a,b,c")
		return
	}
	q := r.URL.Query()
	var f listFilter
	switch v := q.Get("online"); v {
	case "":
	case "true", "false":
		b := v == "true"
		f.online = &b
	default:
		writeError(w, http.StatusBadRequest, codeBadRequest, "online must be true or false")
		return
	}
	if len(q["label"]) > 16 {
		writeError(w, http.StatusBadRequest, codeBadRequest, "at most 16 label filters")
		return
	}
	for _, kv := range q["label"] {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			writeError(w, http.StatusBadRequest, codeBadRequest, "label must be key=value")
			return
		}
		f.labels = append(f.labels, [2]string{k, v})
	}
	limit := listDefaultLimit
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > listMaxLimit {
			writeError(w, http.StatusBadRequest, codeBadRequest, "limit must be 1-"+strconv.Itoa(listMaxLimit))
			return
		}
		limit = n
	}
	prefix := q.Get("prefix")
	after := ""
	if c := q.Get("cursor"); c != "" {
		b, err := base64.RawURLEncoding.DecodeString(c)
		if err != nil || !validHostID(string(b)) {
			writeError(w, http.StatusBadRequest, codeBadRequest, "cursor is not one this API returned")
			return
		}
		after = string(b)
	}

	out := struct {
		Hosts      []hostView `json:"hosts"`
		NextCursor string     `json:"next_cursor"`
	}{Hosts: []hostView{}}
	scanned := 0
	for {
		batch := min(limit-len(out.Hosts)+16, listMaxLimit)
		ids, err := lister.ListHosts(r.Context(), prefix, after, batch)
		if err != nil {
			writeError(w, http.StatusServiceUnavailable, codeHostOffline, "directory unavailable")
			return
		}
		reach := ids[:0:0]
		for _, id := range ids {
			if claims.MayReach(id) {
				reach = append(reach, id)
			}
		}
		recs, err := s.dir.Records(r.Context(), reach)
		if err != nil {
			writeError(w, http.StatusServiceUnavailable, codeHostOffline, "directory unavailable")
			return
		}
		byID := make(map[string]directory.Record, len(recs))
		for _, rec := range recs {
			byID[rec.HostID] = rec
		}
		full := false
		for _, id := range ids {
			after = id
			if rec, ok := byID[id]; ok && f.keep(rec) {
				out.Hosts = append(out.Hosts, s.viewOf(r, rec))
				if len(out.Hosts) == limit {
					full = true
					break
				}
			}
		}
		scanned += len(ids)
		switch {
		case len(ids) < batch && !full:
			writeJSON(w, out) // the end
			return
		case full, scanned >= listScanFactor*limit:
			out.NextCursor = base64.RawURLEncoding.EncodeToString([]byte(after))
			writeJSON(w, out)
			return
		}
	}
}
