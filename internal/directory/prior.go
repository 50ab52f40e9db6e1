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

// Reaped is a host whose offline Reap announced.
type Reaped struct {
	HostID         string
	Epoch          uint64
	Replica        string // the dead replica that held it; "" if it had released it already
	DisconnectedAt time.Time
}

// MarkOffline implements Directory.
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
