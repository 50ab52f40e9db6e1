package directory

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/rueidis"
)

// Defaults for RedisConfig.
const (
	DefaultLease        = 15 * time.Second
	DefaultRedisTimeout = time.Second
	DefaultRedisPrefix  = "sb:"
)

// RedisConfig configures a Redis directory. Only Addrs and Replica are required.
type RedisConfig struct {
	// Addrs is one Redis address (host:port) or a Redis Cluster seed list. The client detects a cluster by itself.
	// With Sentinel.Master set, Addrs are the Sentinels' addresses instead.
	Addrs []string

	// Sentinel, if its Master is set, makes the directory ask the Sentinels at Addrs which server is the primary and
	// follow their failovers. Username, Password and TLS then apply to the data nodes (and TLS to the Sentinels too).
	Sentinel SentinelConfig

	// DB is the database number. It must be 0 with a cluster.
	DB int

	// Username and Password authenticate to Redis. If empty, no AUTH is sent.
	Username string
	Password string

	// TLS, if non-nil, is used to dial Redis. If nil, connections are plain TCP.
	TLS *tls.Config

	// Replica is this relay replica's id, unique among running replicas. Required.
	Replica string

	// Lease is how long this replica's entries stay routable after its last heartbeat; Run refreshes the lease
	// every Lease/3. It bounds how long lookups may route to a replica that died. If zero, DefaultLease.
	Lease time.Duration

	// Timeout bounds every call to Redis made by a method, so that an unreachable Redis gives an error promptly
	// instead of blocking the caller. A shorter deadline on the caller's context wins. If zero,
	// DefaultRedisTimeout.
	Timeout time.Duration

	// RecordTTL is how long the record of an offline host is kept after its release. If zero, records are kept
	// forever. A record's epoch is lost with it, which is safe: new epochs are seeded from the clock.
	RecordTTL time.Duration

	// Prefix starts every key. It must not contain '{' or '}' (keys carry a cluster hash tag). If empty,
	// DefaultRedisPrefix.
	Prefix string

	// Owned, if non-nil, returns the entries this replica holds live tunnels for. Run calls it when it finds that
	// Redis lost this replica's lease (Redis restarted or was flushed, or this replica could not reach it for longer
	// than the lease) and writes the entries back with Reassert. If nil, nothing is re-asserted.
	Owned func() []Entry

	// Logger receives the directory's logs. If nil, logs are discarded.
	Logger *slog.Logger
}

// Redis is a Directory in Redis, shared by any number of relay replicas; Redis Cluster is supported.
//
// Model. Each host has one hash, key <prefix>{<hostID>}:host, holding its owner, incarnation, epoch, connect and
// disconnect times and metadata (see redis_scripts.go). The hash outlives a release: it is the host's presence
// record and it keeps the epoch counter, so epochs stay monotonic. Each replica has one lease key,
// <prefix>replica:<id>, whose value is the replica process's random incarnation and which expires after Lease
// unless Run refreshes it. An entry is live iff its replica's lease key exists and holds the entry's incarnation:
// when a replica dies, all its entries expire at once, and when it restarts under the same id, its previous
// incarnation's entries die immediately. Claim and Release are one Lua script each on one key; a heartbeat is one
// SET per replica. Redis work is O(1) per connect, per disconnect, and per replica per heartbeat — never per tunnel.
//
// Reads. Lookup and Records read through rueidis client-side caching with server-assisted invalidation, so a hot
// lookup does not touch the network. Cached lease keys expire no later than the lease key itself does in Redis (the
// client caps each cached value at the key's remaining PTTL, and at Lease), so a lookup never routes to a dead
// replica for longer than the lease.
//
// Epochs after data loss. A new epoch is max(stored+1, floor) where floor is the larger of the current time in
// Unix microseconds and one more than the highest epoch this process has seen. While Redis keeps its data, epochs
// grow by one per claim. If Redis loses the host's hash (restart without persistence, FLUSHALL, eviction,
// RecordTTL), the next epoch still exceeds every epoch issued before the loss, provided claims of one host are more
// than the replicas' clock skew apart — a microsecond counter cannot be overtaken by a few claims per second.
//
// Self-healing. Run writes back the entries returned by RedisConfig.Owned when it finds its lease gone, or finds
// another Redis server answering than at the previous heartbeat (a Sentinel failover promotes a replica that may
// lack the last writes the old primary acknowledged, lease intact); Reassert never overwrites a newer epoch nor
// resurrects a released one.
//
// Unreachable Redis. Every method bounds its Redis calls by RedisConfig.Timeout and returns an error wrapping the
// client's or context's error; nothing blocks longer. Run logs failed heartbeats and keeps trying every Lease/3.
// Entries cached before the outage are dropped with the broken connection, so lookups fail rather than answer stale.
type Redis struct {
	// Immutable after NewRedis.
	client      rueidis.Client
	cfg         RedisConfig
	log         *slog.Logger
	incarnation string
	leaseKey    string
	now         func() time.Time // clock for floors and timestamps; tests may replace it before first use

	maxEpoch  atomic.Uint64 // highest epoch this process has seen; floor for new epochs
	cacheHits atomic.Uint64 // Lookups answered from the client-side cache (see CacheStats)
	cacheMiss atomic.Uint64 // Lookups that went to Redis
	onReaped  atomic.Pointer[func(hostIDs []string)]
	closed    atomic.Bool
	closeOnce sync.Once
	leaseAt   atomic.Int64 // Unix ms of the last lease refresh (LeaseRefreshed)

	// Owned by Run (set first by NewRedis).
	runID    string // run_id of the Redis server found by the last heartbeat; "" if not known
	runIDOff bool   // the server refused INFO: failovers are noticed only when they lose the lease

	// Guarded by recentMu.
	recentMu  sync.Mutex
	recent    map[string]time.Time // hosts this process wrote lately → until when reads bypass the cache
	recentMax int                  // size that triggers the next prune of recent
}

// recentWindow is how long reads of a host bypass the client-side cache after this process wrote it. Redis sends
// the invalidation of a write asynchronously, possibly on another connection than the write's reply, so without
// the bypass a replica could briefly read its own write's old value (a Lookup right after Release finding the
// entry). Other replicas see a write once its invalidation arrives, typically well under a millisecond.
const recentWindow = 2 * time.Second

var _ Directory = (*Redis)(nil)

// NewRedis connects to Redis and takes this replica's lease, replacing any previous incarnation of the same replica
// id (whose entries stop being routable). The lease lasts RedisConfig.Lease: call Run to keep it.
func NewRedis(ctx context.Context, cfg RedisConfig) (*Redis, error) {
	if len(cfg.Addrs) == 0 {
		return nil, fmt.Errorf("new redis directory: %w: no address", ErrInvalid)
	}
	if cfg.Replica == "" {
		return nil, fmt.Errorf("new redis directory: %w: empty replica id", ErrInvalid)
	}
	if cfg.Lease == 0 {
		cfg.Lease = DefaultLease
	}
	if cfg.Lease < 3*time.Millisecond {
		return nil, fmt.Errorf("new redis directory: %w: lease %v too short", ErrInvalid, cfg.Lease)
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultRedisTimeout
	}
	if cfg.RecordTTL < 0 {
		return nil, fmt.Errorf("new redis directory: %w: negative record TTL", ErrInvalid)
	}
	if cfg.Prefix == "" {
		cfg.Prefix = DefaultRedisPrefix
	}
	if strings.ContainsAny(cfg.Prefix, "{}") {
		return nil, fmt.Errorf("new redis directory: %w: prefix %q contains a brace", ErrInvalid, cfg.Prefix)
	}
	if cfg.Sentinel.Master == "" && (cfg.Sentinel.Username != "" || cfg.Sentinel.Password != "") {
		return nil, fmt.Errorf("new redis directory: %w: sentinel credentials without a sentinel master", ErrInvalid)
	}
	if cfg.Sentinel.Master != "" {
		if err := checkMasterName(cfg.Sentinel.Master); err != nil {
			return nil, fmt.Errorf("new redis directory: %w", err)
		}
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	var b [16]byte
	_, _ = rand.Read(b[:]) // never fails
	client, err := rueidis.NewClient(rueidis.ClientOption{
		InitAddress:      cfg.Addrs,
		SelectDB:         cfg.DB,
		Username:         cfg.Username,
		Password:         cfg.Password,
		TLSConfig:        cfg.TLS,
		Dialer:           netDialer(cfg.Timeout),
		ConnWriteTimeout: max(cfg.Timeout, time.Second),
		ClientName:       "switchboard-" + cfg.Replica,
		Sentinel:         sentinelOption(cfg),
	})
	if err != nil {
		if cfg.Sentinel.Master != "" {
			return nil, fmt.Errorf("new redis directory: primary %q from sentinels %s: %w", cfg.Sentinel.Master,
				strings.Join(cfg.Addrs, ","), err)
		}
		return nil, fmt.Errorf("new redis directory: connect %s: %w", strings.Join(cfg.Addrs, ","), err)
	}
	r := &Redis{
		client:      client,
		cfg:         cfg,
		log:         log.With("replica", cfg.Replica),
		incarnation: hex.EncodeToString(b[:]),
		leaseKey:    cfg.Prefix + "replica:" + cfg.Replica,
		now:         time.Now,
		recent:      make(map[string]time.Time),
		recentMax:   64,
	}
	prev, err := r.refreshLease(ctx)
	if err != nil {
		client.Close()
		return nil, fmt.Errorf("new redis directory: %w", err)
	}
	if prev != "" {
		r.log.Info("directory lease taken over from a previous incarnation")
	}
	r.serverMoved(ctx)
	if err := r.register(ctx); err != nil {
		client.Close()
		return nil, fmt.Errorf("new redis directory: %w", err)
	}
	return r, nil
}

// Run keeps this replica's lease alive, refreshing it every Lease/3, until ctx ends or the directory is closed; it
// then returns nil. When it
// finds the lease gone, or after a refresh whose answer was lost (it may have run late and found the lease gone),
// it re-asserts the entries from RedisConfig.Owned. Failures are logged, not returned: Run
// keeps trying. Stopping Run without Resign leaves this replica's entries routable until the lease expires.
func (r *Redis) Run(ctx context.Context) error {
	tick := time.NewTicker(r.cfg.Lease / 3)
	defer tick.Stop()
	needReassert := false
	for {
		if r.closed.Load() {
			return nil
		}
		needReassert = r.heartbeat(ctx, needReassert)
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

// heartbeat refreshes the lease once and re-asserts owned entries if the lease had been lost, now or in an earlier
// heartbeat whose re-assertion failed. It reports whether re-assertion is still owed.
func (r *Redis) heartbeat(ctx context.Context, needReassert bool) bool {
	prev, err := r.refreshLease(ctx)
	if err != nil {
		if ctx.Err() == nil {
			r.log.Warn("directory heartbeat failed", "err", err)
		}
		// The refresh may still run later, when a partition delivers it: if the lease had lapsed by then, this
		// refresh was the one that found it missing, and its answer is lost. So the entries are re-asserted once the
		// directory answers again (Reassert never overwrites a newer epoch).
		return true
	}
	moved := r.serverMoved(ctx)
	switch prev {
	case r.incarnation:
		if moved {
			r.log.Warn("directory now served by another redis server (failover or restart); re-asserting entries it may have lost")
			needReassert = true
		}
	case "":
		r.log.Warn("directory lease was missing; redis lost data or was unreachable for longer than the lease")
		needReassert = true
	default:
		r.log.Error("directory lease held by another process with the same replica id; replica ids must be unique",
			"other_incarnation", prev)
		needReassert = true
	}
	if prev != r.incarnation || moved || needReassert {
		if err := r.register(ctx); err != nil && ctx.Err() == nil {
			r.log.Warn("directory incarnation not registered", "err", err)
		}
	}
	if !needReassert || r.cfg.Owned == nil {
		return false
	}
	entries := r.cfg.Owned()
	n, err := r.Reassert(ctx, entries)
	if err != nil {
		if ctx.Err() == nil {
			r.log.Warn("directory re-assert failed", "entries", len(entries), "err", err)
		}
		return true
	}
	r.log.Info("directory entries re-asserted", "entries", len(entries), "written", n)
	return false
}

// refreshLease sets the lease key to this incarnation for one lease and returns its previous value ("" if none).
func (r *Redis) refreshLease(ctx context.Context) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, r.cfg.Timeout)
	defer cancel()
	cmd := r.client.B().Set().Key(r.leaseKey).Value(r.incarnation).Get().PxMilliseconds(r.cfg.Lease.Milliseconds()).Build()
	prev, err := r.client.Do(ctx, cmd).ToString()
	if rueidis.IsRedisNil(err) {
		r.leaseAt.Store(r.now().UnixMilli())
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("refresh lease: %w", err)
	}
	r.leaseAt.Store(r.now().UnixMilli())
	return prev, nil
}

// LeaseRefreshed implements Directory: when this replica last refreshed its lease, or the zero time if it has not
// yet.
func (r *Redis) LeaseRefreshed() time.Time {
	ms := r.leaseAt.Load()
	if ms == 0 {
		return time.Time{}
	}
	return time.UnixMilli(ms)
}

// Resign deletes this replica's lease if it still holds it, so that every entry of this replica stops being
// routable at once. Call it after draining and before exit; Close alone leaves the entries routable until the lease
// expires.
func (r *Redis) Resign(ctx context.Context) error {
	if r.closed.Load() {
		return fmt.Errorf("resign: %w", ErrClosed)
	}
	ctx, cancel := context.WithTimeout(ctx, r.cfg.Timeout)
	defer cancel()
	if err := resignScript.Exec(ctx, r.client, []string{r.leaseKey}, []string{r.incarnation}).Error(); err != nil {
		return fmt.Errorf("resign: %w", err)
	}
	return nil
}

// claimWith runs claimScript and returns its answer and the entry made.
func (r *Redis) claimWith(ctx context.Context, hostID, replica string, meta Metadata) ([]string, Entry, error) {
	if err := checkIDs(hostID, replica); err != nil {
		return nil, Entry{}, fmt.Errorf("claim %s: %w", hostID, err)
	}
	if r.closed.Load() {
		return nil, Entry{}, fmt.Errorf("claim %s: %w", hostID, ErrClosed)
	}
	labels, err := encodeLabels(meta.Labels)
	if err != nil {
		return nil, Entry{}, fmt.Errorf("claim %s: %w", hostID, err)
	}
	now := r.now().Round(0)
	floor := max(uint64(now.UnixMicro()), r.maxEpoch.Load()+1)
	ctx, cancel := context.WithTimeout(ctx, r.cfg.Timeout)
	defer cancel()
	res, err := claimScript.Exec(ctx, r.client, []string{r.hostKey(hostID)}, []string{
		replica, r.incarnationFor(replica), strconv.FormatUint(floor, 10), strconv.FormatInt(now.UnixNano(), 10),
		meta.Name, meta.OS, meta.AgentVersion, labels,
	}).AsStrSlice()
	if err != nil {
		return nil, Entry{}, fmt.Errorf("claim %s: %w", hostID, err)
	}
	r.wrote(hostID)
	if len(res) != claimAnswers {
		return nil, Entry{}, fmt.Errorf("claim %s: script returned %d values, want %d", hostID, len(res), claimAnswers)
	}
	epoch, err := strconv.ParseUint(res[0], 10, 64)
	if err != nil {
		return nil, Entry{}, fmt.Errorf("claim %s: bad epoch %q: %w", hostID, res[0], err)
	}
	r.sawEpoch(epoch)
	return res, Entry{HostID: hostID, Replica: replica, Epoch: epoch, ConnectedAt: time.Unix(0, now.UnixNano()),
		Metadata: cloneMetadata(meta)}, nil
}

// incarnationFor returns the incarnation to record for an entry owned by replica. Entries are normally claimed by
// the replica itself and carry its incarnation; an entry claimed on behalf of another replica id carries none.
func (r *Redis) incarnationFor(replica string) string {
	if replica == r.cfg.Replica {
		return r.incarnation
	}
	return ""
}

// live reports whether an entry recorded with incarnation inc is live while its replica's lease key holds holder
// ("" if the key is missing). An entry without incarnation (claimed on behalf of another replica id) is live while
// that replica has any lease.
func live(inc, holder string) bool {
	return holder != "" && (inc == "" || inc == holder)
}

// Release implements Directory.
func (r *Redis) Release(ctx context.Context, hostID string, epoch uint64) (bool, error) {
	if r.closed.Load() {
		return false, fmt.Errorf("release %s: %w", hostID, ErrClosed)
	}
	now := r.now()
	ctx, cancel := context.WithTimeout(ctx, r.cfg.Timeout)
	defer cancel()
	n, err := releaseScript.Exec(ctx, r.client, []string{r.hostKey(hostID)}, []string{
		strconv.FormatUint(epoch, 10), strconv.FormatInt(now.UnixNano(), 10),
		strconv.FormatInt(r.cfg.RecordTTL.Milliseconds(), 10),
	}).AsInt64()
	r.wrote(hostID)
	if err != nil {
		return false, fmt.Errorf("release %s: %w", hostID, err)
	}
	return n == 1, nil
}

// Lookup implements Directory. It reads through the client-side cache: a repeated lookup of an unchanged host whose
// replica is alive costs no network round trip.
func (r *Redis) Lookup(ctx context.Context, hostID string) (Entry, error) {
	if r.closed.Load() {
		return Entry{}, fmt.Errorf("lookup %s: %w", hostID, ErrClosed)
	}
	ctx, cancel := context.WithTimeout(ctx, r.cfg.Timeout)
	defer cancel()
	res := r.readHosts(ctx, []string{hostID})[0]
	h, err := res.AsStrMap()
	if err != nil {
		return Entry{}, fmt.Errorf("lookup %s: %w", hostID, err)
	}
	if res.IsCacheHit() {
		r.cacheHits.Add(1)
	} else {
		r.cacheMiss.Add(1)
	}
	rec, inc, err := decodeRecord(hostID, h)
	if err != nil {
		return Entry{}, fmt.Errorf("lookup %s: %w", hostID, err)
	}
	if rec.Replica == "" {
		return Entry{}, ErrNotFound
	}
	holder, err := r.client.DoCache(ctx, r.client.B().Get().Key(r.cfg.Prefix+"replica:"+rec.Replica).Cache(), r.cfg.Lease).ToString()
	if err != nil && !rueidis.IsRedisNil(err) {
		return Entry{}, fmt.Errorf("lookup %s: lease of %s: %w", hostID, rec.Replica, err)
	}
	if !live(inc, holder) {
		return Entry{}, ErrNotFound
	}
	r.sawEpoch(rec.Epoch)
	return Entry{HostID: hostID, Replica: rec.Replica, Epoch: rec.Epoch, ConnectedAt: rec.ConnectedAt,
		Metadata: rec.Metadata}, nil
}

// CacheStats returns how many Lookups read the host's entry from the client-side cache and how many went to Redis
// (a host written by this process lately always goes to Redis; see recentWindow).
func (r *Redis) CacheStats() (hits, misses uint64) {
	return r.cacheHits.Load(), r.cacheMiss.Load()
}

// Records implements Directory. A host whose replica died without releasing it is reported offline, with the
// DisconnectedAt of its previous release, if any: the time of a replica's death is not recorded.
func (r *Redis) Records(ctx context.Context, hostIDs []string) ([]Record, error) {
	if r.closed.Load() {
		return nil, fmt.Errorf("records: %w", ErrClosed)
	}
	if len(hostIDs) == 0 {
		return []Record{}, nil
	}
	ctx, cancel := context.WithTimeout(ctx, r.cfg.Timeout)
	defer cancel()
	out := make([]Record, len(hostIDs))
	incs := make([]string, len(hostIDs))
	var replicas []string
	seen := make(map[string]int)
	for i, res := range r.readHosts(ctx, hostIDs) {
		h, err := res.AsStrMap()
		if err != nil {
			return nil, fmt.Errorf("records: %s: %w", hostIDs[i], err)
		}
		if out[i], incs[i], err = decodeRecord(hostIDs[i], h); err != nil {
			return nil, fmt.Errorf("records: %w", err)
		}
		if rep := out[i].Replica; rep != "" {
			if _, ok := seen[rep]; !ok {
				seen[rep] = len(replicas)
				replicas = append(replicas, rep)
			}
		}
	}
	holders := make([]string, len(replicas))
	if len(replicas) > 0 {
		cmds := make([]rueidis.CacheableTTL, 0, len(replicas))
		for _, rep := range replicas {
			cmds = append(cmds, rueidis.CT(r.client.B().Get().Key(r.cfg.Prefix+"replica:"+rep).Cache(), r.cfg.Lease))
		}
		for i, res := range r.client.DoMultiCache(ctx, cmds...) {
			v, err := res.ToString()
			if err != nil && !rueidis.IsRedisNil(err) {
				return nil, fmt.Errorf("records: lease of %s: %w", replicas[i], err)
			}
			holders[i] = v
		}
	}
	for i := range out {
		if out[i].Replica == "" {
			continue
		}
		if live(incs[i], holders[seen[out[i].Replica]]) {
			out[i].Online = true
		} else {
			out[i].Replica = ""
		}
	}
	return out, nil
}

// Reassert writes back entries that Redis may have lost (after a restart or flush), and reports how many it wrote.
// It skips an entry when Redis knows a newer epoch for the host, or knows the entry's epoch as released. Entries of
// this replica become live again under its current lease. Run calls it with RedisConfig.Owned when the lease was
// lost; call it directly to write behind entries accepted while Redis was unreachable.
func (r *Redis) Reassert(ctx context.Context, entries []Entry) (int, error) {
	wrote, err := r.ReassertEach(ctx, entries)
	n := 0
	for _, w := range wrote {
		if w {
			n++
		}
	}
	return n, err
}

// ReassertEach implements Directory: Reassert reporting, per entry, whether it was written. An entry whose script
// failed reads false and its error is in the joined error; the others' results stand.
func (r *Redis) ReassertEach(ctx context.Context, entries []Entry) ([]bool, error) {
	if r.closed.Load() {
		return nil, fmt.Errorf("reassert: %w", ErrClosed)
	}
	if len(entries) == 0 {
		return nil, nil
	}
	execs := make([]rueidis.LuaExec, 0, len(entries))
	for _, e := range entries {
		if err := checkIDs(e.HostID, e.Replica); err != nil {
			return nil, fmt.Errorf("reassert %s: %w", e.HostID, err)
		}
		labels, err := encodeLabels(e.Metadata.Labels)
		if err != nil {
			return nil, fmt.Errorf("reassert %s: %w", e.HostID, err)
		}
		r.sawEpoch(e.Epoch)
		execs = append(execs, rueidis.LuaExec{Keys: []string{r.hostKey(e.HostID)}, Args: []string{
			strconv.FormatUint(e.Epoch, 10), e.Replica, r.incarnationFor(e.Replica),
			strconv.FormatInt(e.ConnectedAt.UnixNano(), 10),
			e.Metadata.Name, e.Metadata.OS, e.Metadata.AgentVersion, labels,
		}})
	}
	ctx, cancel := context.WithTimeout(ctx, r.cfg.Timeout)
	defer cancel()
	written := make([]bool, len(entries))
	var errs []error
	var reaped []string
	for i, res := range reassertScript.ExecMulti(ctx, r.client, execs...) {
		n, err := res.AsInt64()
		if err != nil {
			errs = append(errs, fmt.Errorf("reassert %s: %w", entries[i].HostID, err))
			continue
		}
		switch n {
		case 1:
			written[i] = true
			r.wrote(entries[i].HostID)
		case 2:
			reaped = append(reaped, entries[i].HostID)
		}
	}
	r.indexOwned(ctx, entries)
	if f := r.onReaped.Load(); f != nil && len(reaped) > 0 {
		(*f)(reaped)
	}
	return written, errors.Join(errs...)
}

// Close implements Directory. It is idempotent. It neither removes entries nor resigns the lease.
func (r *Redis) Close() error {
	r.closeOnce.Do(func() {
		r.closed.Store(true)
		r.client.Close()
	})
	return nil
}

// hostKey is the key of hostID's hash. The braces make it a cluster hash tag; every script touches only this key,
// so a host id that itself contains braces (and so changes the tag) is still stored correctly.
func (r *Redis) hostKey(hostID string) string {
	return r.cfg.Prefix + "{" + hostID + "}:host"
}

// sawEpoch raises the floor for new epochs to above epoch.
func (r *Redis) sawEpoch(epoch uint64) {
	for {
		cur := r.maxEpoch.Load()
		if epoch <= cur || r.maxEpoch.CompareAndSwap(cur, epoch) {
			return
		}
	}
}
