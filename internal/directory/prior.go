package directory

import (
	"context"
	"fmt"
	"time"
)

// Prior is a host's state just before a claim: what presence events need to classify the claim.
type Prior struct {
	// Known reports that the host had a record.
	Known bool
	// Replica is the owner recorded at the claim, "" if the host was offline. It may be a replica that died.
	Replica string
	// Live reports that Replica's lease was alive, so the host was online on another tunnel at the claim.
	Live bool
	// LastReplica is the replica that held the host's newest tunnel before the claim (Replica while online, else
	// the one that released it or died with it); "" if unknown.
	LastReplica string
	// Epoch is the host's newest epoch before the claim.
	Epoch uint64
	// Announced reports that the host was offline and its offline was announced (MarkOffline or Reap): a claim
	// after it is the host coming back, not a flap.
	Announced bool
	// DisconnectedAt is the host's last disconnect, zero if none.
	DisconnectedAt time.Time
	// Metadata is the host's metadata before the claim.
	Metadata Metadata
}

// Presence is implemented by directories that back presence events (Memory and Redis).
//
// The flap window rests on MarkOffline: a replica releasing a host waits the window, then calls MarkOffline and
// announces the offline only if it returns true; a claim reports, atomically, whether that happened before it
// (Prior.Announced). The two decisions are made on the host's record, never on clocks, so a reconnect either
// happened before the offline was announced (no offline, no online) or after it (offline, then online) — never a
// mix, whichever replicas are involved.
type Presence interface {
	// ClaimPrior is Claim that also returns the host's state before the claim.
	ClaimPrior(ctx context.Context, hostID, replica string, meta Metadata) (Entry, Prior, error)

	// MarkOffline records that the host's offline at epoch is announced. It reports true if and only if the host
	// is offline, its newest epoch is epoch, and no offline was marked for that epoch before: exactly one caller
	// announces each offline.
	MarkOffline(ctx context.Context, hostID string, epoch uint64) (bool, error)
}

var (
	_ Presence = (*Memory)(nil)
	_ Presence = (*Redis)(nil)
)

// ClaimPrior implements Presence. Memory has no replica liveness: a recorded owner is live.
func (m *Memory) ClaimPrior(ctx context.Context, hostID, replica string, meta Metadata) (Entry, Prior, error) {
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

// MarkOffline implements Presence.
func (m *Memory) MarkOffline(ctx context.Context, hostID string, epoch uint64) (bool, error) {
	if err := ctx.Err(); err != nil {
		return false, fmt.Errorf("mark offline %s: %w", hostID, err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return false, fmt.Errorf("mark offline %s: %w", hostID, ErrClosed)
	}
	h := m.hosts[hostID]
	if h == nil || h.online || h.epoch != epoch || h.gone == epoch {
		return false, nil
	}
	h.gone = epoch
	return true, nil
}
