package peering

import "sync"

// nonces remembers the nonce of every hop this replica accepted until the hop's timestamp leaves the acceptance
// window (after which the hop is refused as too old anyway), so that a captured hop cannot be sent again. It holds
// at most max nonces: when that many are still in their window, further hops are refused (ErrHopCacheFull) rather
// than an old nonce forgotten early.
type nonces struct {
	max int // immutable after NewSigner

	// Guarded by mu.
	mu    sync.Mutex
	seen  map[[16]byte]int64 // nonce → unix second after which its hop is expired
	order []nonceExpiry      // in acceptance order, from head; expiries are nearly ordered (clock skew aside)
	head  int
}

type nonceExpiry struct {
	nonce   [16]byte
	expires int64
}

// admit records nonce, whose hop expires at the unix second expires, at now. It refuses a nonce already seen, and
// any nonce when max unexpired ones are held.
func (c *nonces) admit(nonce [16]byte, expires, now int64) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.seen == nil {
		c.seen = make(map[[16]byte]int64)
	}
	// Forget the expired ones at the front. One stuck behind a later expiry (a peer's clock ahead) waits its turn:
	// at most 2 × HopMaxAge.
	for c.head < len(c.order) && c.order[c.head].expires < now {
		e := c.order[c.head]
		if c.seen[e.nonce] == e.expires {
			delete(c.seen, e.nonce)
		}
		c.order[c.head] = nonceExpiry{}
		c.head++
	}
	if c.head > 1024 && c.head > len(c.order)/2 {
		c.order = append(c.order[:0], c.order[c.head:]...)
		c.head = 0
	}
	if exp, ok := c.seen[nonce]; ok && exp >= now {
		return ErrHopReplayed
	}
	if len(c.seen) >= c.max {
		return ErrHopCacheFull
	}
	c.seen[nonce] = expires
	c.order = append(c.order, nonceExpiry{nonce, expires})
	return nil
}

// len returns the number of nonces held.
func (c *nonces) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.seen)
}
