package directory

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"
)

// runContract runs the behaviour every Directory must share against directories made by newDir. Each subtest gets a
// fresh directory; newDir registers its own cleanup.
func runContract(t *testing.T, newDir func(t *testing.T) Directory) {
	t.Helper()
	ctx := t.Context
	runAdminContract(t, newDir)
	runPeersContract(t, newDir)
	runPresenceContract(t, newDir)

	t.Run("ClaimGivesIncreasingEpochs", func(t *testing.T) {
		d := newDir(t)
		var last uint64
		for i := range 5 {
			replica := fmt.Sprintf("r%d", i%2)
			e, _, err := d.Claim(ctx(), "host-a", replica, Metadata{Name: "a"})
			if err != nil {
				t.Fatalf("claim %d: %v", i, err)
			}
			if e.Epoch <= last {
				t.Fatalf("claim %d: epoch %d, want > %d", i, e.Epoch, last)
			}
			if e.HostID != "host-a" || e.Replica != replica {
				t.Fatalf("claim %d: entry %+v, want host-a on %s", i, e, replica)
			}
			last = e.Epoch
		}
	})

	t.Run("EpochsGrowAcrossRelease", func(t *testing.T) {
		d := newDir(t)
		e1 := mustClaim(t, d, "host-a", "r1", Metadata{})
		if ok, err := d.Release(ctx(), "host-a", e1.Epoch); err != nil || !ok {
			t.Fatalf("release: %v, %v; want true, nil", ok, err)
		}
		e2 := mustClaim(t, d, "host-a", "r1", Metadata{})
		if e2.Epoch <= e1.Epoch {
			t.Fatalf("epoch after release %d, want > %d", e2.Epoch, e1.Epoch)
		}
	})

	t.Run("LookupReturnsOwner", func(t *testing.T) {
		d := newDir(t)
		meta := Metadata{Name: "laptop", OS: "linux", AgentVersion: "1.2.3", Labels: map[string]string{"team": "x"}}
		e := mustClaim(t, d, "host-a", "r1", meta)
		got, err := d.Lookup(ctx(), "host-a")
		if err != nil {
			t.Fatalf("lookup: %v", err)
		}
		if got.HostID != "host-a" || got.Replica != "r1" || got.Epoch != e.Epoch {
			t.Fatalf("lookup = %+v, want host-a on r1 epoch %d", got, e.Epoch)
		}
		if !got.ConnectedAt.Equal(e.ConnectedAt) {
			t.Fatalf("lookup connected at %v, want %v", got.ConnectedAt, e.ConnectedAt)
		}
		if !sameMetadata(got.Metadata, meta) {
			t.Fatalf("lookup metadata %+v, want %+v", got.Metadata, meta)
		}
		if _, err := d.Lookup(ctx(), "host-never"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("lookup unknown host: %v, want ErrNotFound", err)
		}
	})

	t.Run("LatestClaimWins", func(t *testing.T) {
		d := newDir(t)
		mustClaim(t, d, "host-a", "r1", Metadata{Name: "old"})
		e2 := mustClaim(t, d, "host-a", "r2", Metadata{Name: "new"})
		got, err := d.Lookup(ctx(), "host-a")
		if err != nil {
			t.Fatalf("lookup: %v", err)
		}
		if got.Replica != "r2" || got.Epoch != e2.Epoch || got.Metadata.Name != "new" {
			t.Fatalf("lookup = %+v, want r2 epoch %d name new", got, e2.Epoch)
		}
	})

	t.Run("StaleReleaseIsNoop", func(t *testing.T) {
		d := newDir(t)
		e1 := mustClaim(t, d, "host-a", "r1", Metadata{})
		e2 := mustClaim(t, d, "host-a", "r2", Metadata{Name: "new"})
		ok, err := d.Release(ctx(), "host-a", e1.Epoch)
		if err != nil {
			t.Fatalf("stale release: %v", err)
		}
		if ok {
			t.Fatalf("stale release removed the newer entry")
		}
		got, err := d.Lookup(ctx(), "host-a")
		if err != nil {
			t.Fatalf("lookup after stale release: %v", err)
		}
		if got.Replica != "r2" || got.Epoch != e2.Epoch {
			t.Fatalf("lookup = %+v, want r2 epoch %d", got, e2.Epoch)
		}
		recs, err := d.Records(ctx(), []string{"host-a"})
		if err != nil {
			t.Fatalf("records: %v", err)
		}
		if !recs[0].Online || !recs[0].DisconnectedAt.IsZero() {
			t.Fatalf("record after stale release = %+v, want online and never disconnected", recs[0])
		}
	})

	t.Run("ReleaseUnknownAndTwice", func(t *testing.T) {
		d := newDir(t)
		if ok, err := d.Release(ctx(), "host-never", 1); err != nil || ok {
			t.Fatalf("release unknown: %v, %v; want false, nil", ok, err)
		}
		e := mustClaim(t, d, "host-a", "r1", Metadata{})
		if ok, err := d.Release(ctx(), "host-a", e.Epoch+1); err != nil || ok {
			t.Fatalf("release future epoch: %v, %v; want false, nil", ok, err)
		}
		if ok, err := d.Release(ctx(), "host-a", e.Epoch); err != nil || !ok {
			t.Fatalf("release: %v, %v; want true, nil", ok, err)
		}
		if ok, err := d.Release(ctx(), "host-a", e.Epoch); err != nil || ok {
			t.Fatalf("second release: %v, %v; want false, nil", ok, err)
		}
	})

	t.Run("LookupAfterReleaseNotFound", func(t *testing.T) {
		d := newDir(t)
		e := mustClaim(t, d, "host-a", "r1", Metadata{})
		if _, err := d.Lookup(ctx(), "host-a"); err != nil {
			t.Fatalf("lookup before release: %v", err)
		}
		if ok, err := d.Release(ctx(), "host-a", e.Epoch); err != nil || !ok {
			t.Fatalf("release: %v, %v; want true, nil", ok, err)
		}
		if _, err := d.Lookup(ctx(), "host-a"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("lookup after release: %v, want ErrNotFound", err)
		}
	})

	t.Run("RecordsKeepPresence", func(t *testing.T) {
		d := newDir(t)
		meta := Metadata{Name: "desk", OS: "darwin", AgentVersion: "0.9", Labels: map[string]string{"a": "1", "b": ""}}
		before := time.Now().Round(0)
		e := mustClaim(t, d, "host-a", "r1", meta)
		mid := time.Now().Round(0)
		if e.ConnectedAt.Before(before) || e.ConnectedAt.After(mid) {
			t.Fatalf("connected at %v, want within [%v, %v]", e.ConnectedAt, before, mid)
		}
		recs, err := d.Records(ctx(), []string{"host-a", "host-never"})
		if err != nil {
			t.Fatalf("records: %v", err)
		}
		if len(recs) != 2 {
			t.Fatalf("records returned %d, want 2", len(recs))
		}
		r := recs[0]
		if r.HostID != "host-a" || !r.Online || r.Replica != "r1" || r.Epoch != e.Epoch {
			t.Fatalf("record while online = %+v", r)
		}
		if !r.ConnectedAt.Equal(e.ConnectedAt) || !r.DisconnectedAt.IsZero() {
			t.Fatalf("record times while online: connected %v disconnected %v", r.ConnectedAt, r.DisconnectedAt)
		}
		if !sameMetadata(r.Metadata, meta) {
			t.Fatalf("record metadata %+v, want %+v", r.Metadata, meta)
		}
		if got := recs[1]; got.HostID != "host-never" || got.Online || got.Epoch != 0 ||
			!got.ConnectedAt.IsZero() || !got.DisconnectedAt.IsZero() || got.Replica != "" {
			t.Fatalf("record of unknown host = %+v, want only HostID", got)
		}

		if ok, err := d.Release(ctx(), "host-a", e.Epoch); err != nil || !ok {
			t.Fatalf("release: %v, %v; want true, nil", ok, err)
		}
		after := time.Now().Round(0)
		recs, err = d.Records(ctx(), []string{"host-a"})
		if err != nil {
			t.Fatalf("records after release: %v", err)
		}
		r = recs[0]
		if r.Online || r.Replica != "" || r.Epoch != e.Epoch {
			t.Fatalf("record after release = %+v, want offline, epoch %d", r, e.Epoch)
		}
		if !r.ConnectedAt.Equal(e.ConnectedAt) {
			t.Fatalf("connected at after release %v, want %v", r.ConnectedAt, e.ConnectedAt)
		}
		if r.DisconnectedAt.Before(mid) || r.DisconnectedAt.After(after) {
			t.Fatalf("disconnected at %v, want within [%v, %v]", r.DisconnectedAt, mid, after)
		}
		if !sameMetadata(r.Metadata, meta) {
			t.Fatalf("record metadata after release %+v, want %+v", r.Metadata, meta)
		}
	})

	t.Run("RecordsEmpty", func(t *testing.T) {
		d := newDir(t)
		recs, err := d.Records(ctx(), nil)
		if err != nil {
			t.Fatalf("records: %v", err)
		}
		if len(recs) != 0 {
			t.Fatalf("records of nothing = %v", recs)
		}
	})

	t.Run("MetadataNotAliased", func(t *testing.T) {
		d := newDir(t)
		labels := map[string]string{"k": "v"}
		mustClaim(t, d, "host-a", "r1", Metadata{Labels: labels})
		labels["k"] = "changed"
		got, err := d.Lookup(ctx(), "host-a")
		if err != nil {
			t.Fatalf("lookup: %v", err)
		}
		if got.Metadata.Labels["k"] != "v" {
			t.Fatalf("stored label changed with the caller's map: %q", got.Metadata.Labels["k"])
		}
		got.Metadata.Labels["k"] = "mine"
		again, err := d.Lookup(ctx(), "host-a")
		if err != nil {
			t.Fatalf("lookup: %v", err)
		}
		if again.Metadata.Labels["k"] != "v" {
			t.Fatalf("stored label changed with a returned map: %q", again.Metadata.Labels["k"])
		}
	})

	t.Run("InvalidIDs", func(t *testing.T) {
		d := newDir(t)
		if _, _, err := d.Claim(ctx(), "", "r1", Metadata{}); !errors.Is(err, ErrInvalid) {
			t.Fatalf("claim empty host: %v, want ErrInvalid", err)
		}
		if _, _, err := d.Claim(ctx(), "host-a", "", Metadata{}); !errors.Is(err, ErrInvalid) {
			t.Fatalf("claim empty replica: %v, want ErrInvalid", err)
		}
	})

	t.Run("ConcurrentClaimsOneOwner", func(t *testing.T) {
		d := newDir(t)
		const perReplica = 20
		type result struct {
			e   Entry
			err error
		}
		results := make(chan result, 2*perReplica)
		var wg sync.WaitGroup
		for _, replica := range []string{"r1", "r2"} {
			wg.Go(func() {
				for range perReplica {
					e, _, err := d.Claim(ctx(), "host-a", replica, Metadata{Name: replica})
					results <- result{e, err}
				}
			})
		}
		wg.Wait()
		close(results)
		seen := make(map[uint64]string)
		var newest Entry
		for r := range results {
			if r.err != nil {
				t.Fatalf("claim: %v", r.err)
			}
			if prev, dup := seen[r.e.Epoch]; dup {
				t.Fatalf("epoch %d given to both %s and %s", r.e.Epoch, prev, r.e.Replica)
			}
			seen[r.e.Epoch] = r.e.Replica
			if r.e.Epoch > newest.Epoch {
				newest = r.e
			}
		}
		got, err := d.Lookup(ctx(), "host-a")
		if err != nil {
			t.Fatalf("lookup: %v", err)
		}
		if got.Epoch != newest.Epoch || got.Replica != newest.Replica || got.Metadata.Name != newest.Replica {
			t.Fatalf("owner = %s epoch %d, want the newest claim %s epoch %d",
				got.Replica, got.Epoch, newest.Replica, newest.Epoch)
		}
		// Every older epoch's release is a no-op; only the newest removes the entry.
		for epoch := range seen {
			if epoch == newest.Epoch {
				continue
			}
			if ok, err := d.Release(ctx(), "host-a", epoch); err != nil || ok {
				t.Fatalf("release stale epoch %d: %v, %v; want false, nil", epoch, ok, err)
			}
		}
		if ok, err := d.Release(ctx(), "host-a", newest.Epoch); err != nil || !ok {
			t.Fatalf("release newest: %v, %v; want true, nil", ok, err)
		}
	})

	t.Run("ManyHosts", func(t *testing.T) {
		d := newDir(t)
		ids := make([]string, 50)
		for i := range ids {
			ids[i] = fmt.Sprintf("org-%d:machine-%d", i%7, i)
			mustClaim(t, d, ids[i], fmt.Sprintf("r%d", i%3), Metadata{Name: ids[i]})
		}
		recs, err := d.Records(ctx(), ids)
		if err != nil {
			t.Fatalf("records: %v", err)
		}
		for i, r := range recs {
			if r.HostID != ids[i] || !r.Online || r.Metadata.Name != ids[i] || r.Replica != fmt.Sprintf("r%d", i%3) {
				t.Fatalf("record %d = %+v", i, r)
			}
		}
	})

	t.Run("CanceledContext", func(t *testing.T) {
		d := newDir(t)
		cctx, cancel := context.WithCancel(ctx())
		cancel()
		if _, _, err := d.Claim(cctx, "host-a", "r1", Metadata{}); !errors.Is(err, context.Canceled) {
			t.Fatalf("claim with canceled context: %v, want context.Canceled", err)
		}
	})

	t.Run("ClaimReportsReplaced", func(t *testing.T) {
		d := newDir(t)
		e1, p, err := d.Claim(ctx(), "host-r", "r0", Metadata{Name: "a"})
		if err != nil || p.Replica != "" {
			t.Fatalf("first claim: prior %+v, %v; want no owner", p, err)
		}
		e2, p, err := d.Claim(ctx(), "host-r", "r1", Metadata{})
		if err != nil {
			t.Fatalf("second claim: %v", err)
		}
		if p.Replica != "r0" || p.Epoch != e1.Epoch || e2.Epoch <= e1.Epoch {
			t.Fatalf("second claim: %+v after %+v; want r0 epoch %d replaced by a newer epoch", e2, p, e1.Epoch)
		}
		if ok, err := d.Release(ctx(), "host-r", e2.Epoch); !ok || err != nil {
			t.Fatalf("release: %v, %v", ok, err)
		}
		e3, p, err := d.Claim(ctx(), "host-r", "r1", Metadata{})
		if err != nil || p.Replica != "" || e3.Epoch <= e2.Epoch {
			t.Fatalf("claim after release: %+v after %+v, %v; want no owner replaced", e3, p, err)
		}
	})

	t.Run("ReassertEachRules", func(t *testing.T) {
		d := newDir(t)
		released := mustClaim(t, d, "host-released", "r1", Metadata{})
		if ok, err := d.Release(ctx(), "host-released", released.Epoch); err != nil || !ok {
			t.Fatalf("release: %v, %v", ok, err)
		}
		stale := mustClaim(t, d, "host-stale", "r1", Metadata{})
		newer := mustClaim(t, d, "host-stale", "r1", Metadata{Name: "newer"})
		current := mustClaim(t, d, "host-current", "r1", Metadata{})
		missing := Entry{HostID: "host-missing", Replica: "r1", Epoch: 42, ConnectedAt: time.Now(),
			Metadata: Metadata{Name: "m"}}

		written, err := d.ReassertEach(ctx(), []Entry{released, stale, current, missing})
		if err != nil {
			t.Fatalf("reassert: %v", err)
		}
		if want := []bool{false, false, true, true}; fmt.Sprint(written) != fmt.Sprint(want) {
			t.Fatalf("reassert wrote %v, want %v (current and missing)", written, want)
		}
		tests := []struct {
			host      string
			wantEpoch uint64 // 0: not found
		}{
			{"host-released", 0},
			{"host-stale", newer.Epoch},
			{"host-current", current.Epoch},
			{"host-missing", 42},
		}
		for _, tt := range tests {
			got, err := d.Lookup(ctx(), tt.host)
			if tt.wantEpoch == 0 {
				if !errors.Is(err, ErrNotFound) {
					t.Fatalf("lookup %s: %v, want ErrNotFound", tt.host, err)
				}
				continue
			}
			if err != nil || got.Epoch != tt.wantEpoch {
				t.Fatalf("lookup %s = %+v, %v; want epoch %d", tt.host, got, err, tt.wantEpoch)
			}
		}
		if got, err := d.Lookup(ctx(), "host-missing"); err != nil || got.Metadata.Name != "m" {
			t.Fatalf("lookup of the reasserted entry = %+v, %v; want its metadata", got, err)
		}
		if e := mustClaim(t, d, "host-missing", "r1", Metadata{}); e.Epoch <= 42 {
			t.Fatalf("claim after reassert: epoch %d, want above the reasserted 42", e.Epoch)
		}
		if _, err := d.ReassertEach(ctx(), []Entry{{HostID: "", Replica: "r1"}}); !errors.Is(err, ErrInvalid) {
			t.Fatalf("reassert of an empty host id: %v, want ErrInvalid", err)
		}
	})

	t.Run("NoDeadReplicasToReap", func(t *testing.T) {
		d := newDir(t)
		mustClaim(t, d, "host-a", "r1", Metadata{})
		if got, err := d.Reap(ctx()); err != nil || len(got) != 0 {
			t.Fatalf("reap = %v, %v; want nothing: no replica died", got, err)
		}
	})

	t.Run("RunEndsWithContext", func(t *testing.T) {
		d := newDir(t)
		rctx, cancel := context.WithCancel(ctx())
		cancel()
		if err := d.Run(rctx); err != nil {
			t.Fatalf("run with an ended context = %v, want nil", err)
		}
	})

	t.Run("CloseIdempotent", func(t *testing.T) {
		d := newDir(t)
		if err := d.Close(); err != nil {
			t.Fatalf("close: %v", err)
		}
		if err := d.Close(); err != nil {
			t.Fatalf("second close: %v", err)
		}
		if _, err := d.Lookup(ctx(), "host-a"); !errors.Is(err, ErrClosed) {
			t.Fatalf("lookup after close: %v, want ErrClosed", err)
		}
	})
}

// mustClaim claims hostID for replica or fails the test.
func mustClaim(t *testing.T, d Directory, hostID, replica string, meta Metadata) Entry {
	t.Helper()
	e, _, err := d.Claim(t.Context(), hostID, replica, meta)
	if err != nil {
		t.Fatalf("claim %s for %s: %v", hostID, replica, err)
	}
	return e
}

// sameMetadata compares metadata, treating a nil and an empty Labels map as equal.
func sameMetadata(a, b Metadata) bool {
	if a.Name != b.Name || a.OS != b.OS || a.AgentVersion != b.AgentVersion || len(a.Labels) != len(b.Labels) {
		return false
	}
	for k, v := range a.Labels {
		if w, ok := b.Labels[k]; !ok || w != v {
			return false
		}
	}
	return true
}
