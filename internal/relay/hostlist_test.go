package relay_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/switchboard-relay/switchboard/agent"
	"github.com/switchboard-relay/switchboard/internal/redistest"
	"github.com/switchboard-relay/switchboard/internal/relaytest"
)

type hostPage struct {
	Hosts      []hostJSON `json:"hosts"`
	NextCursor string     `json:"next_cursor"`
}

// listAll pages through GET base/v1/hosts?query with limit, and returns the ids in order and the number of pages.
func listAll(t *testing.T, base, query, tok string, limit int) ([]string, int) {
	t.Helper()
	var ids []string
	cursor := ""
	for pages := 1; ; pages++ {
		u := fmt.Sprintf("%s/v1/hosts?%s&limit=%d", base, query, limit)
		if cursor != "" {
			u += "&cursor=" + url.QueryEscape(cursor)
		}
		code, body := getText(t, u, tok)
		if code != 200 {
			t.Fatalf("GET %s: %d %s", u, code, body)
		}
		var p hostPage
		if err := json.Unmarshal([]byte(body), &p); err != nil {
			t.Fatalf("%s: %v", body, err)
		}
		if len(p.Hosts) > limit {
			t.Fatalf("page of %d hosts, limit %d", len(p.Hosts), limit)
		}
		for _, h := range p.Hosts {
			ids = append(ids, h.ID)
		}
		if p.NextCursor == "" {
			return ids, pages
		}
		if pages > 100 {
			t.Fatal("listing does not end")
		}
		cursor = p.NextCursor
	}
}

// TestListHosts: listing with filters and paging, limited to what the token may reach.
func TestListHosts(t *testing.T) {
	r := relaytest.StartRelay(t, nil)
	for i := range 7 {
		team := "red"
		if i%2 == 1 {
			team = "blue"
		}
		relaytest.StartHost(t, r.URL, fmt.Sprintf("org:h%d", i), textHandler("x"), func(c *agent.Config) {
			c.Labels = map[string]string{"team": team}
		})
	}
	relaytest.StartHost(t, r.URL, "other:z", textHandler("x"), nil)
	gone := relaytest.StartHost(t, r.URL, "org:gone", textHandler("x"), nil)
	_ = gone.Close()
	all := relaytest.ClientToken(t, "c", "*")
	relaytest.Eventually(t, 10*time.Second, "org:gone offline", func() bool {
		_, h := getHost(t, r, "org:gone", all)
		return !h.Online
	})

	for _, tc := range []struct {
		query, tok string
		want       string
	}{
		{"", all, "org:gone org:h0 org:h1 org:h2 org:h3 org:h4 org:h5 org:h6 other:z"},
		{"online=true&prefix=org:", all, "org:h0 org:h1 org:h2 org:h3 org:h4 org:h5 org:h6"},
		{"online=false", all, "org:gone"},
		{"label=team=blue", all, "org:h1 org:h3 org:h5"},
		{"label=team=blue&label=team=red", all, ""},
		{"prefix=other", all, "other:z"},
		{"", relaytest.ClientToken(t, "c", "org:h1", "other:*"), "org:h1 other:z"},
	} {
		for _, limit := range []int{1, 2, 100} {
			ids, pages := listAll(t, r.URL, tc.query, tc.tok, limit)
			if got := strings.Join(ids, " "); got != tc.want {
				t.Fatalf("list %q limit %d = %q, want %q", tc.query, limit, got, tc.want)
			}
			if limit == 100 && pages != 1 {
				t.Fatalf("list %q limit 100 took %d pages", tc.query, pages)
			}
		}
	}
	for _, q := range []string{"online=yes", "label=nokey", "limit=0", "limit=100000", "cursor=%21%21"} {
		if code, _ := getText(t, r.URL+"/v1/hosts?"+q, all); code != 400 {
			t.Errorf("list %q: %d, want 400", q, code)
		}
	}
}

// TestListHostsCluster: any replica lists every host of the cluster, and answers for hosts held elsewhere.
func TestListHostsCluster(t *testing.T) {
	addr, _ := redistest.Start(t)
	prefix := fmt.Sprintf("ls%d:", clusterSeq.Add(1))
	a := relaytest.StartRedisReplica(t, []string{addr}, prefix, "A", nil)
	b := relaytest.StartRedisReplica(t, []string{addr}, prefix, "B", nil)
	relaytest.StartHost(t, a.URL, "h1", textHandler("x"), nil)
	relaytest.StartHost(t, b.URL, "h2", textHandler("x"), nil)
	tok := relaytest.ClientToken(t, "c", "*")
	relaytest.Eventually(t, 10*time.Second, "both hosts online", func() bool {
		recs, err := a.Directory.Records(context.Background(), []string{"h1", "h2"})
		return err == nil && recs[0].Online && recs[1].Online
	})
	for _, rep := range []*relaytest.Replica{a, b} {
		if ids, _ := listAll(t, rep.URL, "online=true", tok, 1); strings.Join(ids, " ") != "h1 h2" {
			t.Fatalf("list via %s = %v, want h1 h2", rep.ID, ids)
		}
		code, body := getText(t, rep.URL+"/v1/hosts?ids=h1,h2", tok)
		if code != 200 || strings.Count(body, `"online":true`) != 2 {
			t.Fatalf("batch via %s: %d %s", rep.ID, code, body)
		}
	}
}
