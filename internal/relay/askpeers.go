package relay

import (
	"context"
	"io"
	"net/http"
	"net/url"
	"sync"
	"time"
)

// This file holds the fallback for an unreachable directory: a replica asks its peers which of them holds a host.

// hasPath is the internal endpoint that answers whether a host's tunnel is here: GET /internal/v1/has?host=ID →
// 204 if it is, 404 if not.
const hasPath = "/internal/v1/has"

// askTimeout bounds one round of asking peers.
const askTimeout = 500 * time.Millisecond

// maxAsked bounds how many peers one round asks.
const maxAsked = 64

// refreshPeers keeps the last list of advertised replicas, for asking them while the directory is unreachable.
func (s *Server) refreshPeers(ctx context.Context) {
	m, err := s.dir.listPeers(ctx)
	if err != nil || m == nil {
		return // keep the last list
	}
	peers := make(map[string]*url.URL, len(m))
	for id, raw := range m {
		if id == s.cfg.Replica {
			continue
		}
		if u, err := url.Parse(raw); err == nil && u.Host != "" {
			peers[id] = u
		}
	}
	s.knownPeers.Store(&peers)
}

// askPeers asks every known peer at once whether it holds hostID's tunnel and returns the first that does.
func (s *Server) askPeers(ctx context.Context, hostID string) (replica string, base *url.URL, ok bool) {
	p := s.knownPeers.Load()
	if p == nil || len(*p) == 0 || len(s.cfg.ClusterSecret) == 0 {
		return "", nil, false
	}
	ctx, cancel := context.WithTimeout(ctx, askTimeout)
	defer cancel()
	type answer struct {
		replica string
		base    *url.URL
	}
	found := make(chan answer, 1)
	var wg sync.WaitGroup
	n := 0
	for id, u := range *p {
		if n++; n > maxAsked {
			break
		}
		wg.Go(func() {
			if s.peerHas(ctx, u, hostID) {
				select {
				case found <- answer{id, u}:
					cancel() // the others can stop
				default:
				}
			}
		})
	}
	wg.Wait()
	select {
	case a := <-found:
		s.cluster.forwards.WithLabelValues(fwdAskedPeers).Inc()
		return a.replica, a.base, true
	default:
		return "", nil, false
	}
}

// peerHas asks the peer at base whether it holds hostID's tunnel.
func (s *Server) peerHas(ctx context.Context, base *url.URL, hostID string) bool {
	u := *base
	u.Path = hasPath
	u.RawQuery = url.Values{"host": {hostID}}.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return false
	}
	s.signHop(req, "")
	resp, err := s.peerTransport.RoundTrip(req)
	if err != nil {
		return false
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4<<10))
	_ = resp.Body.Close()
	return resp.StatusCode == http.StatusNoContent
}

// handleHas answers a peer's question whether a host's tunnel is here.
func (s *Server) handleHas(w http.ResponseWriter, r *http.Request) {
	if id := r.URL.Query().Get("host"); validHostID(id) && s.lookup(id) != nil {
		w.WriteHeader(http.StatusNoContent)
		return
	}
	w.WriteHeader(http.StatusNotFound)
}
