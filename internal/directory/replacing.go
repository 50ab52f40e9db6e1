package directory

import (
	"context"
	"fmt"
	"strconv"

	"github.com/redis/rueidis"
)

// Replacer is implemented by directories that tell a claimer, atomically with its claim, whose entry it replaced.
// Claims of one host are serialised by their epochs, so of two replicas claiming the same host at once the later
// one always learns of the earlier one and can tell it to close its older tunnel.
type Replacer interface {
	// ClaimReplacing is Claim that also returns the entry the claim replaced. prev.Replica is "" if the host had
	// no owner recorded. The previous owner's liveness is not checked: it may be a replica that died.
	ClaimReplacing(ctx context.Context, hostID, replica string, meta Metadata) (e, prev Entry, err error)
}

var (
	_ Replacer = (*Memory)(nil)
	_ Replacer = (*Redis)(nil)
)

// ClaimReplacing implements Replacer.
func (m *Memory) ClaimReplacing(ctx context.Context, hostID, replica string, meta Metadata) (Entry, Entry, error) {
	if err := checkIDs(hostID, replica); err != nil {
		return Entry{}, Entry{}, fmt.Errorf("claim %s: %w", hostID, err)
	}
	if err := ctx.Err(); err != nil {
		return Entry{}, Entry{}, fmt.Errorf("claim %s: %w", hostID, err)
	}
	now := m.now().Round(0)
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return Entry{}, Entry{}, fmt.Errorf("claim %s: %w", hostID, ErrClosed)
	}
	h := m.hosts[hostID]
	if h == nil {
		h = &memHost{}
		m.hosts[hostID] = h
	}
	var prev Entry
	if h.online {
		prev = Entry{HostID: hostID, Replica: h.replica, Epoch: h.epoch, ConnectedAt: h.connectedAt, Metadata: cloneMetadata(h.meta)}
	}
	h.epoch++
	h.online = true
	h.replica = replica
	h.connectedAt = now
	h.meta = cloneMetadata(meta)
	return Entry{HostID: hostID, Replica: replica, Epoch: h.epoch, ConnectedAt: now, Metadata: cloneMetadata(meta)}, prev, nil
}

// claimReplacingScript is claimScript that also returns the owner it replaced.
//
// KEYS[1] host hash. ARGV: as claimScript. Returns {new epoch, previous replica or "", previous epoch or "0"}.
var claimReplacingScript = rueidis.NewLuaScript(`
local h = redis.call('HMGET', KEYS[1], 'epoch', 'replica')
local cur = tonumber(h[1] or '0')
local e = cur + 1
local floor = tonumber(ARGV[3])
if floor > e then e = floor end
local es = string.format('%d', e)
redis.call('HSET', KEYS[1], 'epoch', es, 'replica', ARGV[1], 'inc', ARGV[2], 'since', ARGV[4],
	'name', ARGV[5], 'os', ARGV[6], 'agent', ARGV[7], 'labels', ARGV[8])
redis.call('PERSIST', KEYS[1])
return {es, h[2] or '', h[1] or '0'}
`)

// ClaimReplacing implements Replacer: one script on the host's hash, like Claim.
func (r *Redis) ClaimReplacing(ctx context.Context, hostID, replica string, meta Metadata) (Entry, Entry, error) {
	res, e, err := r.claimWith(ctx, claimReplacingScript, hostID, replica, meta, 3)
	if err != nil {
		return Entry{}, Entry{}, err
	}
	var prev Entry
	if res[1] != "" {
		prev = Entry{HostID: hostID, Replica: res[1]}
		prev.Epoch, _ = strconv.ParseUint(res[2], 10, 64)
	}
	return e, prev, nil
}
