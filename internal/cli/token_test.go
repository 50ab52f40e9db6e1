package cli_test

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/switchboard-relay/switchboard/internal/auth"
)

// TestTokenWithoutSecret: minting without a secret exits 2 and says which variable to set.
func TestTokenWithoutSecret(t *testing.T) {
	for _, args := range [][]string{
		{"token", "host", "--id", "h1"},
		{"token", "client", "--hosts", "a,b*"},
	} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			r := run(t, nil, args...)
			if r.code != 2 || r.stdout != "" || !strings.Contains(r.stderr, "no signing secret: set SWITCHBOARD_SECRET") {
				t.Fatalf("exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
			}
		})
	}
}

// TestTokenClient: the printed client token verifies with the secret and carries the subject, hosts and lifetime
// asked for.
func TestTokenClient(t *testing.T) {
	tok := mint(t, "client", "--hosts", "a, b*,", "--sub", "bob", "--ttl", "10m")
	c, err := auth.NewHS256([]byte(secret)).Verify(t.Context(), tok)
	if err != nil {
		t.Fatal(err)
	}
	if c.Kind != auth.KindClient || c.Subject != "bob" || !slices.Equal(c.Hosts, []string{"a", "b*"}) {
		t.Fatalf("claims %+v", c)
	}
	if left := time.Until(c.ExpiresAt); left < 9*time.Minute || left > 11*time.Minute {
		t.Fatalf("expires in %v, want 10m", left)
	}
	for id, want := range map[string]bool{"a": true, "b": true, "b7": true, "ab": false, "c": false} {
		if got := c.MayReach(id); got != want {
			t.Fatalf("MayReach(%q) = %v, want %v", id, got, want)
		}
	}
	if _, err := auth.NewHS256([]byte("another secret")).Verify(t.Context(), tok); err == nil {
		t.Fatal("a token verified with another secret")
	}
}

// TestTokenHost: the printed host token registers exactly its id and expires after the default day.
func TestTokenHost(t *testing.T) {
	c, err := auth.NewHS256([]byte(secret)).Verify(t.Context(), mint(t, "host", "--id", "org:machine"))
	if err != nil {
		t.Fatal(err)
	}
	if c.Kind != auth.KindHost || !c.MayRegister("org:machine") || c.MayRegister("org:other") || c.MayReach("org:machine") {
		t.Fatalf("claims %+v", c)
	}
	if left := time.Until(c.ExpiresAt); left < 23*time.Hour || left > 25*time.Hour {
		t.Fatalf("expires in %v, want 24h", left)
	}
}

// TestTokenRefusesInvisibleIDs: `switchboard token` refuses host ids and --hosts entries the relay would refuse
// (invisible, bidi, space or control characters), exiting 2 without printing a token.
func TestTokenRefusesInvisibleIDs(t *testing.T) {
	env := []string{"SWITCHBOARD_SECRET=" + secret}
	for _, args := range [][]string{
		{"token", "host", "--id", "org:\u200bmachine"},
		{"token", "host", "--id", "org:\u202eenihcam"},
		{"token", "host", "--id", "org:\u00a0m"},
		{"token", "client", "--hosts", "a,org:\u2066x"},
		{"token", "client", "--hosts", "org\ufeff*"},
		{"token", "client", "--hosts", "a/b"},
	} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			r := run(t, env, args...)
			if r.code != 2 || r.stdout != "" || !strings.Contains(r.stderr, "invalid host id") {
				t.Fatalf("exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
			}
		})
	}
	for _, args := range [][]string{
		{"token", "host", "--id", "東京:ノード"},
		{"token", "client", "--hosts", "*"},
		{"token", "client", "--hosts", "org:*,東京:ノード"},
	} {
		if r := run(t, env, args...); r.code != 0 || r.stdout == "" {
			t.Fatalf("%q: exit %d, stderr %q", args, r.code, r.stderr)
		}
	}
}
