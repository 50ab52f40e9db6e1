package webhook

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"
	"time"

	"github.com/redis/rueidis"
)

// DefaultRedisPrefix is the prefix of the Redis keys a Redis store uses when none is given; it matches the
// directory's default, so one Redis holds a cluster's directory, presence log and webhook state side by side.
const DefaultRedisPrefix = "sb:"

// Redis is a Store in Redis, shared by the replicas of a cluster so that delivery resumes where it stopped when the
// leader restarts or another replica takes over.
//
// Keys (all under one hash tag, so the fenced cursor write is a single-slot script on Redis Cluster too):
//
//	<prefix>{webhook}:leader          the holder of the sender lease; expires unless renewed
//	<prefix>{webhook}:cursor:<hash>   the last event ID delivered to one URL; <hash> is the first 16 bytes of the
//	                                  URL's SHA-256 in hex, so the key neither leaks nor depends on URL syntax
//
// A cursor is never expired: it is one short string per configured URL.
type Redis struct {
	client rueidis.Client
	prefix string
}

var _ Store = (*Redis)(nil)

// NewRedis returns a Store on client, with keys under prefix (DefaultRedisPrefix if empty). It does not take
// ownership of client: closing client is the caller's job.
func NewRedis(client rueidis.Client, prefix string) (*Redis, error) {
	if client == nil {
		return nil, fmt.Errorf("new redis webhook store: nil client")
	}
	if prefix == "" {
		prefix = DefaultRedisPrefix
	}
	if strings.ContainsAny(prefix, "{}") {
		return nil, fmt.Errorf("new redis webhook store: prefix %q contains a brace", prefix)
	}
	return &Redis{client: client, prefix: prefix}, nil
}

func (r *Redis) leaderKey() string { return r.prefix + "{webhook}:leader" }

func (r *Redis) cursorKey(url string) string {
	h := sha256.Sum256([]byte(url))
	return r.prefix + "{webhook}:cursor:" + hex.EncodeToString(h[:16])
}

// Cursor implements Store.
func (r *Redis) Cursor(ctx context.Context, url string) (string, error) {
	v, err := r.client.Do(ctx, r.client.B().Get().Key(r.cursorKey(url)).Build()).ToString()
	if rueidis.IsRedisNil(err) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("webhook cursor: %w", err)
	}
	return v, nil
}

// setCursorScript writes the cursor only if ARGV[1] holds the lease.
//
// KEYS[1] leader key, KEYS[2] cursor key. ARGV: holder, event id. Returns 1 if written, 0 if not the leader.
var setCursorScript = rueidis.NewLuaScript(`
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[2], ARGV[2])
return 1
`)

// SetCursor implements Store.
func (r *Redis) SetCursor(ctx context.Context, holder, url, id string) error {
	n, err := setCursorScript.Exec(ctx, r.client, []string{r.leaderKey(), r.cursorKey(url)}, []string{holder, id}).AsInt64()
	if err != nil {
		return fmt.Errorf("webhook set cursor: %w", err)
	}
	if n == 0 {
		return ErrNotLeader
	}
	return nil
}

// leadScript extends the lease if ARGV[1] holds it, or takes it if nobody does.
//
// KEYS[1] leader key. ARGV: holder, ttl in milliseconds. Returns 1 if ARGV[1] holds the lease afterwards, else 0.
// It is idempotent, so the client may retry it.
var leadScript = rueidis.NewLuaScriptRetryable(`
local cur = redis.call('GET', KEYS[1])
if cur == ARGV[1] then
	redis.call('PEXPIRE', KEYS[1], ARGV[2])
	return 1
end
if cur then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
`)

// Lead implements Store.
func (r *Redis) Lead(ctx context.Context, holder string, ttl time.Duration) (bool, error) {
	n, err := leadScript.Exec(ctx, r.client, []string{r.leaderKey()},
		[]string{holder, fmt.Sprint(max(ttl.Milliseconds(), 1))}).AsInt64()
	if err != nil {
		return false, fmt.Errorf("webhook lease: %w", err)
	}
	return n == 1, nil
}

// resignScript deletes the lease only if ARGV[1] holds it.
var resignScript = rueidis.NewLuaScriptRetryable(`
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
`)

// Resign implements Store.
func (r *Redis) Resign(ctx context.Context, holder string) error {
	if err := resignScript.Exec(ctx, r.client, []string{r.leaderKey()}, []string{holder}).Error(); err != nil {
		return fmt.Errorf("webhook resign: %w", err)
	}
	return nil
}
