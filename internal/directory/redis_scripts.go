package directory

import "github.com/redis/rueidis"

// The Lua scripts below each touch one key, the host's hash, so they run atomically on one slot of a Redis Cluster.
//
// Host hash fields (all strings):
//
//	epoch    newest epoch handed out, decimal; kept after release so epochs only grow
//	replica  owner replica id; absent while offline
//	inc      owner's incarnation (random per process); absent while offline
//	since    connected-at, Unix nanoseconds, from the claiming replica's clock
//	disc     disconnected-at, Unix nanoseconds, from the releasing replica's clock; absent if never released
//	name, os, agent   metadata
//	labels   metadata labels as a JSON object; empty if none
//	pinc     incarnation that released the host; absent while online (see redis_presence.go)
//	prep     replica that released the host; absent while online
//	gone     epoch whose offline was announced (MarkOffline, Reap)
//	reaped   epoch that Reap took offline
//
// Epochs are handled as Lua numbers (doubles), exact below 2^53; they are formatted with %d because Lua's tostring
// would print large numbers in exponent form. Epochs are Unix microseconds at most a few increments ahead, so they
// stay far below 2^53 until the year 2255.

// claimScript makes ARGV[1] the owner with an epoch above both the stored one and the floor ARGV[3], and returns
// the host's state before the claim.
//
// KEYS[1] host hash. ARGV: replica, incarnation, floor epoch, since, name, os, agent, labels. Returns claimAnswers
// values: {new epoch, previous epoch or "", replica or "", incarnation or "", gone or "", disc or "", name, os,
// agent, labels, releasing replica or ""}.
var claimScript = rueidis.NewLuaScript(`
local h = redis.call('HMGET', KEYS[1], 'epoch', 'replica', 'inc', 'gone', 'disc', 'name', 'os', 'agent', 'labels', 'prep')
local cur = tonumber(h[1] or '0')
local e = cur + 1
local floor = tonumber(ARGV[3])
if floor > e then e = floor end
local es = string.format('%d', e)
redis.call('HSET', KEYS[1], 'epoch', es, 'replica', ARGV[1], 'inc', ARGV[2], 'since', ARGV[4],
	'name', ARGV[5], 'os', ARGV[6], 'agent', ARGV[7], 'labels', ARGV[8])
redis.call('HDEL', KEYS[1], 'pinc', 'prep')
redis.call('PERSIST', KEYS[1])
return {es, h[1] or '', h[2] or '', h[3] or '', h[4] or '', h[5] or '', h[6] or '', h[7] or '', h[8] or '', h[9] or '',
	h[10] or ''}
`)

// claimAnswers is how many values claimScript returns.
const claimAnswers = 11

// releaseScript takes the host offline if and only if it is online with epoch ARGV[1], records the disconnect time,
// and keeps the rest of the record.
//
// KEYS[1] host hash. ARGV: epoch, disconnected-at, record TTL in milliseconds (0: keep forever).
// Returns 1 if it released, 0 otherwise.
var releaseScript = rueidis.NewLuaScript(`
local h = redis.call('HMGET', KEYS[1], 'epoch', 'replica', 'inc')
if h[1] ~= ARGV[1] or not h[2] then return 0 end
redis.call('HDEL', KEYS[1], 'replica', 'inc')
redis.call('HSET', KEYS[1], 'disc', ARGV[2], 'pinc', h[3] or '', 'prep', h[2])
local ttl = tonumber(ARGV[3])
if ttl > 0 then redis.call('PEXPIRE', KEYS[1], ttl) end
return 1
`)

// reassertScript writes back an entry that Redis lost, unless Redis knows a newer epoch for the host or has seen
// this very epoch released.
//
// KEYS[1] host hash. ARGV: epoch, replica, incarnation, since, name, os, agent, labels.
// Returns 1 if it wrote the entry, 2 if it did not because another replica reaped this very entry (took it offline
// and announced it, taking this incarnation for dead: see redis_presence.go), 0 otherwise. It is idempotent, so the client may retry it after a broken
// connection (the first command on each connection after a Redis restart fails).
var reassertScript = rueidis.NewLuaScriptRetryable(`
local h = redis.call('HMGET', KEYS[1], 'epoch', 'replica', 'reaped', 'pinc')
if h[1] then
	local cur = tonumber(h[1])
	local e = tonumber(ARGV[1])
	if cur > e then return 0 end
	if cur == e and not h[2] and h[3] == ARGV[1] and h[4] == ARGV[3] then return 2 end
	if cur == e and not h[2] then return 0 end
end
redis.call('HSET', KEYS[1], 'epoch', ARGV[1], 'replica', ARGV[2], 'inc', ARGV[3], 'since', ARGV[4],
	'name', ARGV[5], 'os', ARGV[6], 'agent', ARGV[7], 'labels', ARGV[8])
redis.call('PERSIST', KEYS[1])
return 1
`)

// resignScript deletes the replica's lease key if it still holds this incarnation.
//
// KEYS[1] lease key. ARGV: incarnation. Returns 1 if it deleted the key. Idempotent, so retryable.
var resignScript = rueidis.NewLuaScriptRetryable(`
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
`)
