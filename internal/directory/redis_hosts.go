package directory

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/rueidis"
)

// This file holds how the Redis directory reads and encodes host hashes.

// readHosts reads the hashes of hostIDs, in order: through the client-side cache, except for hosts this process
// wrote within recentWindow, which are read from Redis.
func (r *Redis) readHosts(ctx context.Context, hostIDs []string) []rueidis.RedisResult {
	now := time.Now()
	var cached []rueidis.CacheableTTL
	var direct rueidis.Commands
	var isDirect []bool
	r.recentMu.Lock()
	for i, id := range hostIDs {
		if until, ok := r.recent[id]; ok && now.Before(until) {
			if isDirect == nil {
				isDirect = make([]bool, len(hostIDs))
			}
			isDirect[i] = true
			direct = append(direct, r.client.B().Hgetall().Key(r.hostKey(id)).Build())
			continue
		}
		cached = append(cached, rueidis.CT(r.client.B().Hgetall().Key(r.hostKey(id)).Cache(), r.cfg.Lease))
	}
	r.recentMu.Unlock()
	if len(direct) == 0 {
		return r.client.DoMultiCache(ctx, cached...)
	}
	var cachedRes []rueidis.RedisResult
	if len(cached) > 0 {
		cachedRes = r.client.DoMultiCache(ctx, cached...)
	}
	directRes := r.client.DoMulti(ctx, direct...)
	out := make([]rueidis.RedisResult, len(hostIDs))
	for i := range out {
		if isDirect[i] {
			out[i], directRes = directRes[0], directRes[1:]
		} else {
			out[i], cachedRes = cachedRes[0], cachedRes[1:]
		}
	}
	return out
}

// wrote notes that this process just wrote hostID's hash, so that its own reads bypass the cache for a while.
func (r *Redis) wrote(hostID string) {
	now := time.Now()
	r.recentMu.Lock()
	defer r.recentMu.Unlock()
	r.recent[hostID] = now.Add(recentWindow)
	if len(r.recent) < r.recentMax {
		return
	}
	for id, until := range r.recent {
		if !now.Before(until) {
			delete(r.recent, id)
		}
	}
	r.recentMax = max(64, 2*len(r.recent))
}

// decodeRecord turns a host hash into a Record (Online not yet decided; Replica set if the hash names an owner) and
// the owner's incarnation. An empty hash is a host never seen.
func decodeRecord(hostID string, h map[string]string) (Record, string, error) {
	rec := Record{HostID: hostID}
	if len(h) == 0 {
		return rec, "", nil
	}
	var err error
	if rec.Epoch, err = strconv.ParseUint(h["epoch"], 10, 64); err != nil {
		return rec, "", fmt.Errorf("decode %s: epoch %q: %w", hostID, h["epoch"], err)
	}
	if rec.ConnectedAt, err = parseNanos(h["since"]); err != nil {
		return rec, "", fmt.Errorf("decode %s: since: %w", hostID, err)
	}
	if rec.DisconnectedAt, err = parseNanos(h["disc"]); err != nil {
		return rec, "", fmt.Errorf("decode %s: disc: %w", hostID, err)
	}
	rec.Replica = h["replica"]
	rec.Metadata = Metadata{Name: h["name"], OS: h["os"], AgentVersion: h["agent"]}
	if s := h["labels"]; s != "" {
		if err := json.Unmarshal([]byte(s), &rec.Metadata.Labels); err != nil {
			return rec, "", fmt.Errorf("decode %s: labels: %w", hostID, err)
		}
	}
	return rec, h["inc"], nil
}

// parseNanos parses Unix nanoseconds; "" is the zero time.
func parseNanos(s string) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return time.Time{}, err
	}
	return time.Unix(0, n), nil
}

// encodeLabels renders labels as JSON; no labels is "".
func encodeLabels(labels map[string]string) (string, error) {
	if len(labels) == 0 {
		return "", nil
	}
	b, err := json.Marshal(labels)
	if err != nil {
		return "", fmt.Errorf("encode labels: %w", err)
	}
	return string(b), nil
}
