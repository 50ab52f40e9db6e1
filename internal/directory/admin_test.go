package directory

import (
	"errors"
	"strings"
	"testing"
	"time"
)

// runAdminContract checks bans and revocations; runContract runs it for Memory and Redis alike.
func runAdminContract(t *testing.T, newDir func(t *testing.T) Directory) {
	t.Run("Bans", func(t *testing.T) {
		a := newDir(t)
		ctx := t.Context()
		if u, err := a.BannedUntil(ctx, "h"); err != nil || !u.IsZero() {
			t.Fatalf("unbanned host: %v, %v", u, err)
		}
		until := time.Now().Add(time.Hour).Truncate(time.Millisecond)
		if err := a.Ban(ctx, "h", until); err != nil {
			t.Fatal(err)
		}
		if u, err := a.BannedUntil(ctx, "h"); err != nil || !u.Equal(until) {
			t.Fatalf("banned until %v, %v; want %v", u, err, until)
		}
		if u, _ := a.BannedUntil(ctx, "other"); !u.IsZero() {
			t.Fatalf("another host banned until %v", u)
		}
		if err := a.Ban(ctx, "h", time.Now().Add(-time.Second)); err != nil {
			t.Fatal(err)
		}
		// The cache of another process may lag an invalidation; this process reads its own write.
		waitFor(t, func() bool { u, err := a.BannedUntil(ctx, "h"); return err == nil && u.IsZero() })
		if err := a.Ban(ctx, "", until); !errors.Is(err, ErrInvalid) {
			t.Fatalf("ban of an empty id: %v, want ErrInvalid", err)
		}
	})
	t.Run("BanExpires", func(t *testing.T) {
		a := newDir(t)
		ctx := t.Context()
		if err := a.Ban(ctx, "h", time.Now().Add(50*time.Millisecond)); err != nil {
			t.Fatal(err)
		}
		waitFor(t, func() bool { u, err := a.BannedUntil(ctx, "h"); return err == nil && u.IsZero() })
	})
	t.Run("Revocations", func(t *testing.T) {
		a := newDir(t)
		ctx := t.Context()
		later := time.Now().Add(time.Hour).Truncate(time.Millisecond)
		for _, rv := range []Revocation{
			{TokenID: "j1", Until: later.Add(-time.Minute)},
			{TokenID: "j1", Until: later},                       // the later end wins
			{TokenID: "j1", Until: later.Add(-2 * time.Minute)}, // an earlier one changes nothing
			{Subject: "alice", Until: later},
			{Subject: "gone", Until: time.Now().Add(-time.Second)}, // already over: not stored
		} {
			if err := a.Revoke(ctx, rv); err != nil {
				t.Fatalf("revoke %+v: %v", rv, err)
			}
		}
		got, err := a.Revocations(ctx)
		if err != nil {
			t.Fatal(err)
		}
		want := map[string]time.Time{"jti:j1": later, "sub:alice": later}
		if len(got) != len(want) {
			t.Fatalf("revocations %+v, want %v", got, want)
		}
		for _, rv := range got {
			k, _ := rv.member()
			if !want[k].Equal(rv.Until) {
				t.Fatalf("revocation %+v, want until %v", rv, want[k])
			}
		}
		for _, bad := range []Revocation{{Until: later}, {TokenID: "a", Subject: "b", Until: later},
			{TokenID: strings.Repeat("x", maxRevocationValue+1), Until: later}} {
			if err := a.Revoke(ctx, bad); !errors.Is(err, ErrInvalid) {
				t.Fatalf("revoke %+v: %v, want ErrInvalid", bad, err)
			}
		}
	})
	t.Run("RevocationExpires", func(t *testing.T) {
		a := newDir(t)
		ctx := t.Context()
		if err := a.Revoke(ctx, Revocation{Subject: "s", Until: time.Now().Add(50 * time.Millisecond)}); err != nil {
			t.Fatal(err)
		}
		waitFor(t, func() bool { got, err := a.Revocations(ctx); return err == nil && len(got) == 0 })
	})
}

// waitFor polls cond until it holds (no upper bound: the test's deadline is the bound).
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for !cond() {
		if t.Context().Err() != nil {
			t.Fatal("condition never held")
		}
		time.Sleep(10 * time.Millisecond)
	}
}
