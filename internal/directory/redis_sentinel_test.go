package directory

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/switchboard-relay/switchboard/internal/redistest"
)

// TestRedisSentinelFailoverReassert: a claim acknowledged by the primary but never replicated is lost when
// Sentinel promotes the replica, while this replica's lease (replicated earlier) survives, so "lease missing" cannot
// reveal the loss. The first heartbeat that reaches the promoted server sees another run_id and re-asserts.
func TestRedisSentinelFailoverReassert(t *testing.T) {
	g := redistest.StartSentinelGroup(t)
	prefix := newPrefix()
	var (
		mu    sync.Mutex
		owned []Entry
	)
	r, err := NewRedis(t.Context(), RedisConfig{
		Addrs:    g.Addrs,
		Sentinel: SentinelConfig{Master: redistest.SentinelMaster},
		Replica:  "r1",
		Prefix:   prefix,
		Lease:    time.Hour, // heartbeats are driven by hand; the lease must outlive the failover
		Logger:   slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug})),
		Owned: func() []Entry {
			mu.Lock()
			defer mu.Unlock()
			return append([]Entry(nil), owned...)
		},
	})
	if err != nil {
		t.Fatalf("new redis directory through sentinels: %v", err)
	}
	defer r.Close()
	ctx := t.Context()
	e1, _, err := r.Claim(ctx, "h1", "r1", Metadata{Name: "one"})
	if err != nil {
		t.Fatalf("claim h1: %v", err)
	}
	old := g.Primary()
	if n, err := g.Do(old, "wait", "1", "0"); err != nil || n != "(integer) 1" {
		t.Fatalf("WAIT for the replica: %q, %v", n, err)
	}
	var replica *redistest.Server
	for _, n := range g.Nodes {
		if n.Addr != old {
			replica = n
		}
	}
	g.CutReplication()
	e2, _, err := r.Claim(ctx, "h2", "r1", Metadata{Name: "two"})
	if err != nil {
		t.Fatalf("claim h2: %v", err)
	}
	mu.Lock()
	owned = []Entry{e1, e2}
	mu.Unlock()
	g.KillPrimary()
	now := g.WaitFailover(old)
	if now != replica.Addr {
		t.Fatalf("promoted %s, want the replica %s", now, replica.Addr)
	}
	if n, err := g.Do(now, "exists", prefix+"{h2}:host"); err != nil || n != "(integer) 0" {
		t.Fatalf("h2 on the promoted replica: %q, %v; want it lost", n, err)
	}
	if n, err := g.Do(now, "exists", prefix+"replica:r1"); err != nil || n != "(integer) 1" {
		t.Fatalf("lease on the promoted replica: %q, %v; want it kept", n, err)
	}

	// Heartbeats until one reaches the promoted server: until then the client may still talk to the dead one.
	deadline := time.Now().Add(time.Minute) // a diagnostic bound for a client that never follows, not a performance bound
	for {
		r.heartbeat(ctx, false)
		e, err := r.Lookup(ctx, "h2")
		if err == nil {
			if e.Replica != "r1" || e.Epoch != e2.Epoch || e.Metadata.Name != "two" {
				t.Fatalf("h2 after failover: %+v, want %+v", e, e2)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("h2 not re-asserted after the failover: %v", err)
		}
		time.Sleep(50 * time.Millisecond) // waiting for an external failover; bounded by deadline
	}
	if e, err := r.Lookup(ctx, "h1"); err != nil || e.Epoch != e1.Epoch {
		t.Fatalf("h1 after failover: %+v, %v", e, err)
	}
	// A new claim goes to the promoted primary and gets a newer epoch.
	e3, _, err := r.Claim(ctx, "h2", "r1", Metadata{})
	if err != nil || e3.Epoch <= e2.Epoch {
		t.Fatalf("claim after failover: %+v, %v; want epoch above %d", e3, err, e2.Epoch)
	}
}

// TestRedisSentinelBadMaster: a master name no Sentinel monitors is a clear error at start, not a hang.
func TestRedisSentinelBadMaster(t *testing.T) {
	g := redistest.StartSentinelGroup(t)
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	_, err := NewRedis(ctx, RedisConfig{Addrs: g.Addrs, Sentinel: SentinelConfig{Master: "nosuch"}, Replica: "r1"})
	if err == nil || !strings.Contains(err.Error(), `primary "nosuch"`) {
		t.Fatalf("NewRedis with an unknown master: %v", err)
	}
	_, err = NewRedis(ctx, RedisConfig{Addrs: g.Addrs, Sentinel: SentinelConfig{Password: "x"}, Replica: "r1"})
	if !errors.Is(err, ErrInvalid) {
		t.Fatalf("sentinel password without a master: %v, want ErrInvalid", err)
	}
}
