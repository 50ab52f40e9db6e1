// Package directory records which relay replica owns the tunnel of each host, and what is known about every host
// that ever connected (presence). Two implementations share one contract: Memory (one node, the default) and Redis
// (any number of replicas).
//
// One interface, Directory, holds everything a relay needs of it, and both implementations implement all of it, so
// callers never test for a capability:
//
//   - ownership and presence: Claim (which also returns the host's state before it, Prior), Release, Lookup,
//     Records, ListHosts, MarkOffline, and Reap and OnReaped for the hosts of replicas that died;
//   - write-back: ReassertEach, for entries accepted while the directory was unreachable or that it lost;
//   - peers: Advertise, PeerURL, ListPeers, and ProbePeer, the uncached read the relay's health probe makes;
//   - admin: Ban, BannedUntil, Revoke, Revocations;
//   - upkeep and introspection: Run, LeaseRefreshed, CacheStats, Close.
//
// Where one process has nothing to do, Memory does nothing: it never reaps, and has no lease, no cache and no
// upkeep. Instrument wraps a Directory, all of it, and measures the calls that carry routing and registration. One
// contract suite (contract_test.go) runs against Memory and Redis alike.
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

// Directory is the shared table of tunnel owners and host presence, and of what every replica must share: the
// replicas' internal addresses, host bans and token revocations. Memory and Redis implement all of it, and
// Instrumented wraps all of it, so callers never test for a capability.
//
// All methods are safe for concurrent use. After Close, every method that takes a context returns ErrClosed.
type Directory interface {
	// Ownership and presence.

	// Claim makes replica the owner of hostID's tunnel with an epoch greater than any earlier claim for hostID,
	// replacing whatever entry was there (last write wins), and returns the new entry and the host's state just
	// before the claim (Prior), read atomically with it: of two replicas claiming one host at once, the later one
	// always learns of the earlier one (Prior.Replica) and can tell it to close its older tunnel.
	Claim(ctx context.Context, hostID, replica string, meta Metadata) (Entry, Prior, error)

	// Release removes hostID's entry if and only if it still carries epoch, and records the disconnect time.
	// It reports whether it removed anything; a stale release is not an error.
	Release(ctx context.Context, hostID string, epoch uint64) (bool, error)

	// Lookup returns the live owner of hostID's tunnel, or ErrNotFound.
	Lookup(ctx context.Context, hostID string) (Entry, error)

	// Records returns what is known of each of hostIDs, in the same order; a host never seen has a Record with
	// only HostID set.
	Records(ctx context.Context, hostIDs []string) ([]Record, error)

	// ListHosts returns up to limit ids of known hosts that start with prefix and sort after `after` (byte order),
	// in byte order, for GET /v1/hosts. Fewer than limit means there are no more. A listed host's record may have
	// expired since (RedisConfig.RecordTTL): Records then reports it unknown.
	ListHosts(ctx context.Context, prefix, after string, limit int) ([]string, error)

	// MarkOffline records that the host's offline at epoch is announced. It reports true if and only if the host
	// is offline, its newest epoch is epoch, and no offline was marked for that epoch before: exactly one caller
	// announces each offline.
	//
	// The flap window rests on it: a replica releasing a host waits the window, then calls MarkOffline and
	// announces the offline only if it returns true; a claim reports, atomically, whether that happened before it
	// (Prior.Announced). The two decisions are made on the host's record, never on clocks, so a reconnect either
	// happened before the offline was announced (no offline, no online) or after it (offline, then online) —
	// never a mix, whichever replicas are involved.
	MarkOffline(ctx context.Context, hostID string, epoch uint64) (bool, error)

	// Reap announces the offline of the hosts of replicas that died holding them, and returns them. Every replica
	// may call it; each offline is returned once. Memory, one process, has no other replica: it returns nothing.
	Reap(ctx context.Context) ([]Reaped, error)

	// OnReaped sets f to be called with the hosts of this replica that another replica reaped while this one was
	// alive but cut off from the directory (see Redis.OnReaped). Memory never reaps and never calls f.
	OnReaped(f func(hostIDs []string))

	// ReassertEach writes back entries accepted while the directory was unreachable or lost by it (a Redis restart
	// or flush), and reports, per entry, whether it was written. It skips an entry when the directory knows a newer
	// epoch for the host, or knows the entry's epoch as released. An entry whose write failed reads false and its
	// error is in the joined error; the others' results stand.
	ReassertEach(ctx context.Context, entries []Entry) ([]bool, error)

	// Peers: how replicas find each other's internal listeners, to forward a request to the replica that holds
	// the host's tunnel.

	// Advertise records url as the internal address of replica. Replicas call it at start and then periodically,
	// so that the address comes back after the directory lost its data.
	Advertise(ctx context.Context, replica, url string) error

	// PeerURL returns the internal address advertised by replica, or ErrNotFound.
	PeerURL(ctx context.Context, replica string) (string, error)

	// ListPeers returns replica id → internal URL for every replica that advertised itself, including replicas that
	// may have died since, so that a replica can still ask its peers for a host while the directory's host entries
	// are unreachable (it lists while the directory answers and keeps the last list).
	ListPeers(ctx context.Context) (map[string]string, error)

	// ProbePeer reads replica's advertised internal URL bypassing any cache: "" if the directory holds none. It
	// tells both whether the directory answers now (an error if it does not) and whether it still holds the
	// advertisement. The relay calls it a few times a second as its directory health probe.
	ProbePeer(ctx context.Context, replica string) (string, error)

	// Admin: what operators decide through the relay's admin API and every replica must obey. Each ban and
	// revocation lives until a time the operator gave and then disappears on its own (a TTL in Redis), so the
	// directory never accumulates them.

	// Ban refuses registration of hostID until the given time. A later ban of the same host replaces an earlier
	// one, shorter or longer; a time in the past lifts the ban.
	Ban(ctx context.Context, hostID string, until time.Time) error

	// BannedUntil returns the end of hostID's ban, or the zero time if it is not banned.
	BannedUntil(ctx context.Context, hostID string) (time.Time, error)

	// Revoke records rv until rv.Until. A revocation of the same token id or subject keeps the later time.
	Revoke(ctx context.Context, rv Revocation) error

	// Revocations returns every revocation not yet past its Until, at most MaxRevocations of them.
	Revocations(ctx context.Context) ([]Revocation, error)

	// Upkeep and introspection.

	// Run does the directory's background upkeep until ctx ends or the directory is closed, then returns nil
	// (Redis: the replica's lease and re-assertion after data loss). Memory has none: Run returns nil at once.
	Run(ctx context.Context) error

	// LeaseRefreshed returns when this replica last refreshed its lease, or the zero time if it has not yet or
	// has no lease (Memory).
	LeaseRefreshed() time.Time

	// CacheStats returns how many Lookups were answered from a client-side cache and how many were not; Memory
	// has no cache and answers 0, 0.
	CacheStats() (hits, misses uint64)

	// Close releases the directory's resources. It is idempotent and does not remove entries.
	Close() error
}
