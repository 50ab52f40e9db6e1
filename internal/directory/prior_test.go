package directory

import (
	"strings"
	"testing"

	"github.com/switchboard-relay/switchboard/internal/redistest"
)

// runPresenceContract checks the prior state a claim reports, host listing and MarkOffline, on directories made by
// newDir.
func runPresenceContract(t *testing.T, newDir func(t *testing.T) Directory) {
	t.Helper()
	claim := func(t *testing.T, d Directory, host string, meta Metadata) (Entry, Prior) {
		t.Helper()
		e, p, err := d.Claim(t.Context(), host, "r1", meta)
		if err != nil {
			t.Fatalf("claim %s: %v", host, err)
		}
		return e, p
	}

	t.Run("PriorStates", func(t *testing.T) {
		d := newDir(t)
		m1 := Metadata{Name: "one", Labels: map[string]string{"a": "1"}}
		m2 := Metadata{Name: "two"}
		e1, p := claim(t, d, "h", m1)
		if p.Known || p.Replica != "" || p.Live || p.Announced {
			t.Fatalf("first claim prior = %+v, want unknown", p)
		}
		e2, p := claim(t, d, "h", m2)
		if !p.Known || p.Replica != "r1" || !p.Live || p.Epoch != e1.Epoch || p.Announced || !sameMetadata(p.Metadata, m1) {
			t.Fatalf("claim over a live owner: prior %+v, want r1 live epoch %d metadata %+v", p, e1.Epoch, m1)
		}
		if ok, err := d.Release(t.Context(), "h", e2.Epoch); err != nil || !ok {
			t.Fatalf("release: %v %v", ok, err)
		}
		e3, p := claim(t, d, "h", m1)
		if !p.Known || p.Replica != "" || p.Live || p.Announced || p.DisconnectedAt.IsZero() || p.Epoch != e2.Epoch ||
			!sameMetadata(p.Metadata, m2) || p.LastReplica != "r1" {
			t.Fatalf("claim after an unannounced release: prior %+v", p)
		}
		if ok, err := d.Release(t.Context(), "h", e3.Epoch); err != nil || !ok {
			t.Fatalf("release: %v %v", ok, err)
		}
		if ok, err := d.MarkOffline(t.Context(), "h", e3.Epoch); err != nil || !ok {
			t.Fatalf("mark offline: %v %v; want true", ok, err)
		}
		if ok, err := d.MarkOffline(t.Context(), "h", e3.Epoch); err != nil || ok {
			t.Fatalf("second mark offline: %v %v; want false", ok, err)
		}
		_, p = claim(t, d, "h", m1)
		if !p.Announced || p.Replica != "" || p.Epoch != e3.Epoch {
			t.Fatalf("claim after an announced offline: prior %+v, want announced", p)
		}
	})

	t.Run("ListHosts", func(t *testing.T) {
		d := newDir(t)
		for _, h := range []string{"b2", "a1", "c", "b1", "a2", "b10"} {
			claim(t, d, h, Metadata{})
		}
		for _, tc := range []struct {
			prefix, after string
			limit         int
			want          string
		}{
			{"", "", 10, "a1 a2 b1 b10 b2 c"},
			{"", "", 2, "a1 a2"},
			{"", "a2", 2, "b1 b10"},
			{"b", "", 10, "b1 b10 b2"},
			{"b", "a", 10, "b1 b10 b2"},
			{"b", "b10", 10, "b2"},
			{"b", "b2", 10, ""},
			{"a", "a2", 10, ""},
			{"a", "b", 10, ""},
			{"x", "", 10, ""},
			{"b1", "", 10, "b1 b10"},
		} {
			ids, err := d.ListHosts(t.Context(), tc.prefix, tc.after, tc.limit)
			if err != nil {
				t.Fatalf("list %+v: %v", tc, err)
			}
			if got := strings.Join(ids, " "); got != tc.want {
				t.Errorf("list prefix %q after %q limit %d = %q, want %q", tc.prefix, tc.after, tc.limit, got, tc.want)
			}
		}
	})

	t.Run("MarkOfflineOnlyWhenOffline", func(t *testing.T) {
		d := newDir(t)
		e1, _ := claim(t, d, "h", Metadata{})
		if ok, err := d.MarkOffline(t.Context(), "h", e1.Epoch); err != nil || ok {
			t.Fatalf("mark offline while online: %v %v; want false", ok, err)
		}
		if ok, err := d.Release(t.Context(), "h", e1.Epoch); err != nil || !ok {
			t.Fatalf("release: %v %v", ok, err)
		}
		e2, _ := claim(t, d, "h", Metadata{})
		if ok, err := d.MarkOffline(t.Context(), "h", e1.Epoch); err != nil || ok {
			t.Fatalf("mark offline of an epoch reconnected since: %v %v; want false", ok, err)
		}
		if ok, err := d.Release(t.Context(), "h", e2.Epoch); err != nil || !ok {
			t.Fatalf("release: %v %v", ok, err)
		}
		if ok, err := d.MarkOffline(t.Context(), "unknown", 1); err != nil || ok {
			t.Fatalf("mark offline of an unknown host: %v %v; want false", ok, err)
		}
		if ok, err := d.MarkOffline(t.Context(), "h", e2.Epoch); err != nil || !ok {
			t.Fatalf("mark offline: %v %v; want true", ok, err)
		}
	})
}

// TestRedisReap checks that a replica announces, once, the offline of every host a dead replica still owned or
// had released within its flap window, and leaves alone hosts that reconnected elsewhere.
func TestRedisReap(t *testing.T) {
	addr, _ := redistest.Start(t)
	prefix := newPrefix()
	ctx := t.Context()
	dead, stopDead := startRedis(t, RedisConfig{Addrs: []string{addr}, Replica: "r1", Prefix: prefix})
	alive, _ := startRedis(t, RedisConfig{Addrs: []string{addr}, Replica: "r2", Prefix: prefix})

	owned, _, err := dead.Claim(ctx, "owned", "r1", Metadata{})
	if err != nil {
		t.Fatal(err)
	}
	flapping, _, err := dead.Claim(ctx, "flapping", "r1", Metadata{})
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := dead.Release(ctx, "flapping", flapping.Epoch); err != nil || !ok {
		t.Fatalf("release: %v %v", ok, err)
	}
	announced, _, err := dead.Claim(ctx, "announced", "r1", Metadata{})
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := dead.Release(ctx, "announced", announced.Epoch); err != nil || !ok {
		t.Fatalf("release: %v %v", ok, err)
	}
	if ok, err := dead.MarkOffline(ctx, "announced", announced.Epoch); err != nil || !ok {
		t.Fatalf("mark offline: %v %v", ok, err)
	}
	if _, _, err := dead.Claim(ctx, "moved", "r1", Metadata{}); err != nil {
		t.Fatal(err)
	}
	if _, p, err := alive.Claim(ctx, "moved", "r2", Metadata{}); err != nil || !p.Live || p.Replica != "r1" {
		t.Fatalf("claim of a host live on r1: prior %+v, %v; want live on r1", p, err)
	}

	if got, err := alive.Reap(ctx); err != nil || len(got) != 0 {
		t.Fatalf("reap while r1 lives = %v, %v; want nothing", got, err)
	}
	// r1 dies: its lease lapses (here: is deleted, as if it expired).
	stopDead()
	raw := rawClient(t, addr)
	if err := raw.Do(ctx, raw.B().Del().Key(prefix+"replica:r1").Build()).Error(); err != nil {
		t.Fatal(err)
	}
	got, err := alive.Reap(ctx)
	if err != nil {
		t.Fatalf("reap: %v", err)
	}
	want := map[string]Reaped{
		"owned":    {HostID: "owned", Epoch: owned.Epoch, Replica: "r1"},
		"flapping": {HostID: "flapping", Epoch: flapping.Epoch},
	}
	if len(got) != len(want) {
		t.Fatalf("reaped %+v, want %v", got, want)
	}
	for _, g := range got {
		w, ok := want[g.HostID]
		if !ok || g.Epoch != w.Epoch || g.Replica != w.Replica || g.DisconnectedAt.IsZero() {
			t.Fatalf("reaped %+v, want %+v with a disconnect time", g, w)
		}
	}
	recs, err := alive.Records(ctx, []string{"owned", "moved"})
	if err != nil || recs[0].Online || !recs[1].Online || recs[1].Replica != "r2" {
		t.Fatalf("records after reap = %+v, %v; want owned offline, moved online on r2", recs, err)
	}
	if _, p, err := alive.Claim(ctx, "owned", "r2", Metadata{}); err != nil || !p.Announced || p.LastReplica != "r1" {
		t.Fatalf("claim of a reaped host: prior %+v, %v; want announced", p, err)
	}
	if got, err := alive.Reap(ctx); err != nil || len(got) != 0 {
		t.Fatalf("second reap = %v, %v; want nothing", got, err)
	}
}

// TestRedisReapedWhileAlive: a replica cut off from Redis for longer than its lease is reaped by another; when it
// is back, Reassert does not resurrect the reaped entries (their offline was announced) and reports them.
func TestRedisReapedWhileAlive(t *testing.T) {
	addr, _ := redistest.Start(t)
	prefix := newPrefix()
	ctx := t.Context()
	cut, _ := startRedis(t, RedisConfig{Addrs: []string{addr}, Replica: "r1", Prefix: prefix})
	other, _ := startRedis(t, RedisConfig{Addrs: []string{addr}, Replica: "r2", Prefix: prefix})
	var reported []string
	cut.OnReaped(func(ids []string) { reported = append(reported, ids...) })
	e, _, err := cut.Claim(ctx, "h", "r1", Metadata{})
	if err != nil {
		t.Fatal(err)
	}
	keep, _, err := cut.Claim(ctx, "k", "r1", Metadata{})
	if err != nil {
		t.Fatal(err)
	}
	raw := rawClient(t, addr)
	if err := raw.Do(ctx, raw.B().Del().Key(prefix+"replica:r1").Build()).Error(); err != nil {
		t.Fatal(err)
	}
	if got, err := other.Reap(ctx); err != nil || len(got) != 2 {
		t.Fatalf("reap = %v, %v; want h and k", got, err)
	}
	// k reconnected elsewhere meanwhile: its newer epoch is not r1's to touch.
	if _, _, err := other.Claim(ctx, "k", "r2", Metadata{}); err != nil {
		t.Fatal(err)
	}
	n, err := cut.Reassert(ctx, []Entry{e, keep})
	if err != nil || n != 0 {
		t.Fatalf("reassert = %d, %v; want 0 written", n, err)
	}
	if strings.Join(reported, " ") != "h" {
		t.Fatalf("reported reaped %v, want [h]", reported)
	}
	if _, err := cut.Lookup(ctx, "h"); err == nil {
		t.Fatal("a reaped entry routes again")
	}
}
