package relay

import (
	"fmt"
	"testing"
	"time"
)

// TestIPLimiterMemoryIsBounded: a flood from ever new addresses never grows the limiter past its cap, and the
// addresses it still holds keep their buckets.
func TestIPLimiterMemoryIsBounded(t *testing.T) {
	l := newIPLimiter(0.001, 1)
	l.max = 50
	now := time.Now()
	for i := range 10 * l.max {
		l.allow(fmt.Sprintf("10.0.%d.%d", i/256, i%256), now)
		if n := len(l.limiters); n > l.max {
			t.Fatalf("after %d addresses the limiter holds %d, cap %d", i+1, n, l.max)
		}
	}
	last := fmt.Sprintf("10.0.%d.%d", (10*l.max-1)/256, (10*l.max-1)%256)
	if l.allow(last, now) {
		t.Fatal("an address still held got a fresh bucket")
	}
}
