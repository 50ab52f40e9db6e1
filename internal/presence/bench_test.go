package presence

import (
	"testing"

	"github.com/switchboard-relay/switchboard/internal/redistest"
)

// BenchmarkRedisAppend measures one event appended to a stream at its length bound (so every append trims).
func BenchmarkRedisAppend(b *testing.B) {
	addr, _ := redistest.Start(b)
	client := rawClient(b, addr)
	l, err := NewRedis(RedisConfig{Client: client, MaxEvents: 1000})
	if err != nil {
		b.Fatal(err)
	}
	e := Event{Kind: Online, HostID: "org:laptop", Epoch: 1795358119072888, Seq: 2 * 1795358119072888, Replica: "r1"}
	for b.Loop() {
		if _, err := l.Append(b.Context(), e); err != nil {
			b.Fatal(err)
		}
	}
}
