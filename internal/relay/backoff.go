package relay

import (
	"math/rand/v2"
	"time"
)

// backoff spaces the attempts of a retry loop: the wait doubles from first up to limit, and each wait is drawn
// uniformly from its upper half ("equal jitter"), so loops that began together (the releases of a directory
// outage, the requests held for one host) do not retry in step. The zero value is not usable.
type backoff struct {
	first, limit time.Duration
	cur          time.Duration // the last wait's ceiling; zero before the first
}

// next returns the wait before the next attempt.
func (b *backoff) next() time.Duration {
	if b.cur == 0 {
		b.cur = b.first
	} else {
		b.cur = min(2*b.cur, b.limit)
	}
	return jitter(b.cur)
}

// jitter returns a duration uniform in [d/2, d).
func jitter(d time.Duration) time.Duration {
	if d <= 1 {
		return d
	}
	return d/2 + rand.N(d-d/2)
}
