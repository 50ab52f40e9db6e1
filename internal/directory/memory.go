package directory

import (
	"context"
	"fmt"
	"maps"
	"sync"
	"time"
)

// Memory is a Directory held in the memory of one process: the zero-configuration default for a single relay
// replica. Presence records live as long as the process.
//
// Memory has no notion of replica liveness: an entry stays routable until it is released or replaced.
type Memory struct {
	// Immutable after NewMemory.
	now func() time.Time // clock; tests may replace it before first use

	// Guarded by mu.
	mu     sync.Mutex
	hosts  map[string]*memHost
	peers  map[string]string // replica → internal URL (see Advertise)
	sorted []string          // ids of hosts, sorted; stale while shorter than hosts (hosts are never removed)
	closed bool

	adminOnce sync.Once
	adm       *memAdmin // bans and revocations (admin.go); its own lock
}

// memHost is everything Memory knows of one host.
type memHost struct {
	epoch          uint64 // newest epoch handed out; never decreases
	online         bool
	replica        string
	connectedAt    time.Time
	disconnectedAt time.Time
	meta           Metadata
	gone           uint64 // epoch whose offline was announced (MarkOffline)
}

var _ Directory = (*Memory)(nil)

// NewMemory returns an empty in-memory directory.
func NewMemory() *Memory {
	return &Memory{now: time.Now, hosts: make(map[string]*memHost)}
}

// Claim implements Directory. Memory has no replica liveness: a recorded owner is live.
func (m *Memory) Claim(ctx context.Context, hostID, replica string, meta Metadata) (Entry, Prior, error) {
	if err := checkIDs(hostID, replica); err != nil {
		return Entry{}, Prior{}, fmt.Errorf("claim %s: %w", hostID, err)
	}
	if err := ctx.Err(); err != nil {
		return Entry{}, Prior{}, fmt.Errorf("claim %s: %w", hostID, err)
	}
	now := m.now().Round(0)
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return Entry{}, Prior{}, fmt.Errorf("claim %s: %w", hostID, ErrClosed)
	}
	h := m.hosts[hostID]
	var p Prior
	if h == nil {
		h = &memHost{}
		m.hosts[hostID] = h
	} else {
		p = Prior{Known: true, Epoch: h.epoch, Announced: !h.online && h.gone == h.epoch, LastReplica: h.replica,
			DisconnectedAt: h.disconnectedAt, Metadata: cloneMetadata(h.meta)}
		if h.online {
			p.Replica, p.Live = h.replica, true
		}
	}
	h.epoch++
	h.online = true
	h.replica = replica
	h.connectedAt = now
	h.meta = cloneMetadata(meta)
	return Entry{HostID: hostID, Replica: replica, Epoch: h.epoch, ConnectedAt: now, Metadata: cloneMetadata(meta)}, p, nil
}

// Release implements Directory.
func (m *Memory) Release(ctx context.Context, hostID string, epoch uint64) (bool, error) {
	if err := ctx.Err(); err != nil {
		return false, fmt.Errorf("release %s: %w", hostID, err)
	}
	now := m.now().Round(0)
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return false, fmt.Errorf("release %s: %w", hostID, ErrClosed)
	}
	h := m.hosts[hostID]
	if h == nil || !h.online || h.epoch != epoch {
		return false, nil
	}
	h.online = false
	h.disconnectedAt = now
	return true, nil
}

// Lookup implements Directory.
func (m *Memory) Lookup(ctx context.Context, hostID string) (Entry, error) {
	if err := ctx.Err(); err != nil {
		return Entry{}, fmt.Errorf("lookup %s: %w", hostID, err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return Entry{}, fmt.Errorf("lookup %s: %w", hostID, ErrClosed)
	}
	h := m.hosts[hostID]
	if h == nil || !h.online {
		return Entry{}, ErrNotFound
	}
	return Entry{
		HostID:      hostID,
		Replica:     h.replica,
		Epoch:       h.epoch,
		ConnectedAt: h.connectedAt,
		Metadata:    cloneMetadata(h.meta),
	}, nil
}

// Records implements Directory.
func (m *Memory) Records(ctx context.Context, hostIDs []string) ([]Record, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("records: %w", err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil, fmt.Errorf("records: %w", ErrClosed)
	}
	out := make([]Record, len(hostIDs))
	for i, id := range hostIDs {
		out[i].HostID = id
		h := m.hosts[id]
		if h == nil {
			continue
		}
		out[i].Online = h.online
		if h.online {
			out[i].Replica = h.replica
		}
		out[i].Epoch = h.epoch
		out[i].ConnectedAt = h.connectedAt
		out[i].DisconnectedAt = h.disconnectedAt
		out[i].Metadata = cloneMetadata(h.meta)
	}
	return out, nil
}

// ReassertEach implements Directory. Memory never loses an entry, so it writes back only entries accepted while a
// claim failed: those of hosts it has no newer epoch for, and whose epoch it has not seen released.
func (m *Memory) ReassertEach(ctx context.Context, entries []Entry) ([]bool, error) {
	for _, e := range entries {
		if err := checkIDs(e.HostID, e.Replica); err != nil {
			return nil, fmt.Errorf("reassert %s: %w", e.HostID, err)
		}
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("reassert: %w", err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil, fmt.Errorf("reassert: %w", ErrClosed)
	}
	if len(entries) == 0 {
		return nil, nil
	}
	written := make([]bool, len(entries))
	for i, e := range entries {
		h := m.hosts[e.HostID]
		if h == nil {
			h = &memHost{}
			m.hosts[e.HostID] = h
		} else if h.epoch > e.Epoch || h.epoch == e.Epoch && !h.online {
			continue
		}
		h.epoch, h.online, h.replica = e.Epoch, true, e.Replica
		h.connectedAt = e.ConnectedAt
		h.meta = cloneMetadata(e.Metadata)
		written[i] = true
	}
	return written, nil
}

// Reap implements Directory: one process has no other replica to reap.
func (m *Memory) Reap(ctx context.Context) ([]Reaped, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("reap: %w", err)
	}
	return nil, nil
}

// OnReaped implements Directory: Memory never reaps, so f is never called.
func (m *Memory) OnReaped(f func(hostIDs []string)) {}

// ProbePeer implements Directory: Memory always answers.
func (m *Memory) ProbePeer(ctx context.Context, replica string) (string, error) {
	if err := ctx.Err(); err != nil {
		return "", fmt.Errorf("probe: %w", err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return "", fmt.Errorf("probe: %w", ErrClosed)
	}
	return m.peers[replica], nil
}

// Run implements Directory: Memory has no upkeep, so it returns nil at once.
func (m *Memory) Run(ctx context.Context) error { return nil }

// LeaseRefreshed implements Directory: Memory has no lease.
func (m *Memory) LeaseRefreshed() time.Time { return time.Time{} }

// CacheStats implements Directory: Memory has no cache.
func (m *Memory) CacheStats() (hits, misses uint64) { return 0, 0 }

// Close implements Directory. It is idempotent; afterwards every method returns ErrClosed.
func (m *Memory) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.closed = true
	return nil
}

// cloneMetadata copies meta so that callers and the directory never share a Labels map.
func cloneMetadata(meta Metadata) Metadata {
	if meta.Labels != nil {
		meta.Labels = maps.Clone(meta.Labels)
	}
	return meta
}

// checkIDs rejects identifiers that the directory cannot store faithfully.
func checkIDs(hostID, replica string) error {
	if hostID == "" {
		return fmt.Errorf("%w: empty host id", ErrInvalid)
	}
	if replica == "" {
		return fmt.Errorf("%w: empty replica id", ErrInvalid)
	}
	return nil
}
