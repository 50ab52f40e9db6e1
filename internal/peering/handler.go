package peering

import (
	"errors"
	"net/http"
	"net/url"
	"strconv"
	"time"
)

// Local is what the internal handler needs of the replica it serves.
type Local interface {
	// ServeForwarded serves r if it is a client exchange a peer forwarded here, for the client subject the hop
	// vouches for, and reports whether it was one. It is asked first: a forwarded exchange may have any path.
	ServeForwarded(w http.ResponseWriter, r *http.Request, subject string) bool
	// Holds reports whether a tunnel of hostID that takes new exchanges is here.
	Holds(hostID string) bool
	// Evicted takes an eviction notice: replica from claimed hostID with epoch. It reports false if hostID is not
	// a valid host id.
	Evicted(hostID, from string, epoch uint64) bool
	// ServeInternal serves any other internal endpoint for the peer from, and reports false if it has none at r's
	// path and method.
	ServeInternal(w http.ResponseWriter, r *http.Request, from string) bool
	// Refuse answers a request the handler refuses: err wraps ErrHop (the hop did not verify), or is
	// ErrBadNotice or ErrNoEndpoint.
	Refuse(w http.ResponseWriter, r *http.Request, err error)
}

// Errors of the internal handler besides ErrHop.
var (
	ErrBadNotice  = errors.New("evict needs host and epoch")
	ErrNoEndpoint = errors.New("no such internal endpoint")
)

// Handler serves requests from peer replicas on behalf of local. Every request must carry a hop that signer
// verifies; it is then a forwarded client exchange, an eviction notice (EvictPath, answered 204), the question
// whether a host's tunnel is here (HasPath: 204 or 404), or another endpoint of local's.
func Handler(signer *Signer, local Local) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		from, subject, err := signer.Verify(r, time.Now())
		if err != nil {
			local.Refuse(w, r, err)
			return
		}
		if local.ServeForwarded(w, r, subject) {
			return
		}
		if subject != "" { // a replica's own requests vouch for no client: this hop was made for a client exchange
			local.Refuse(w, r, ErrNoEndpoint)
			return
		}
		switch {
		case r.URL.Path == EvictPath && r.Method == http.MethodPost:
			hostID, epoch, ok := parseEvict(r.URL.Query())
			if !ok || !local.Evicted(hostID, from, epoch) {
				local.Refuse(w, r, ErrBadNotice)
				return
			}
			w.WriteHeader(http.StatusNoContent)
		case r.URL.Path == HasPath && r.Method == http.MethodGet:
			if local.Holds(r.URL.Query().Get("host")) {
				w.WriteHeader(http.StatusNoContent)
				return
			}
			w.WriteHeader(http.StatusNotFound)
		case local.ServeInternal(w, r, from):
		default:
			local.Refuse(w, r, ErrNoEndpoint)
		}
	})
}

// parseEvict reads the host and epoch of an eviction notice.
func parseEvict(q url.Values) (hostID string, epoch uint64, ok bool) {
	epoch, err := strconv.ParseUint(q.Get("epoch"), 10, 64)
	return q.Get("host"), epoch, err == nil
}
