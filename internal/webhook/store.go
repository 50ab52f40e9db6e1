package webhook

import (
	"context"
	"errors"
	"sync"
	"time"
)

// ErrNotLeader reports that a cursor write was refused because the writer no longer holds the sender lease:
// another sender took over, or the store lost the lease (Redis restarted empty).
var ErrNotLeader = errors.New("webhook: not the leader")

// Store keeps, per webhook URL, the ID of the last event delivered there (the cursor), and the lease that lets one
// sender in a cluster deliver at a time. Memory and Redis implement it. All methods are safe for concurrent use.
type Store interface {
	// Cursor returns the ID of the last event delivered to url, or "" if none was recorded.
	Cursor(ctx context.Context, url string) (string, error)

	// SetCursor records id as delivered to url, if holder holds the lease; otherwise it returns ErrNotLeader and
	// records nothing, so a sender that lost the lease cannot move the cursor back under the new leader.
	SetCursor(ctx context.Context, holder, url, id string) error

	// Lead takes the lease for holder if nobody holds it, or extends it if holder does, to ttl from now. It
	// reports whether holder holds the lease.
	Lead(ctx context.Context, holder string, ttl time.Duration) (bool, error)

	// Resign gives the lease up if holder holds it, so another sender can take over at once.
	Resign(ctx context.Context, holder string) error
}

// Memory is a Store in this process: cursors and the lease die with it. It is what a single relay with the memory
// directory uses (its presence log is in memory too, so there is nothing to resume after a restart).
type Memory struct {
	now func() time.Time

	// Guarded by mu.
	mu      sync.Mutex
	cursors map[string]string
	holder  string
	until   time.Time
}

// NewMemory returns an empty Memory store.
func NewMemory() *Memory {
	return &Memory{now: time.Now, cursors: make(map[string]string)}
}

var _ Store = (*Memory)(nil)

// Cursor implements Store.
func (m *Memory) Cursor(_ context.Context, url string) (string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.cursors[url], nil
}

// SetCursor implements Store.
func (m *Memory) SetCursor(_ context.Context, holder, url, id string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.heldLocked(holder) {
		return ErrNotLeader
	}
	m.cursors[url] = id
	return nil
}

// Lead implements Store.
func (m *Memory) Lead(_ context.Context, holder string, ttl time.Duration) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.holder != "" && m.holder != holder && m.now().Before(m.until) {
		return false, nil
	}
	m.holder, m.until = holder, m.now().Add(ttl)
	return true, nil
}

// Resign implements Store.
func (m *Memory) Resign(_ context.Context, holder string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.holder == holder {
		m.holder, m.until = "", time.Time{}
	}
	return nil
}

func (m *Memory) heldLocked(holder string) bool {
	return m.holder == holder && m.now().Before(m.until)
}
