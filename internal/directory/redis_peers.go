package directory

import (
	"context"
	"fmt"
	"time"

	"github.com/redis/rueidis"
)

// peerTTL is how long an advertised internal address lives in Redis without being advertised again. Replicas
// re-advertise every few seconds; the TTL only bounds the garbage left by replicas that are gone for good.
func (r *Redis) peerTTL() time.Duration { return max(10*r.cfg.Lease, time.Minute) }

// peerKey is the key holding replica's internal address.
func (r *Redis) peerKey(replica string) string { return r.cfg.Prefix + "peer:" + replica }

// peersKey is the hash of every advertised replica: replica id → internal URL (for ListPeers).
func (r *Redis) peersKey() string { return r.cfg.Prefix + "peers" }

// Advertise implements Directory: one SET with a TTL (see peerTTL) and one HSET into the peer list, pipelined.
func (r *Redis) Advertise(ctx context.Context, replica, u string) error {
	if err := checkPeer(replica, u); err != nil {
		return fmt.Errorf("advertise %s: %w", replica, err)
	}
	if r.closed.Load() {
		return fmt.Errorf("advertise %s: %w", replica, ErrClosed)
	}
	ctx, cancel := context.WithTimeout(ctx, r.cfg.Timeout)
	defer cancel()
	for _, res := range r.client.DoMulti(ctx,
		r.client.B().Set().Key(r.peerKey(replica)).Value(u).PxMilliseconds(r.peerTTL().Milliseconds()).Build(),
		r.client.B().Hset().Key(r.peersKey()).FieldValue().FieldValue(replica, u).Build(),
	) {
		if err := res.Error(); err != nil {
			return fmt.Errorf("advertise %s: %w", replica, err)
		}
	}
	return nil
}

// ListPeers implements Directory: one HGETALL. Replicas that stopped for good stay listed with their last URL.
func (r *Redis) ListPeers(ctx context.Context) (map[string]string, error) {
	if r.closed.Load() {
		return nil, fmt.Errorf("list peers: %w", ErrClosed)
	}
	ctx, cancel := context.WithTimeout(ctx, r.cfg.Timeout)
	defer cancel()
	m, err := r.client.Do(ctx, r.client.B().Hgetall().Key(r.peersKey()).Build()).AsStrMap()
	if err != nil {
		return nil, fmt.Errorf("list peers: %w", err)
	}
	return m, nil
}

// PeerURL implements Directory. It reads through the client-side cache; a missing address is read again from Redis,
// because the cache may still hold the absence after a fresh Advertise (invalidations arrive asynchronously).
func (r *Redis) PeerURL(ctx context.Context, replica string) (string, error) {
	if r.closed.Load() {
		return "", fmt.Errorf("peer url %s: %w", replica, ErrClosed)
	}
	ctx, cancel := context.WithTimeout(ctx, r.cfg.Timeout)
	defer cancel()
	u, err := r.client.DoCache(ctx, r.client.B().Get().Key(r.peerKey(replica)).Cache(), r.cfg.Lease).ToString()
	if rueidis.IsRedisNil(err) {
		u, err = r.client.Do(ctx, r.client.B().Get().Key(r.peerKey(replica)).Build()).ToString()
	}
	if rueidis.IsRedisNil(err) {
		return "", ErrNotFound
	}
	if err != nil {
		return "", fmt.Errorf("peer url %s: %w", replica, err)
	}
	return u, nil
}
