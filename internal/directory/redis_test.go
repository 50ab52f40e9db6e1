package directory

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/rueidis"
	"go.uber.org/goleak"

	"github.com/switchboard-relay/switchboard/internal/redistest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// rueidis closes connections replaced by a cluster topology refresh after a 5 s sleep, past Close.
		goleak.IgnoreAnyFunction("github.com/redis/rueidis.(*clusterClient)._refresh.func2"),
		// rueidis delays a reconnect after a failed dial with a sleeping goroutine that Close does not wait for.
		goleak.IgnoreAnyFunction("github.com/redis/rueidis.(*call).DelayDo.func1"))
}

// prefixes gives each test directory its own key space in a shared Redis.
var prefixes atomic.Int64

// rawClient is a plain Redis client for test setup and fault injection.
func rawClient(t *testing.T, addrs ...string) rueidis.Client {
	t.Helper()
	c, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: addrs, DisableCache: true})
	if err != nil {
		t.Fatalf("raw redis client: %v", err)
	}
	t.Cleanup(c.Close)
	return c
}

// startRedis makes a Redis directory from cfg (Addrs, Replica and Prefix must be set) and runs it until the test
// ends; stop ends Run early.
func startRedis(t *testing.T, cfg RedisConfig) (r *Redis, stop func()) {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	r, err := NewRedis(t.Context(), cfg)
	if err != nil {
		t.Fatalf("new redis directory: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := r.Run(ctx); err != nil {
			t.Errorf("run: %v", err)
		}
	})
	stop = sync.OnceFunc(func() { cancel(); wg.Wait() })
	t.Cleanup(func() { stop(); r.Close() })
	return r, stop
}

// newPrefix returns a fresh key prefix.
func newPrefix() string { return fmt.Sprintf("t%d:", prefixes.Add(1)) }

// redisContractDir returns a newDir for runContract on the Redis at addrs. The directory is replica r1; leases for
// r0 and r2 are held by the test so that entries claimed on their behalf are live.
func redisContractDir(addrs []string) func(t *testing.T) Directory {
	return func(t *testing.T) Directory {
		prefix := newPrefix()
		raw := rawClient(t, addrs...)
		for _, rep := range []string{"r0", "r2"} {
			if err := raw.Do(t.Context(), raw.B().Set().Key(prefix+"replica:"+rep).Value("test").Px(time.Minute).Build()).Error(); err != nil {
				t.Fatalf("set lease of %s: %v", rep, err)
			}
		}
		r, _ := startRedis(t, RedisConfig{Addrs: addrs, Replica: "r1", Prefix: prefix})
		return r
	}
}

func TestRedisContract(t *testing.T) {
	addr, _ := redistest.Start(t)
	runContract(t, redisContractDir([]string{addr}))
}

func TestRedisClusterContract(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a Redis Cluster")
	}
	addrs, _ := redistest.StartCluster(t, 3)
	runContract(t, redisContractDir(addrs))
}

// TestRedisClusterSlots checks that hosts land on every master and still claim, look up and release.
func TestRedisClusterSlots(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a Redis Cluster")
	}
	addrs, _ := redistest.StartCluster(t, 3)
	prefix := newPrefix()
	r1, _ := startRedis(t, RedisConfig{Addrs: addrs[:1], Replica: "r1", Prefix: prefix})
	r2, _ := startRedis(t, RedisConfig{Addrs: addrs[1:], Replica: "r2", Prefix: prefix})
	raw := rawClient(t, addrs...)
	masters := make(map[string]bool)
	for i := range 30 {
		host := fmt.Sprintf("host-%d", i)
		e := mustClaim(t, r1, host, "r1", Metadata{Name: host})
		slot, err := raw.Do(t.Context(), raw.B().ClusterKeyslot().Key(r1.hostKey(host)).Build()).AsInt64()
		if err != nil {
			t.Fatalf("keyslot: %v", err)
		}
		masters[fmt.Sprint(slot*3/16384)] = true
		got, err := r2.Lookup(t.Context(), host)
		if err != nil || got.Replica != "r1" || got.Epoch != e.Epoch {
			t.Fatalf("lookup %s from r2 = %+v, %v; want r1 epoch %d", host, got, err, e.Epoch)
		}
		if ok, err := r2.Release(t.Context(), host, e.Epoch); err != nil || !ok {
			t.Fatalf("release %s: %v, %v", host, ok, err)
		}
		if _, err := r1.Lookup(t.Context(), host); !errors.Is(err, ErrNotFound) {
			t.Fatalf("lookup %s after release: %v, want ErrNotFound", host, err)
		}
	}
	if len(masters) != 3 {
		t.Fatalf("hosts fell in %d thirds of the slot space, want 3", len(masters))
	}
}

// TestRedisTwoReplicasRace has two replicas, each with its own client, claim one host concurrently.
func TestRedisTwoReplicasRace(t *testing.T) {
	addr, _ := redistest.Start(t)
	prefix := newPrefix()
	dirs := map[string]*Redis{}
	for _, rep := range []string{"r1", "r2"} {
		dirs[rep], _ = startRedis(t, RedisConfig{Addrs: []string{addr}, Replica: rep, Prefix: prefix})
	}
	const rounds = 20
	var mu sync.Mutex
	epochs := map[uint64]string{}
	var newest Entry
	var wg sync.WaitGroup
	for rep, d := range dirs {
		wg.Go(func() {
			for range rounds {
				e, _, err := d.Claim(t.Context(), "host-a", rep, Metadata{})
				if err != nil {
					t.Errorf("claim from %s: %v", rep, err)
					return
				}
				mu.Lock()
				if other, dup := epochs[e.Epoch]; dup {
					t.Errorf("epoch %d given to %s and %s", e.Epoch, other, rep)
				}
				epochs[e.Epoch] = rep
				if e.Epoch > newest.Epoch {
					newest = e
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	for rep, d := range dirs {
		got, err := lookupEventually(t, d, "host-a", func(e Entry) bool { return e.Epoch == newest.Epoch })
		if err != nil || got.Replica != newest.Replica {
			t.Fatalf("lookup from %s = %+v, %v; want %s epoch %d", rep, got, err, newest.Replica, newest.Epoch)
		}
	}
}

// lookupEventually polls d.Lookup until ok accepts the entry (or ok is nil and the lookup fails), for up to 5 s.
// It returns the last result.
func lookupEventually(t *testing.T, d Directory, hostID string, ok func(Entry) bool) (Entry, error) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		e, err := d.Lookup(t.Context(), hostID)
		if (ok == nil && err != nil) || (ok != nil && err == nil && ok(e)) || time.Now().After(deadline) {
			return e, err
		}
		time.Sleep(5 * time.Millisecond) // polling; bounded by deadline
	}
}

// TestRedisInvalidation checks that a cached lookup on one replica sees another replica's claim and release.
func TestRedisInvalidation(t *testing.T) {
	addr, _ := redistest.Start(t)
	prefix := newPrefix()
	r1, _ := startRedis(t, RedisConfig{Addrs: []string{addr}, Replica: "r1", Prefix: prefix})
	r2, _ := startRedis(t, RedisConfig{Addrs: []string{addr}, Replica: "r2", Prefix: prefix})
	e1 := mustClaim(t, r1, "host-a", "r1", Metadata{})
	for range 3 { // fill the cache
		if got, err := r2.Lookup(t.Context(), "host-a"); err != nil || got.Epoch != e1.Epoch {
			t.Fatalf("lookup = %+v, %v", got, err)
		}
	}
	e2 := mustClaim(t, r2, "host-a", "r2", Metadata{})
	got, err := lookupEventually(t, r1, "host-a", func(e Entry) bool { return e.Epoch == e2.Epoch })
	if err != nil || got.Replica != "r2" {
		t.Fatalf("r1 lookup after r2's claim = %+v, %v; want r2", got, err)
	}
	if _, err := r2.Release(t.Context(), "host-a", e2.Epoch); err != nil {
		t.Fatalf("release: %v", err)
	}
	if _, err := lookupEventually(t, r1, "host-a", nil); !errors.Is(err, ErrNotFound) {
		t.Fatalf("r1 lookup after release: %v, want ErrNotFound", err)
	}
}

// TestRedisLeaseExpiry stops a replica's heartbeats and expects its entries to stop being routable within the lease.
func TestRedisLeaseExpiry(t *testing.T) {
	addr, _ := redistest.Start(t)
	prefix := newPrefix()
	const lease = 600 * time.Millisecond
	r1, stop1 := startRedis(t, RedisConfig{Addrs: []string{addr}, Replica: "r1", Prefix: prefix, Lease: lease})
	r2, _ := startRedis(t, RedisConfig{Addrs: []string{addr}, Replica: "r2", Prefix: prefix, Lease: lease})
	e := mustClaim(t, r1, "host-a", "r1", Metadata{})
	// Outlive one lease while r1's Run refreshes it, with r2's cache warm.
	deadline := time.Now().Add(2 * lease)
	for time.Now().Before(deadline) {
		if got, err := r2.Lookup(t.Context(), "host-a"); err != nil || got.Epoch != e.Epoch {
			t.Fatalf("lookup while r1 is alive = %+v, %v", got, err)
		}
		time.Sleep(10 * time.Millisecond) // sampling over time, not waiting for a condition
	}
	stop1()
	stopped := time.Now()
	if _, err := lookupEventually(t, r2, "host-a", nil); !errors.Is(err, ErrNotFound) {
		t.Fatalf("lookup after r1 stopped: %v, want ErrNotFound", err)
	}
	if gone := time.Since(stopped); gone > lease+200*time.Millisecond {
		t.Fatalf("r1's entry routable for %v after its heartbeats stopped, lease %v", gone, lease)
	}
	recs, err := r2.Records(t.Context(), []string{"host-a"})
	if err != nil {
		t.Fatalf("records: %v", err)
	}
	if recs[0].Online || recs[0].Replica != "" || recs[0].Epoch != e.Epoch {
		t.Fatalf("record of a dead replica's host = %+v, want offline", recs[0])
	}
}

// TestRedisResign checks that Resign makes every entry of the replica unroutable at once.
func TestRedisResign(t *testing.T) {
	addr, _ := redistest.Start(t)
	prefix := newPrefix()
	r1, stop1 := startRedis(t, RedisConfig{Addrs: []string{addr}, Replica: "r1", Prefix: prefix})
	r2, _ := startRedis(t, RedisConfig{Addrs: []string{addr}, Replica: "r2", Prefix: prefix})
	mustClaim(t, r1, "host-a", "r1", Metadata{})
	mustClaim(t, r1, "host-b", "r1", Metadata{})
	stop1()
	if err := r1.Resign(t.Context()); err != nil {
		t.Fatalf("resign: %v", err)
	}
	for _, h := range []string{"host-a", "host-b"} {
		if _, err := lookupEventually(t, r2, h, nil); !errors.Is(err, ErrNotFound) {
			t.Fatalf("lookup %s after resign: %v, want ErrNotFound", h, err)
		}
	}
}

// TestRedisNewIncarnation checks that a replica restarted under the same id does not inherit routes to tunnels that
// died with its previous process.
func TestRedisNewIncarnation(t *testing.T) {
	addr, _ := redistest.Start(t)
	prefix := newPrefix()
	old, stopOld := startRedis(t, RedisConfig{Addrs: []string{addr}, Replica: "r1", Prefix: prefix})
	mustClaim(t, old, "host-a", "r1", Metadata{})
	stopOld()
	old.Close()
	restarted, _ := startRedis(t, RedisConfig{Addrs: []string{addr}, Replica: "r1", Prefix: prefix})
	if _, err := restarted.Lookup(t.Context(), "host-a"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("lookup of the previous incarnation's host: %v, want ErrNotFound", err)
	}
	e := mustClaim(t, restarted, "host-a", "r1", Metadata{})
	if got, err := restarted.Lookup(t.Context(), "host-a"); err != nil || got.Epoch != e.Epoch {
		t.Fatalf("lookup after reclaim = %+v, %v", got, err)
	}
}

// owned is a replica's set of local tunnels, as the relay would report it through RedisConfig.Owned.
type owned struct {
	mu      sync.Mutex
	entries map[string]Entry
}

func (o *owned) add(e Entry) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.entries == nil {
		o.entries = map[string]Entry{}
	}
	o.entries[e.HostID] = e
}

func (o *owned) list() []Entry {
	o.mu.Lock()
	defer o.mu.Unlock()
	out := make([]Entry, 0, len(o.entries))
	for _, e := range o.entries {
		out = append(out, e)
	}
	return out
}

// TestRedisDataLossReassert loses Redis's data (FLUSHALL, then a restart of an empty Redis) and expects every
// local tunnel to be routable again, with its epoch, without a reconnect.
func TestRedisDataLossReassert(t *testing.T) {
	srv := redistest.StartServer(t)
	addrs := []string{srv.Addr}
	prefix := newPrefix()
	const lease = 600 * time.Millisecond
	var tunnels owned
	r1, _ := startRedis(t, RedisConfig{Addrs: addrs, Replica: "r1", Prefix: prefix, Lease: lease, Owned: tunnels.list})
	r2, _ := startRedis(t, RedisConfig{Addrs: addrs, Replica: "r2", Prefix: prefix, Lease: lease})
	meta := Metadata{Name: "n", OS: "linux", AgentVersion: "1", Labels: map[string]string{"k": "v"}}
	var claimed []Entry
	for i := range 5 {
		e := mustClaim(t, r1, fmt.Sprintf("host-%d", i), "r1", meta)
		tunnels.add(e)
		claimed = append(claimed, e)
	}
	checkRestored := func(stage string) {
		t.Helper()
		for _, e := range claimed {
			got, err := lookupEventually(t, r2, e.HostID, func(got Entry) bool { return got.Epoch == e.Epoch })
			if err != nil || got.Replica != "r1" || got.Epoch != e.Epoch || !got.ConnectedAt.Equal(e.ConnectedAt) ||
				!sameMetadata(got.Metadata, meta) {
				t.Fatalf("%s: lookup %s = %+v, %v; want %+v", stage, e.HostID, got, err, e)
			}
		}
	}

	raw := rawClient(t, addrs...)
	if err := raw.Do(t.Context(), raw.B().Flushall().Build()).Error(); err != nil {
		t.Fatalf("flushall: %v", err)
	}
	checkRestored("after flushall")

	srv.Restart()
	checkRestored("after restart")

	// After data loss a new claim still gets an epoch above every earlier one, even from a replica that never saw
	// the host.
	if err := raw.Do(t.Context(), raw.B().Flushall().Build()).Error(); err != nil {
		t.Fatalf("flushall: %v", err)
	}
	r3, _ := startRedis(t, RedisConfig{Addrs: addrs, Replica: "r3", Prefix: prefix, Lease: lease})
	e := mustClaim(t, r3, "host-0", "r3", Metadata{})
	if e.Epoch <= claimed[0].Epoch {
		t.Fatalf("epoch after data loss %d, want > %d", e.Epoch, claimed[0].Epoch)
	}
	// r1's re-assertion of its older entry must not override the newer claim.
	if _, err := r1.Reassert(t.Context(), claimed[:1]); err != nil {
		t.Fatalf("reassert: %v", err)
	}
	got, err := r2.Lookup(t.Context(), "host-0")
	if err != nil || got.Replica != "r3" || got.Epoch != e.Epoch {
		t.Fatalf("lookup after stale reassert = %+v, %v; want r3 epoch %d", got, err, e.Epoch)
	}
}

// TestRedisReassertFloor checks that Reassert counts the entries it wrote and that the floor for new epochs
// follows reasserted epochs, of any host (the rules of which entries it writes are in the contract).
func TestRedisReassertFloor(t *testing.T) {
	addr, _ := redistest.Start(t)
	r1, _ := startRedis(t, RedisConfig{Addrs: []string{addr}, Replica: "r1", Prefix: newPrefix()})
	ahead := Entry{HostID: "host-ahead", Replica: "r1", Epoch: uint64(time.Now().Add(time.Hour).UnixMicro()),
		ConnectedAt: time.Now()}
	n, err := r1.Reassert(t.Context(), []Entry{ahead})
	if err != nil || n != 1 {
		t.Fatalf("reassert = %d, %v; want 1 written", n, err)
	}
	if e := mustClaim(t, r1, "host-other", "r1", Metadata{}); e.Epoch <= ahead.Epoch {
		t.Fatalf("epoch %d not above %d", e.Epoch, ahead.Epoch)
	}
}

// TestRedisRecordTTL checks that an offline host's record expires after RecordTTL and an online one's does not.
func TestRedisRecordTTL(t *testing.T) {
	addr, _ := redistest.Start(t)
	prefix := newPrefix()
	r1, _ := startRedis(t, RedisConfig{Addrs: []string{addr}, Replica: "r1", Prefix: prefix, RecordTTL: time.Hour})
	raw := rawClient(t, addr)
	e := mustClaim(t, r1, "host-a", "r1", Metadata{})
	pttl := func() int64 {
		t.Helper()
		n, err := raw.Do(t.Context(), raw.B().Pttl().Key(r1.hostKey("host-a")).Build()).AsInt64()
		if err != nil {
			t.Fatalf("pttl: %v", err)
		}
		return n
	}
	if got := pttl(); got != -1 {
		t.Fatalf("pttl while online = %d, want -1 (no expiry)", got)
	}
	if _, err := r1.Release(t.Context(), "host-a", e.Epoch); err != nil {
		t.Fatalf("release: %v", err)
	}
	if got := pttl(); got <= 0 || got > time.Hour.Milliseconds() {
		t.Fatalf("pttl while offline = %d, want within an hour", got)
	}
	mustClaim(t, r1, "host-a", "r1", Metadata{})
	if got := pttl(); got != -1 {
		t.Fatalf("pttl after reclaim = %d, want -1", got)
	}
}

// TestRedisUnreachable stops Redis and expects every method to fail within the timeout rather than hang.
func TestRedisUnreachable(t *testing.T) {
	srv := redistest.StartServer(t)
	const timeout = 300 * time.Millisecond
	r1, _ := startRedis(t, RedisConfig{Addrs: []string{srv.Addr}, Replica: "r1", Prefix: newPrefix(), Timeout: timeout})
	e := mustClaim(t, r1, "host-a", "r1", Metadata{})
	if _, err := r1.Lookup(t.Context(), "host-a"); err != nil {
		t.Fatalf("lookup: %v", err)
	}
	srv.Stop()
	calls := []struct {
		name string
		call func(context.Context) error
	}{
		{"claim", func(ctx context.Context) error { _, _, err := r1.Claim(ctx, "host-b", "r1", Metadata{}); return err }},
		{"release", func(ctx context.Context) error { _, err := r1.Release(ctx, "host-a", e.Epoch); return err }},
		{"lookup", func(ctx context.Context) error { _, err := r1.Lookup(ctx, "host-uncached"); return err }},
		{"records", func(ctx context.Context) error { _, err := r1.Records(ctx, []string{"host-uncached"}); return err }},
		{"reassert", func(ctx context.Context) error { _, err := r1.Reassert(ctx, []Entry{e}); return err }},
		{"resign", func(ctx context.Context) error { return r1.Resign(ctx) }},
	}
	for _, c := range calls {
		start := time.Now()
		err := c.call(t.Context())
		if took := time.Since(start); took > timeout+time.Second {
			t.Fatalf("%s took %v with Redis down, timeout %v", c.name, took, timeout)
		}
		if err == nil {
			t.Fatalf("%s succeeded with Redis down", c.name)
		}
	}
	// A cached lookup may be answered until the client notices the broken connection and drops its cache.
	if _, err := lookupEventually(t, r1, "host-a", nil); err == nil || errors.Is(err, ErrNotFound) {
		t.Fatalf("cached lookup with Redis down: %v, want a connection error", err)
	}
}

func TestNewRedisInvalid(t *testing.T) {
	tests := []struct {
		name string
		cfg  RedisConfig
	}{
		{"no address", RedisConfig{Replica: "r1"}},
		{"no replica", RedisConfig{Addrs: []string{"127.0.0.1:1"}}},
		{"brace prefix", RedisConfig{Addrs: []string{"127.0.0.1:1"}, Replica: "r1", Prefix: "a{b}"}},
		{"short lease", RedisConfig{Addrs: []string{"127.0.0.1:1"}, Replica: "r1", Lease: time.Millisecond}},
	}
	for _, tt := range tests {
		if _, err := NewRedis(t.Context(), tt.cfg); !errors.Is(err, ErrInvalid) {
			t.Fatalf("%s: %v, want ErrInvalid", tt.name, err)
		}
	}
}

// TestNewRedisUnreachable expects NewRedis to give up promptly when no Redis listens.
func TestNewRedisUnreachable(t *testing.T) {
	addr, stop := redistest.Start(t)
	stop()
	const timeout = 300 * time.Millisecond
	start := time.Now()
	r, err := NewRedis(t.Context(), RedisConfig{Addrs: []string{addr}, Replica: "r1", Timeout: timeout})
	if err == nil {
		r.Close()
		t.Fatalf("NewRedis succeeded with no Redis at %s", addr)
	}
	if took := time.Since(start); took > timeout+2*time.Second {
		t.Fatalf("NewRedis took %v to fail, timeout %v", took, timeout)
	}
}

// TestRedisRunStopsOnClose checks that Run returns once the directory is closed.
func TestRedisRunStopsOnClose(t *testing.T) {
	addr, _ := redistest.Start(t)
	r, err := NewRedis(t.Context(), RedisConfig{Addrs: []string{addr}, Replica: "r1", Prefix: newPrefix(),
		Lease: 30 * time.Millisecond})
	if err != nil {
		t.Fatalf("new: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- r.Run(t.Context()) }()
	r.Close()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("run: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("run did not return after close")
	}
}

func BenchmarkRedisLookupCached(b *testing.B) {
	addr, _ := redistest.Start(b)
	prefix := newPrefix()
	owner, err := NewRedis(b.Context(), RedisConfig{Addrs: []string{addr}, Replica: "r1", Prefix: prefix})
	if err != nil {
		b.Fatalf("new: %v", err)
	}
	defer owner.Close()
	if _, _, err := owner.Claim(b.Context(), "host-a", "r1", Metadata{Name: "a"}); err != nil {
		b.Fatalf("claim: %v", err)
	}
	// Look up from another replica: the owner's own reads bypass the cache for a moment after its claim.
	r, err := NewRedis(b.Context(), RedisConfig{Addrs: []string{addr}, Replica: "r2", Prefix: prefix})
	if err != nil {
		b.Fatalf("new: %v", err)
	}
	defer r.Close()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := r.Lookup(b.Context(), "host-a"); err != nil {
			b.Fatalf("lookup: %v", err)
		}
	}
}
