package peering

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"time"
)

// EvictPath is the internal endpoint by which a replica that claimed a host tells the previous owner to close its
// older tunnel: POST /internal/v1/evict?host=ID&epoch=N, answered 204.
const EvictPath = "/internal/v1/evict"

// Evict tells the replica at base that this replica now holds hostID's tunnel with epoch (an eviction notice).
func (c Client) Evict(ctx context.Context, base *url.URL, hostID string, epoch uint64) error {
	q := url.Values{"host": {hostID}, "epoch": {strconv.FormatUint(epoch, 10)}}
	status, err := c.call(ctx, http.MethodPost, base, EvictPath, q)
	if err != nil {
		return err
	}
	if status != http.StatusNoContent {
		return fmt.Errorf("eviction notice refused: %d %s", status, http.StatusText(status))
	}
	return nil
}

// Evictions remembers, for a while (its ttl), eviction notices for hosts whose tunnel had not registered here
// yet: a tunnel that registers afterwards with an older epoch is closed as replaced. Its methods are safe for
// concurrent use.
type Evictions struct {
	ttl time.Duration // immutable after NewEvictions

	// Guarded by mu.
	mu sync.Mutex
	m  map[string]evictNote
}

type evictNote struct {
	replica string // the replica that claimed the host
	epoch   uint64
	until   time.Time
}

// NewEvictions returns Evictions that remember each notice for ttl.
func NewEvictions(ttl time.Duration) *Evictions { return &Evictions{ttl: ttl} }

// Note records that replica claimed hostID with epoch.
func (e *Evictions) Note(hostID, replica string, epoch uint64) {
	now := time.Now()
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.m == nil {
		e.m = make(map[string]evictNote)
	}
	if len(e.m) >= 1024 {
		for id, n := range e.m {
			if now.After(n.until) {
				delete(e.m, id)
			}
		}
	}
	if n, ok := e.m[hostID]; !ok || n.epoch < epoch || now.After(n.until) {
		e.m[hostID] = evictNote{replica: replica, epoch: epoch, until: now.Add(e.ttl)}
	}
}

// Supersedes reports whether a recent eviction notice for hostID carries an epoch newer than epoch.
func (e *Evictions) Supersedes(hostID string, epoch uint64) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	n, ok := e.m[hostID]
	return ok && n.epoch > epoch && time.Now().Before(n.until)
}

// NewOwner returns the replica named by a recent eviction notice for hostID with an epoch newer than epoch.
func (e *Evictions) NewOwner(hostID string, epoch uint64) (string, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	n, ok := e.m[hostID]
	if !ok || n.epoch <= epoch || !time.Now().Before(n.until) {
		return "", false
	}
	return n.replica, true
}

// MovedTo returns the replica named by a recent eviction notice for hostID, whatever its epoch: the host's tunnel
// moved there from this replica. No claim has epoch 0 (the directory's epochs start above it), so this is
// NewOwner(hostID, 0).
func (e *Evictions) MovedTo(hostID string) (string, bool) { return e.NewOwner(hostID, 0) }
