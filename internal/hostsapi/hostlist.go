package hostsapi

import (
	"context"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"github.com/switchboard-relay/switchboard/internal/auth"
	"github.com/switchboard-relay/switchboard/internal/directory"
	"github.com/switchboard-relay/switchboard/internal/reply"
	"github.com/switchboard-relay/switchboard/internal/tunnel"
)

// Bounds of GET /v1/hosts listing.
const (
	listDefaultLimit = 100
	// MaxListLimit is the largest page a listing (ParseListQuery's limit) may ask for.
	MaxListLimit = 1000
	// listScanFactor bounds the hosts one call examines to this many times its limit, so a selective filter over a
	// large directory answers a short page with a cursor rather than scanning everything.
	listScanFactor = 10
)

// Filter is what a listing keeps.
type Filter struct {
	Online *bool       // if not nil, only hosts online (or offline)
	Labels [][2]string // every key=value must hold
}

// Keep reports whether the listing keeps rec: a host seen and not expired that matches f.
func (f Filter) Keep(rec directory.Record) bool {
	if rec.ConnectedAt.IsZero() && !rec.Online {
		return false // never seen, or its record expired
	}
	if f.Online != nil && rec.Online != *f.Online {
		return false
	}
	for _, kv := range f.Labels {
		if got, ok := rec.Metadata.Labels[kv[0]]; !ok || got != kv[1] {
			return false
		}
	}
	return true
}

// listHosts answers GET /v1/hosts?[online=true|false][&label=k=v...][&prefix=p][&limit=n][&cursor=c]: the hosts
// the token may reach, in id order, one page at a time; next_cursor is "" on the last page.
func (a *API) listHosts(w http.ResponseWriter, r *http.Request, claims auth.Claims) {
	lister := a.cfg.Lister
	if lister == nil {
		reply.Error(w, http.StatusBadRequest, reply.CodeBadRequest, "this directory cannot list hosts; query ids=a,b,c")
		return
	}
	lq, ok := a.ParseListQuery(w, r, tunnel.ValidHostID)
	if !ok {
		return
	}
	f, limit, prefix, after := lq.Filter, lq.Limit, lq.Prefix, lq.After
	scope := listScopeOf(claims, prefix)

	out := struct {
		Hosts      []hostView `json:"hosts"`
		NextCursor string     `json:"next_cursor"`
	}{Hosts: []hostView{}}
	scanned := 0
	for {
		batch := min(limit-len(out.Hosts)+16, MaxListLimit)
		ids, more, err := scope.next(r.Context(), lister, after, batch)
		if err != nil {
			reply.Error(w, http.StatusServiceUnavailable, reply.CodeHostOffline, "directory unavailable")
			return
		}
		recs, err := a.cfg.Directory.Records(r.Context(), ids)
		if err != nil {
			reply.Error(w, http.StatusServiceUnavailable, reply.CodeHostOffline, "directory unavailable")
			return
		}
		byID := make(map[string]directory.Record, len(recs))
		for _, rec := range recs {
			byID[rec.HostID] = rec
		}
		full := false
		for _, id := range ids {
			after = id
			if rec, ok := byID[id]; ok && f.Keep(rec) {
				out.Hosts = append(out.Hosts, a.viewOf(r, rec))
				if len(out.Hosts) == limit {
					full = true
					break
				}
			}
		}
		scanned += len(ids)
		switch {
		case !more && (!full || after == ids[len(ids)-1]):
			reply.JSON(w, out) // the end
			return
		case full, scanned >= listScanFactor*limit:
			// after is a host the caller may reach (the scope's sources hold nothing else), sealed all the same:
			// a cursor reveals nothing, and one the relay did not issue is refused.
			out.NextCursor = a.cfg.Cursors.Seal(after)
			reply.JSON(w, out)
			return
		}
	}
}

// listScope is where a listing looks: the parts of the caller's scope under the query's prefix. A listing reads
// only these, so it never examines, counts, or stops at a host the caller may not reach, and how long it takes
// does not depend on other tenants' hosts.
type listScope struct {
	prefixes []string // list the directory under each; none starts with another
	exact    []string // exact ids of the token under the query prefix and under none of prefixes; sorted
}

// listScopeOf returns the scope of claims under the query prefix q.
func listScopeOf(c auth.Claims, q string) listScope {
	if c.Unrestricted {
		return listScope{prefixes: []string{q}}
	}
	if c.Kind == auth.KindHost {
		return listScope{} // a host token reaches nothing (auth.Claims.MayReach)
	}
	var prefixes, exact []string
	for _, p := range c.Hosts {
		if pre, ok := strings.CutSuffix(p, "*"); ok {
			switch {
			case strings.HasPrefix(q, pre):
				prefixes = append(prefixes, q)
			case strings.HasPrefix(pre, q):
				prefixes = append(prefixes, pre)
			}
		} else if strings.HasPrefix(p, q) && tunnel.ValidHostID(p) {
			exact = append(exact, p)
		}
	}
	// Sorted, a string that starts with another comes after it, and so does everything in between: keep each
	// prefix that does not start with the last one kept.
	slices.Sort(prefixes)
	var ls listScope
	for _, p := range prefixes {
		if len(ls.prefixes) == 0 || !strings.HasPrefix(p, ls.prefixes[len(ls.prefixes)-1]) {
			ls.prefixes = append(ls.prefixes, p)
		}
	}
	slices.Sort(exact)
	for _, id := range slices.Compact(exact) {
		if !slices.ContainsFunc(ls.prefixes, func(p string) bool { return strings.HasPrefix(id, p) }) {
			ls.exact = append(ls.exact, id)
		}
	}
	return ls
}

// next returns up to n ids of the scope after `after`, in byte order, and whether more may follow. No prefix starts
// with another, so their ranges of ids are disjoint and in the prefixes' order: next reads them in turn, skipping
// those wholly at or before `after`, until it has n; over a whole listing each prefix is read about once, however
// many the token has. The exact ids, outside every range, are merged in.
func (ls listScope) next(ctx context.Context, lister Lister, after string, n int) ([]string, bool, error) {
	var ranged []string
	for _, p := range ls.prefixes {
		if len(ranged) == n {
			break
		}
		if p < after && !strings.HasPrefix(after, p) {
			continue // every id under p sorts before after
		}
		got, err := lister.ListHosts(ctx, p, after, n-len(ranged))
		if err != nil {
			return nil, false, err
		}
		ranged = append(ranged, got...)
	}
	more := len(ranged) == n // perhaps: the next call finds out
	i, found := slices.BinarySearch(ls.exact, after)
	if found {
		i++
	}
	exact := ls.exact[i:min(i+n, len(ls.exact))]
	more = more || len(ls.exact)-i > n
	ids := make([]string, 0, len(ranged)+len(exact))
	for len(ranged) > 0 || len(exact) > 0 {
		if len(exact) == 0 || (len(ranged) > 0 && ranged[0] < exact[0]) {
			ids, ranged = append(ids, ranged[0]), ranged[1:]
		} else {
			ids, exact = append(ids, exact[0]), exact[1:]
		}
	}
	if len(ids) > n {
		ids, more = ids[:n], true
	}
	return ids, more, nil
}

// ListQuery is what a listing's query asks: GET /v1/hosts and the relay's GET /v1/admin/tunnels read it alike.
type ListQuery struct {
	Filter Filter
	Limit  int
	Prefix string
	After  string // the opened cursor; "" for the first page
}

// ParseListQuery reads [online=true|false][&label=k=v...][&prefix=p][&limit=n][&cursor=c] from r, opening the
// cursor with Config.Cursors; validCursor checks an opened cursor's content. On failure it has answered 400.
func (a *API) ParseListQuery(w http.ResponseWriter, r *http.Request, validCursor func(string) bool) (ListQuery, bool) {
	q := r.URL.Query()
	var f Filter
	switch v := q.Get("online"); v {
	case "":
	case "true", "false":
		b := v == "true"
		f.Online = &b
	default:
		reply.Error(w, http.StatusBadRequest, reply.CodeBadRequest, "online must be true or false")
		return ListQuery{}, false
	}
	if len(q["label"]) > 16 {
		reply.Error(w, http.StatusBadRequest, reply.CodeBadRequest, "at most 16 label filters")
		return ListQuery{}, false
	}
	for _, kv := range q["label"] {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			reply.Error(w, http.StatusBadRequest, reply.CodeBadRequest, "label must be key=value")
			return ListQuery{}, false
		}
		if len(k) > tunnel.MaxLabelKeyLen || len(v) > tunnel.MaxLabelValueLen {
			// No host has such a label (registration drops it): a filter for one is a mistake, said as one.
			reply.Error(w, http.StatusBadRequest, reply.CodeBadRequest, "label key over "+strconv.Itoa(tunnel.MaxLabelKeyLen)+
				" bytes or value over "+strconv.Itoa(tunnel.MaxLabelValueLen))
			return ListQuery{}, false
		}
		f.Labels = append(f.Labels, [2]string{k, v})
	}
	limit := listDefaultLimit
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > MaxListLimit {
			reply.Error(w, http.StatusBadRequest, reply.CodeBadRequest, "limit must be 1-"+strconv.Itoa(MaxListLimit))
			return ListQuery{}, false
		}
		limit = n
	}
	prefix := q.Get("prefix")
	if len(prefix) > tunnel.MaxHostIDLen {
		reply.Error(w, http.StatusBadRequest, reply.CodeBadRequest, "prefix longer than a host id ("+
			strconv.Itoa(tunnel.MaxHostIDLen)+" bytes)")
		return ListQuery{}, false
	}
	after := ""
	if c := q.Get("cursor"); c != "" {
		var err error
		if after, err = a.cfg.Cursors.Open(c); err != nil || !validCursor(after) {
			a.metrics.refused.WithLabelValues("cursor").Inc()
			reply.Error(w, http.StatusBadRequest, reply.CodeInvalidCursor, "cursor is not one this API returned")
			return ListQuery{}, false
		}
	}
	return ListQuery{Filter: f, Limit: limit, Prefix: prefix, After: after}, true
}
