package directory

import (
	"fmt"
	"testing"

	"github.com/switchboard-relay/switchboard/internal/redistest"
)

// BenchmarkRedisClaim measures a claim (the script plus one pipelined round trip for the indexes and the previous
// owner's lease) followed by its release, over many hosts.
func BenchmarkRedisClaim(b *testing.B) {
	addr, _ := redistest.Start(b)
	r, err := NewRedis(b.Context(), RedisConfig{Addrs: []string{addr}, Replica: "r1", Prefix: newPrefix()})
	if err != nil {
		b.Fatalf("new: %v", err)
	}
	defer r.Close()
	meta := Metadata{Name: "a", OS: "linux", Labels: map[string]string{"team": "x"}}
	i := 0
	for b.Loop() {
		host := fmt.Sprintf("host-%d", i%1000)
		i++
		e, _, err := r.Claim(b.Context(), host, "r1", meta)
		if err != nil {
			b.Fatalf("claim: %v", err)
		}
		if _, err := r.Release(b.Context(), host, e.Epoch); err != nil {
			b.Fatalf("release: %v", err)
		}
	}
}
