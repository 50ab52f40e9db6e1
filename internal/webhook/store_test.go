package webhook

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/redis/rueidis"

	"github.com/switchboard-relay/switchboard/internal/presence"
	"github.com/switchboard-relay/switchboard/internal/redistest"
)

func redisClient(t testing.TB, addr string) rueidis.Client {
	t.Helper()
	c, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{addr}, DisableCache: true})
	if err != nil {
		t.Fatalf("redis client: %v", err)
	}
	t.Cleanup(c.Close)
	return c
}

func redisLog(t testing.TB, c rueidis.Client) *presence.Redis {
	t.Helper()
	l, err := presence.NewRedis(presence.RedisConfig{Client: c, Prefix: "test:"})
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func redisStore(t testing.TB, c rueidis.Client) *Redis {
	t.Helper()
	s, err := NewRedis(c, "test:")
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestStoreContract runs the same checks on both stores.
func TestStoreContract(t *testing.T) {
	for _, tc := range []struct {
		name string
		new  func(t *testing.T) Store
	}{
		{"memory", func(*testing.T) Store { return NewMemory() }},
		{"redis", func(t *testing.T) Store {
			addr, _ := redistest.Start(t)
			return redisStore(t, redisClient(t, addr))
		}},
		{"redis cluster", func(t *testing.T) Store { // the fenced cursor write spans two keys: one slot
			addrs, _ := redistest.StartCluster(t, 3)
			c, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: addrs, DisableCache: true})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(c.Close)
			return redisStore(t, c)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			s := tc.new(t)
			const u = "http://example.com/hook"
			if c, err := s.Cursor(ctx, u); c != "" || err != nil {
				t.Fatalf("fresh cursor %q, %v", c, err)
			}
			if err := s.SetCursor(ctx, "a", u, "1"); !errors.Is(err, ErrNotLeader) {
				t.Fatalf("SetCursor without the lease: %v, want ErrNotLeader", err)
			}
			if ok, err := s.Lead(ctx, "a", 300*time.Millisecond); !ok || err != nil {
				t.Fatalf("a leads: %v, %v", ok, err)
			}
			if ok, err := s.Lead(ctx, "b", time.Minute); ok || err != nil {
				t.Fatalf("b leads while a holds: %v, %v", ok, err)
			}
			if err := s.SetCursor(ctx, "a", u, "7"); err != nil {
				t.Fatalf("a sets cursor: %v", err)
			}
			if err := s.SetCursor(ctx, "b", u, "3"); !errors.Is(err, ErrNotLeader) {
				t.Fatalf("b sets cursor: %v, want ErrNotLeader", err)
			}
			if c, _ := s.Cursor(ctx, u); c != "7" {
				t.Fatalf("cursor %q, want 7", c)
			}
			if c, _ := s.Cursor(ctx, u+"/other"); c != "" {
				t.Fatalf("other URL's cursor %q, want none", c)
			}
			// The lease expires without renewal; then b takes it and a is fenced off.
			eventually(t, 5*time.Second, "b takes the expired lease", func() bool {
				ok, err := s.Lead(ctx, "b", time.Minute)
				return ok && err == nil
			})
			if err := s.SetCursor(ctx, "a", u, "9"); !errors.Is(err, ErrNotLeader) {
				t.Fatalf("a sets cursor after losing the lease: %v", err)
			}
			if err := s.Resign(ctx, "a"); err != nil { // not the holder: no effect
				t.Fatal(err)
			}
			if ok, _ := s.Lead(ctx, "a", time.Minute); ok {
				t.Fatal("a's resign released b's lease")
			}
			if err := s.Resign(ctx, "b"); err != nil {
				t.Fatal(err)
			}
			if ok, _ := s.Lead(ctx, "a", time.Minute); !ok {
				t.Fatal("a cannot lead after b resigned")
			}
		})
	}
}

// TestRedisResumesAfterRestart: a sender stopped mid-stream and a new one started on the same Redis resume from
// the stored cursor: nothing lost, nothing re-sent from the start.
func TestRedisResumesAfterRestart(t *testing.T) {
	addr, _ := redistest.Start(t)
	l := redisLog(t, redisClient(t, addr)) // the relays' shared log, appended to by "other replicas"
	rc := newReceiver(t, testSecret, nil)
	want := appendEvents(t, l, 5)

	c1 := redisClient(t, addr)
	cfg := fastConfig(redisLog(t, c1), rc.URL())
	cfg.Store = redisStore(t, c1)
	cfg.Holder = "first"
	_, stop := runSender(t, cfg)
	eventually(t, 10*time.Second, "first 5 events", func() bool { return len(rc.unique()) >= 5 })
	eventually(t, 10*time.Second, "the cursor stored in Redis", func() bool {
		c, err := cfg.Store.Cursor(context.Background(), rc.URL())
		return err == nil && c == want[4].ID
	})
	stop()
	firstRun := len(rc.deliveries())
	want = append(want, appendEvents(t, l, 5)...)

	// A new process: new client, log and store, new holder, same Redis.
	c2 := redisClient(t, addr)
	cfg.Log = redisLog(t, c2)
	cfg.Store = redisStore(t, c2)
	cfg.Holder = "second"
	cfg.Registerer = nil
	_, _ = runSender(t, cfg)
	eventually(t, 10*time.Second, "all 10 events", func() bool { return len(rc.unique()) >= 10 })
	checkDelivered(t, rc, want)
	if d := rc.deliveries()[firstRun]; d.id != want[5].ID {
		t.Fatalf("second sender started with event %s, want %s (the one after the stored cursor)", d.id, want[5].ID)
	}
}

// TestRedisLeaderTakeover: two senders on one Redis; one delivers. When the leader dies without resigning (its
// Redis connection cut), the other takes over within the lease and resumes from the stored cursor, so every event
// arrives in order. When a leader stops cleanly, the other takes over at once.
func TestRedisLeaderTakeover(t *testing.T) {
	addr, _ := redistest.Start(t)
	l := redisLog(t, redisClient(t, addr))
	rc := newReceiver(t, testSecret, nil)

	type member struct {
		s      *Sender
		client rueidis.Client
		stop   func()
	}
	start := func(name string) *member {
		c, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{addr}, DisableCache: true})
		if err != nil {
			t.Fatal(err)
		}
		cfg := fastConfig(redisLog(t, c), rc.URL())
		cfg.Store = redisStore(t, c)
		cfg.Holder = name
		s, stop := runSender(t, cfg)
		t.Cleanup(c.Close)
		return &member{s: s, client: c, stop: stop}
	}
	leading := func(m *member) bool { return testutil.ToFloat64(m.s.m.leader) == 1 }
	a, b := start("a"), start("b")
	var leader, standby *member
	eventually(t, 10*time.Second, "one leader", func() bool {
		switch {
		case leading(a) && !leading(b):
			leader, standby = a, b
		case leading(b) && !leading(a):
			leader, standby = b, a
		}
		return leader != nil
	})
	want := appendEvents(t, l, 5)
	eventually(t, 10*time.Second, "5 events", func() bool { return len(rc.unique()) >= 5 })
	if leading(standby) {
		t.Fatal("both senders lead")
	}

	// The leader loses Redis (as if its process died): it can neither renew nor resign.
	leader.client.Close()
	want = append(want, appendEvents(t, l, 5)...)
	eventually(t, 10*time.Second, "the standby takes over", func() bool { return leading(standby) })
	eventually(t, 10*time.Second, "all 10 events", func() bool { return len(rc.unique()) >= 10 })
	eventually(t, 10*time.Second, "the cut-off leader stands by", func() bool { return !leading(leader) })
	leader.stop()
	checkDelivered(t, rc, want)

	// A clean stop resigns: a fresh standby takes over without waiting for the lease to expire.
	c := start("c")
	eventually(t, 10*time.Second, "c stands by", func() bool {
		return testutil.ToFloat64(c.s.m.leader) == 0 && leading(standby)
	})
	standby.stop()
	eventually(t, 10*time.Second, "c takes over", func() bool { return leading(c) })
	want = append(want, appendEvents(t, l, 3)...)
	eventually(t, 10*time.Second, "all 13 events", func() bool { return len(rc.unique()) >= 13 })
	checkDelivered(t, rc, want)
}

// TestRedisRestartedEmpty: Redis losing its data (log, cursor and lease) makes the leader re-take the lease and
// follow the new log from its start: the events appended after the restart all arrive, in order.
func TestRedisRestartedEmpty(t *testing.T) {
	srv := redistest.StartServer(t)
	l := redisLog(t, redisClient(t, srv.Addr))
	rc := newReceiver(t, testSecret, nil)
	c := redisClient(t, srv.Addr)
	cfg := fastConfig(redisLog(t, c), rc.URL())
	cfg.Store = redisStore(t, c)
	s, _ := runSender(t, cfg)
	want := appendEvents(t, l, 4)
	eventually(t, 10*time.Second, "4 events", func() bool { return len(rc.unique()) >= 4 })
	srv.Restart()
	want = append(want, appendEvents(t, l, 4)...)
	eventually(t, 15*time.Second, "all 8 events", func() bool { return len(rc.unique()) >= 8 })
	checkDelivered(t, rc, want)
	eventually(t, 10*time.Second, "leading again", func() bool { return testutil.ToFloat64(s.m.leader) == 1 })
}

// TestRedisGapContinuesFromOldestRetained: with the Redis stream log, a cursor older than what the stream retains
// counts a gap and delivery goes on from the oldest retained event.
func TestRedisGapContinuesFromOldestRetained(t *testing.T) {
	addr, _ := redistest.Start(t)
	c := redisClient(t, addr)
	l, err := presence.NewRedis(presence.RedisConfig{Client: c, Prefix: "test:", MaxEvents: 4})
	if err != nil {
		t.Fatal(err)
	}
	rc := newReceiver(t, testSecret, nil)
	evs := appendEvents(t, l, 10) // the stream keeps the last 4
	store := redisStore(t, c)
	if ok, _ := store.Lead(context.Background(), "me", time.Minute); !ok {
		t.Fatal("lead")
	}
	if err := store.SetCursor(context.Background(), "me", rc.URL(), evs[2].ID); err != nil {
		t.Fatal(err)
	}
	cfg := fastConfig(l, rc.URL())
	cfg.Store, cfg.Holder = store, "me"
	s, _ := runSender(t, cfg)
	eventually(t, 10*time.Second, "retained events", func() bool { return len(rc.unique()) >= 4 })
	checkDelivered(t, rc, evs[6:])
	if got := testutil.ToFloat64(s.m.gaps); got != 1 {
		t.Fatalf("gaps metric %v, want 1", got)
	}
}
