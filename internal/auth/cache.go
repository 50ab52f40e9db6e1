package auth

import (
	"context"
	"sync"
	"time"
)

// cacheTTL bounds how long a verified token is trusted without checking it again; expiry is always honoured.
const cacheTTL = time.Minute

// Cached remembers successful verifications of v for up to a minute (never past the token's expiry), so a client
// that sends the same token on every request pays for signature checking once. Failures are not cached. At most
// size tokens are kept; when full, an arbitrary entry is evicted.
func Cached(v Verifier, size int) Verifier {
	if size <= 0 {
		size = 4096
	}
	return &cache{v: v, size: size, entries: make(map[string]cacheEntry, size), now: time.Now}
}

type cache struct {
	// Immutable after Cached.
	v    Verifier
	size int
	now  func() time.Time

	// Guarded by mu.
	mu      sync.Mutex
	entries map[string]cacheEntry
}

type cacheEntry struct {
	claims Claims
	until  time.Time
}

func (c *cache) Verify(ctx context.Context, token string) (Claims, error) {
	now := c.now()
	c.mu.Lock()
	e, ok := c.entries[token]
	c.mu.Unlock()
	if ok && now.Before(e.until) {
		return e.claims, nil
	}
	claims, err := c.v.Verify(ctx, token)
	if err != nil || token == "" {
		return claims, err
	}
	until := now.Add(cacheTTL)
	if !claims.ExpiresAt.IsZero() && claims.ExpiresAt.Before(until) {
		until = claims.ExpiresAt
	}
	c.mu.Lock()
	if len(c.entries) >= c.size {
		for k := range c.entries { // map iteration order is random: evict one arbitrary entry
			delete(c.entries, k)
			break
		}
	}
	c.entries[token] = cacheEntry{claims: claims, until: until}
	c.mu.Unlock()
	return claims, nil
}
