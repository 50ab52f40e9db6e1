// Package directory records which relay replica owns the tunnel of each host, and what is known about every host
// that ever connected (presence). Two implementations share one contract: Memory (one node, the default) and Redis
// (any number of replicas).
//
// Ownership is fenced by an epoch: every Claim for a host gets an epoch greater than any earlier one for that host,
// and Release removes an entry only while it still carries the epoch it was claimed with. A late Release from an
// older tunnel therefore can never remove a newer tunnel.
package directory

import (
	"context"
	"errors"
	"time"
)

// ErrNotFound reports that no live replica owns a tunnel for the host.
var ErrNotFound = errors.New("directory: host not connected")

// Added after the first draft of this interface, so that callers can classify failures with errors.Is instead of
// string matching:

// ErrClosed reports a call on a directory after its Close.
var ErrClosed = errors.New("directory: closed")

// ErrInvalid reports an argument the directory refuses to store, such as an empty host or replica id.
var ErrInvalid = errors.New("directory: invalid argument")

// Metadata describes a host. It arrives with the tunnel registration.
type Metadata struct {
	Name         string            `json:"name"`
	OS           string            `json:"os"`
	AgentVersion string            `json:"agent_version"`
	Labels       map[string]string `json:"labels"`
}

// Entry is a live tunnel: which replica holds it and with what epoch.
type Entry struct {
	HostID      string
	Replica     string // id of the replica that holds the tunnel
	Epoch       uint64 // fencing epoch, strictly increasing per host
	ConnectedAt time.Time
	Metadata    Metadata
}

// Record is what the directory knows of a host, online or not.
type Record struct {
	HostID         string
	Online         bool
	Replica        string    // owner while online
	Epoch          uint64    // epoch of the newest claim
	ConnectedAt    time.Time // zero if never connected
	DisconnectedAt time.Time // zero if never disconnected
	Metadata       Metadata
}

// Directory is the shared table of tunnel owners and host presence.
//
// All methods are safe for concurrent use.
type Directory interface {
	// Claim makes replica the owner of hostID's tunnel with an epoch greater than any earlier claim for hostID,
	// replacing whatever entry was there (last write wins).
	Claim(ctx context.Context, hostID, replica string, meta Metadata) (Entry, error)

	// Release removes hostID's entry if and only if it still carries epoch, and records the disconnect time.
	// It reports whether it removed anything; a stale release is not an error.
	Release(ctx context.Context, hostID string, epoch uint64) (bool, error)

	// Lookup returns the live owner of hostID's tunnel, or ErrNotFound.
	Lookup(ctx context.Context, hostID string) (Entry, error)

	// Records returns what is known of each of hostIDs, in the same order; a host never seen has a Record with
	// only HostID set.
	Records(ctx context.Context, hostIDs []string) ([]Record, error)

	// Close releases the directory's resources. It does not remove entries.
	Close() error
}
