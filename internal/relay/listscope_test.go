package relay

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/switchboard-relay/switchboard/internal/auth"
	"github.com/switchboard-relay/switchboard/internal/directory"
)

func TestListScopeOf(t *testing.T) {
	client := func(hosts ...string) auth.Claims { return auth.Claims{Kind: auth.KindClient, Hosts: hosts} }
	for _, tc := range []struct {
		claims auth.Claims
		q      string
		want   string // prefixes | exact
	}{
		{auth.Claims{Unrestricted: true}, "x", `["x"] | []`},
		{client("*"), "", `[""] | []`},
		{client("*"), "a:", `["a:"] | []`},
		{client("a:*"), "", `["a:"] | []`},
		{client("a:*"), "a:o", `["a:o"] | []`},
		{client("a:*"), "b:", `[] | []`},
		{client("a:*"), "a", `["a:"] | []`},
		{client("a:*", "a:1*", "a:1", "b:2", "b:2", "c"), "", `["a:"] | ["b:2" "c"]`},
		{client("a:1", "a:2", "ab:1"), "a:", `[] | ["a:1" "a:2"]`},
		{client("a:*", "b*"), "", `["a:" "b"] | []`},
		{client("a/b", "a\u200b"), "", `[] | []`}, // ids no host can have
		{auth.Claims{Kind: auth.KindHost, HostID: "a:1", Hosts: []string{"*"}}, "", `[] | []`},
	} {
		ls := listScopeOf(tc.claims, tc.q)
		if got := fmt.Sprintf("%q | %q", ls.prefixes, ls.exact); got != tc.want {
			t.Errorf("listScopeOf(%v, %q) = %s, want %s", tc.claims.Hosts, tc.q, got, tc.want)
		}
	}
}

// TestListScopeNext: next merges the scope's sources into one ordered walk that yields every id of the scope once,
// and no other, whatever the page size.
func TestListScopeNext(t *testing.T) {
	dir := directory.NewMemory()
	defer dir.Close()
	for _, id := range strings.Fields("a:1 a:2 a:3 ab:1 b:1 b:2 c:1 c:2 d:1") {
		if _, err := dir.Claim(context.Background(), id, "r", directory.Metadata{}); err != nil {
			t.Fatal(err)
		}
	}
	ls := listScopeOf(auth.Claims{Kind: auth.KindClient, Hosts: []string{"a:*", "c:2", "b:1", "c:9", "z*"}}, "")
	for n := 1; n <= 8; n++ {
		var got []string
		after := ""
		for range 20 {
			ids, more, err := ls.next(context.Background(), dir, after, n)
			if err != nil {
				t.Fatal(err)
			}
			if len(ids) > n {
				t.Fatalf("n=%d: %d ids", n, len(ids))
			}
			got = append(got, ids...)
			if !more {
				break
			}
			after = ids[len(ids)-1]
		}
		if want := "a:1 a:2 a:3 b:1 c:2 c:9"; strings.Join(got, " ") != want {
			t.Fatalf("n=%d: walked %q, want %q", n, got, want)
		}
	}
}
