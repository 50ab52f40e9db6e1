package directory

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/redis/rueidis"
)

// This file holds what the Redis directory keeps for presence events.
//
// Besides the host hashes (redis_scripts.go) and leases:
//
//	<prefix>incarnations        set of "<incarnation>:<replica>" of every process that ever took a lease and was
//	                            not reaped yet
//	<prefix>owned:{<inc>}       set of host ids the incarnation claimed and may owe an offline for: SADD on claim,
//	                            SREM once its offline is announced; an index only, always verified against the host
//	                            hash, so stale members are harmless
//	<prefix>reap:{<inc>}        lock of the replica reaping a dead incarnation (SET NX PX)
//	<prefix>hosts               sorted set of every host id claimed (all scores 0), for listing in id order
//
// Reap finds incarnations whose lease is gone (the process died, or resigned), and announces the offline of every
// host such an incarnation still owned, or had released without announcing (it died within the flap window).
// All these are single-key commands, so they work on a Redis Cluster.

// markOfflineScript marks the offline of epoch ARGV[1] announced if the host is offline at that epoch and it was
// not marked before.
//
// KEYS[1] host hash. ARGV: epoch. Returns 1 if it marked, 0 otherwise. Idempotent in effect, but a retry after a
// lost reply would answer 0, so it is not retried.
var markOfflineScript = rueidis.NewLuaScript(`
local h = redis.call('HMGET', KEYS[1], 'epoch', 'replica', 'gone')
if h[1] ~= ARGV[1] or h[2] or h[3] == ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'gone', ARGV[1])
return 1
`)

// reapScript takes a host offline if the dead incarnation ARGV[1] still owns it, or marks its offline announced if
// that incarnation released it without announcing.
//
// KEYS[1] host hash. ARGV: incarnation, disconnected-at, record TTL in milliseconds (0: keep forever).
// Returns {} if there is nothing to announce, else {epoch, replica that held it, disconnected-at}.
var reapScript = rueidis.NewLuaScript(`
local h = redis.call('HMGET', KEYS[1], 'epoch', 'replica', 'inc', 'pinc', 'gone', 'disc')
if not h[1] or h[5] == h[1] then return {} end
if h[2] and h[3] == ARGV[1] then
	redis.call('HDEL', KEYS[1], 'replica', 'inc')
	redis.call('HSET', KEYS[1], 'disc', ARGV[2], 'pinc', ARGV[1], 'prep', h[2], 'gone', h[1], 'reaped', h[1])
	local ttl = tonumber(ARGV[3])
	if ttl > 0 then redis.call('PEXPIRE', KEYS[1], ttl) end
	return {h[1], h[2], ARGV[2]}
end
if not h[2] and h[4] == ARGV[1] then
	redis.call('HSET', KEYS[1], 'gone', h[1])
	return {h[1], '', h[6] or ''}
end
return {}
`)

// Client returns the directory's Redis client, for other shared state of the cluster (the presence event log). It
// is closed by Close.
func (r *Redis) Client() rueidis.Client { return r.client }

// Prefix returns the key prefix of the directory's keys.
func (r *Redis) Prefix() string { return r.cfg.Prefix }

func (r *Redis) incarnationsKey() string { return r.cfg.Prefix + "incarnations" }
func (r *Redis) ownedKey(inc string) string {
	return r.cfg.Prefix + "owned:{" + inc + "}"
}
func (r *Redis) hostsKey() string { return r.cfg.Prefix + "hosts" }

// register adds this incarnation to the set that Reap walks.
func (r *Redis) register(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, r.cfg.Timeout)
	defer cancel()
	err := r.client.Do(ctx, r.client.B().Sadd().Key(r.incarnationsKey()).Member(r.incarnation+":"+r.cfg.Replica).Build()).Error()
	if err != nil {
		return fmt.Errorf("register incarnation: %w", err)
	}
	return nil
}

// Claim implements Directory. Besides the claim script, it reads the previous owner's lease (when there was one)
// and indexes the host under this incarnation and in the host list, in one pipelined round trip.
func (r *Redis) Claim(ctx context.Context, hostID, replica string, meta Metadata) (Entry, Prior, error) {
	res, e, err := r.claimWith(ctx, hostID, replica, meta)
	if err != nil {
		return Entry{}, Prior{}, err
	}
	inc := r.incarnationFor(replica)
	ctx, cancel := context.WithTimeout(ctx, r.cfg.Timeout)
	defer cancel()
	var p Prior
	if res[1] != "" {
		p.Known = true
		p.Epoch, _ = strconv.ParseUint(res[1], 10, 64)
		p.Replica = res[2]
		p.LastReplica = res[2]
		if p.LastReplica == "" {
			p.LastReplica = res[10]
		}
		p.Announced = p.Replica == "" && res[4] == res[1]
		p.DisconnectedAt, _ = parseNanos(res[5])
		p.Metadata = Metadata{Name: res[6], OS: res[7], AgentVersion: res[8]}
		if res[9] != "" {
			_ = decodeLabelsInto(res[9], &p.Metadata)
		}
	}
	cmds := rueidis.Commands{r.client.B().Zadd().Key(r.hostsKey()).ScoreMember().ScoreMember(0, hostID).Build()}
	if inc != "" {
		cmds = append(cmds, r.client.B().Sadd().Key(r.ownedKey(inc)).Member(hostID).Build())
	}
	if p.Replica != "" {
		cmds = append(cmds, r.client.B().Get().Key(r.cfg.Prefix+"replica:"+p.Replica).Build())
	}
	out := r.client.DoMulti(ctx, cmds...)
	var errs []error
	for _, o := range out[:len(out)-boolInt(p.Replica != "")] {
		if err := o.Error(); err != nil {
			errs = append(errs, err)
		}
	}
	if p.Replica != "" {
		holder, err := out[len(out)-1].ToString()
		if err != nil && !rueidis.IsRedisNil(err) {
			errs = append(errs, err)
		}
		// An unreadable lease counts as live: "moved" is the safe reading (no online without an offline before).
		p.Live = err != nil && !rueidis.IsRedisNil(err) || live(res[3], holder)
	}
	if len(errs) > 0 {
		// The claim stands; only the indexes are behind. Reap may then miss this host if this process dies.
		r.log.Warn("directory presence index not updated", "host_id", hostID, "err", errors.Join(errs...))
	}
	return e, p, nil
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// indexOwned adds this replica's entries to its incarnation's index and the host list, after Reassert: Redis may
// have lost both. Failures are logged: the index only serves Reap.
func (r *Redis) indexOwned(ctx context.Context, entries []Entry) {
	var own []string
	var all []string
	for _, e := range entries {
		all = append(all, e.HostID)
		if e.Replica == r.cfg.Replica {
			own = append(own, e.HostID)
		}
	}
	if len(all) == 0 {
		return
	}
	b := r.client.B()
	zadd := b.Zadd().Key(r.hostsKey()).ScoreMember()
	for _, h := range all {
		zadd = zadd.ScoreMember(0, h)
	}
	cmds := rueidis.Commands{zadd.Build()}
	if len(own) > 0 {
		cmds = append(cmds, b.Sadd().Key(r.ownedKey(r.incarnation)).Member(own...).Build())
	}
	for _, res := range r.client.DoMulti(ctx, cmds...) {
		if err := res.Error(); err != nil {
			r.log.Warn("directory presence index not re-asserted", "err", err)
			return
		}
	}
}

// MarkOffline implements Directory. It also drops the host from this incarnation's index.
func (r *Redis) MarkOffline(ctx context.Context, hostID string, epoch uint64) (bool, error) {
	if r.closed.Load() {
		return false, fmt.Errorf("mark offline %s: %w", hostID, ErrClosed)
	}
	ctx, cancel := context.WithTimeout(ctx, r.cfg.Timeout)
	defer cancel()
	n, err := markOfflineScript.Exec(ctx, r.client, []string{r.hostKey(hostID)}, []string{strconv.FormatUint(epoch, 10)}).AsInt64()
	r.wrote(hostID)
	if err != nil {
		return false, fmt.Errorf("mark offline %s: %w", hostID, err)
	}
	if n == 1 {
		if err := r.client.Do(ctx, r.client.B().Srem().Key(r.ownedKey(r.incarnation)).Member(hostID).Build()).Error(); err != nil {
			r.log.Debug("directory presence index not updated", "host_id", hostID, "err", err)
		}
	}
	return n == 1, nil
}

// OnReaped sets f to be called with the hosts of this process that another replica reaped while this process was
// alive but could not renew its lease (cut off from Redis for longer than the lease). Reassert finds them when the
// lease comes back and does not write them back: they were announced offline, and an online at the same epoch
// would read as stale. The caller should close their tunnels, so that their agents reconnect under a new epoch.
func (r *Redis) OnReaped(f func(hostIDs []string)) { r.onReaped.Store(&f) }

// Reap announces the offline of the hosts of dead incarnations (see the top of this file) and returns them. Every
// replica may call it: a lock per dead incarnation lets one reap it at a time, and the per-host script announces
// each offline once. A host that reconnected anywhere is left alone. Reap is cheap when no incarnation died: one
// SMEMBERS and one cached GET per incarnation.
func (r *Redis) Reap(ctx context.Context) ([]Reaped, error) {
	if r.closed.Load() {
		return nil, fmt.Errorf("reap: %w", ErrClosed)
	}
	tctx, cancel := context.WithTimeout(ctx, r.cfg.Timeout)
	members, err := r.client.Do(tctx, r.client.B().Smembers().Key(r.incarnationsKey()).Build()).AsStrSlice()
	cancel()
	if err != nil {
		return nil, fmt.Errorf("reap: incarnations: %w", err)
	}
	var out []Reaped
	var errs []error
	for _, m := range members {
		inc, replica, ok := strings.Cut(m, ":")
		if !ok || inc == r.incarnation {
			continue
		}
		got, err := r.reapIncarnation(ctx, m, inc, replica)
		out = append(out, got...)
		if err != nil {
			errs = append(errs, fmt.Errorf("reap %s: %w", replica, err))
		}
	}
	return out, errors.Join(errs...)
}

// reapIncarnation reaps inc of replica if its lease is gone and no other replica is reaping it.
func (r *Redis) reapIncarnation(ctx context.Context, member, inc, replica string) ([]Reaped, error) {
	ctx, cancel := context.WithTimeout(ctx, 4*r.cfg.Timeout)
	defer cancel()
	holder, err := r.client.Do(ctx, r.client.B().Get().Key(r.cfg.Prefix+"replica:"+replica).Build()).ToString()
	if err != nil && !rueidis.IsRedisNil(err) {
		return nil, fmt.Errorf("lease: %w", err)
	}
	if holder == inc {
		return nil, nil // alive
	}
	lock := r.cfg.Prefix + "reap:{" + inc + "}"
	err = r.client.Do(ctx, r.client.B().Set().Key(lock).Value(r.incarnation).Nx().PxMilliseconds(r.cfg.Lease.Milliseconds()).Build()).Error()
	if rueidis.IsRedisNil(err) {
		return nil, nil // another replica is reaping it
	}
	if err != nil {
		return nil, fmt.Errorf("lock: %w", err)
	}
	var out []Reaped
	cursor := uint64(0)
	now := r.now()
	for {
		e, err := r.client.Do(ctx, r.client.B().Sscan().Key(r.ownedKey(inc)).Cursor(cursor).Count(500).Build()).AsScanEntry()
		if err != nil {
			return out, fmt.Errorf("scan owned: %w", err)
		}
		if len(e.Elements) > 0 {
			execs := make([]rueidis.LuaExec, len(e.Elements))
			for i, h := range e.Elements {
				execs[i] = rueidis.LuaExec{Keys: []string{r.hostKey(h)}, Args: []string{inc,
					strconv.FormatInt(now.UnixNano(), 10), strconv.FormatInt(r.cfg.RecordTTL.Milliseconds(), 10)}}
			}
			for i, res := range reapScript.ExecMulti(ctx, r.client, execs...) {
				v, err := res.AsStrSlice()
				if err != nil {
					return out, fmt.Errorf("reap %s: %w", e.Elements[i], err)
				}
				r.wrote(e.Elements[i])
				if len(v) != 3 {
					continue
				}
				rp := Reaped{HostID: e.Elements[i], Replica: v[1]}
				rp.Epoch, _ = strconv.ParseUint(v[0], 10, 64)
				rp.DisconnectedAt, _ = parseNanos(v[2])
				out = append(out, rp)
			}
		}
		cursor = e.Cursor
		if cursor == 0 {
			break
		}
	}
	b := r.client.B()
	for _, res := range r.client.DoMulti(ctx,
		b.Del().Key(r.ownedKey(inc)).Build(),
		b.Srem().Key(r.incarnationsKey()).Member(member).Build(),
	) {
		if err := res.Error(); err != nil {
			return out, fmt.Errorf("forget: %w", err)
		}
	}
	return out, nil
}

// decodeLabelsInto parses labels JSON into meta.Labels.
func decodeLabelsInto(s string, meta *Metadata) error {
	return json.Unmarshal([]byte(s), &meta.Labels)
}
