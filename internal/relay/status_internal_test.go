package relay

import (
	"testing"
	"time"
)

// TestExchangeRate: the rate counts what the replicas that answered both times ended in between; a replica that
// restarted, joined or stopped answering adds nothing rather than its whole total.
func TestExchangeRate(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	started, restarted := t0.Add(-time.Hour), t0.Add(time.Second)
	rv := func(id string, start time.Time, total int64, reachable bool) ReplicaView {
		return ReplicaView{ID: id, Started: &start, ExchangesTotal: total, Reachable: reachable}
	}
	prev := &statusView{At: t0, Replicas: []ReplicaView{
		rv("a", started, 100, true), rv("b", started, 50, true), rv("c", started, 70, true), rv("d", started, 10, false),
	}}
	cur := &statusView{At: t0.Add(2 * time.Second), Replicas: []ReplicaView{
		rv("a", started, 120, true),  // +20
		rv("b", restarted, 5, true),  // restarted: nothing
		rv("c", started, 70, false),  // stopped answering: nothing
		rv("d", started, 1000, true), // answers again: nothing this time
		rv("e", started, 300, true),  // joined: nothing
	}}
	got := exchangeRate(prev, cur)
	if got == nil || *got != 10 {
		t.Fatalf("rate = %v, want 10/s (20 exchanges on a over 2 s)", got)
	}
	if r := exchangeRate(cur, cur); r != nil {
		t.Fatalf("rate over no time = %v, want unknown", *r)
	}
}
