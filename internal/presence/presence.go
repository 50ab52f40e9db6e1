// Package presence is the relay's record of hosts coming and going: events (online, offline, moved, updated) in one
// cluster-wide ordered log that the SSE stream and the webhook sender both read.
//
// Ordering. Every event carries the host's tunnel epoch and a per-host sequence derived from it, so a consumer can
// drop anything older than what it has already seen for that host, whatever path the event took:
//
//	online, moved, updated for epoch e   Seq = 2e
//	offline for epoch e                  Seq = 2e+1
//
// Epochs only grow per host (see package directory), so Seq only grows too.
package presence

import (
	"context"
	"errors"
	"time"

	"github.com/switchboard-relay/switchboard/internal/directory"
)

// Kind names what happened to a host.
type Kind string

// The kinds of event.
const (
	// Online: the host has a live tunnel and was offline before (or unknown).
	Online Kind = "online"
	// Offline: the host's tunnel is gone and it did not come back within the flap window, or its replica died.
	Offline Kind = "offline"
	// Moved: the host's tunnel moved to another tunnel (a drain, a takeover after a replica died, a duplicate agent)
	// without the host being offline in between.
	Moved Kind = "moved"
	// Updated: the host reconnected within the flap window (no offline/online pair was sent) with different metadata.
	Updated Kind = "updated"
)

// Event is one change in a host's presence.
type Event struct {
	// ID is the event's position in the Log, set by Append; opaque to consumers. The SSE stream sends it sealed
	// (relay/seal.go), since it counts every host's events; webhooks send it as is.
	ID string `json:"id"`
	// Kind is what happened.
	Kind Kind `json:"type"`
	// HostID is the host it happened to.
	HostID string `json:"host_id"`
	// Seq only grows per host; see the package comment.
	Seq uint64 `json:"seq"`
	// Epoch is the tunnel epoch the event is about.
	Epoch uint64 `json:"epoch"`
	// Replica is the replica holding the tunnel (online, moved, updated) or the one that last held it (offline).
	Replica string `json:"replica,omitempty"`
	// At is when the change happened, by the clock of the replica that saw it.
	At time.Time `json:"at"`
	// Metadata is the host's metadata as registered with the tunnel; empty for offline.
	Metadata *directory.Metadata `json:"metadata,omitempty"`
}

// SeqOf returns the per-host sequence of an event of kind k about epoch.
func SeqOf(k Kind, epoch uint64) uint64 {
	if k == Offline {
		return 2*epoch + 1
	}
	return 2 * epoch
}

// ErrGap reports that a read started after an event the log no longer holds (it fell out of the retention window,
// or the log's store lost its data): the reader missed events and should re-read current state.
var ErrGap = errors.New("presence: events were dropped before the requested position")

// Log is the cluster-wide, ordered record of presence events. Memory and Redis implement it.
//
// All methods are safe for concurrent use.
type Log interface {
	// Append adds e to the end of the log and returns it with ID set.
	Append(ctx context.Context, e Event) (Event, error)

	// Read returns up to max events that follow the event with ID after, oldest first; after "" means from the oldest
	// retained event. If none follow yet, it waits up to block for one (0: do not wait) and may return none.
	// It returns ErrGap, with the oldest retained events, if events after `after` were dropped.
	Read(ctx context.Context, after string, max int, block time.Duration) ([]Event, error)
}

// Newest returns the ID of the newest event l holds or dropped ("" if none): reading after it yields only events
// appended later. A reader that starts from the present (having read current state, or after ErrGap) starts there.
// Memory and Redis answer in one step; another Log is read to its end.
func Newest(ctx context.Context, l Log) (string, error) {
	if n, ok := l.(interface {
		Newest(ctx context.Context) (string, error)
	}); ok {
		return n.Newest(ctx)
	}
	after := ""
	for {
		evs, err := l.Read(ctx, after, 1000, 0)
		if err != nil && !errors.Is(err, ErrGap) {
			return "", err
		}
		if len(evs) == 0 {
			return after, nil
		}
		after = evs[len(evs)-1].ID
	}
}
