package hostsapi

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
		if _, _, err := dir.Claim(context.Background(), id, "r", directory.Metadata{}); err != nil {
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

// countingLister counts ListHosts calls.
type countingLister struct {
	Lister
	calls int
}

func (c *countingLister) ListHosts(ctx context.Context, prefix, after string, limit int) ([]string, error) {
	c.calls++
	return c.Lister.ListHosts(ctx, prefix, after, limit)
}

// TestListScopeNextManyPrefixes: a token with many prefix patterns, most of them empty, costs about one directory
// read per prefix over a whole listing, not one per prefix per page.
func TestListScopeNextManyPrefixes(t *testing.T) {
	dir := directory.NewMemory()
	defer dir.Close()
	var hosts, want []string
	for i := range 100 {
		hosts = append(hosts, fmt.Sprintf("t%02d:*", i))
		if i%10 == 3 {
			for j := range 3 {
				id := fmt.Sprintf("t%02d:h%d", i, j)
				want = append(want, id)
				if _, _, err := dir.Claim(context.Background(), id, "r", directory.Metadata{}); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	if _, _, err := dir.Claim(context.Background(), "u:1", "r", directory.Metadata{}); err != nil {
		t.Fatal(err)
	}
	ls := listScopeOf(auth.Claims{Kind: auth.KindClient, Hosts: hosts}, "")
	lister := &countingLister{Lister: dir}
	var got []string
	after, pages := "", 0
	for more := true; more; pages++ {
		ids, m, err := ls.next(context.Background(), lister, after, 2)
		if err != nil {
			t.Fatal(err)
		}
		got, more = append(got, ids...), m
		if len(ids) > 0 {
			after = ids[len(ids)-1]
		}
	}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("walked %q, want %q", got, want)
	}
	if max := len(hosts) + 2*pages; lister.calls > max {
		t.Fatalf("%d directory reads for %d prefixes in %d pages, more than %d", lister.calls, len(hosts), pages, max)
	}
}
