package relay_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/switchboard-relay/switchboard/internal/directory"
	"github.com/switchboard-relay/switchboard/internal/relay"
	"github.com/switchboard-relay/switchboard/internal/relaytest"
)

// TestListCursorRevealsNothing: paging GET /v1/hosts with a narrow token over a directory full of another tenant's
// hosts. Every cursor is opaque (it decodes to no host id, in or out of scope), the pages hold exactly the
// caller's hosts, a forged or tampered cursor is 400 invalid_cursor, and a query prefix outside the scope answers
// the same bytes whether the other tenant has hosts there or not. Other clients are served meanwhile.
func TestListCursorRevealsNothing(t *testing.T) {
	dir := directory.NewMemory()
	r := relaytest.StartRelay(t, func(c *relay.Config) { c.Directory = dir })
	relaytest.StartHost(t, r.URL, "a:1", textHandler("a1"), nil)
	relaytest.StartHost(t, r.URL, "a:2", textHandler("a2"), nil)
	// Forty hosts of another tenant, after tenant a's in id order: the old listing scanned them and handed their
	// ids out as cursors.
	for i := range 40 {
		id := fmt.Sprintf("b:%02d", i)
		if i%2 == 0 {
			id = fmt.Sprintf("a:z%02d", i) // after a:2, outside both narrow tokens
		}
		if _, _, err := dir.Claim(context.Background(), id, "elsewhere", directory.Metadata{}); err != nil {
			t.Fatal(err)
		}
	}
	narrow := relaytest.ClientToken(t, "c", "a:1", "a:2")
	prefixTok := relaytest.ClientToken(t, "c", "a:1*", "a:2")
	all := relaytest.ClientToken(t, "c", "*")

	var cursors []string
	for _, tc := range []struct {
		tok  string
		want string
	}{
		{narrow, "a:1 a:2"},
		{prefixTok, "a:1 a:2"},
	} {
		for _, limit := range []int{1, 2, 3} {
			cursor, got := "", []string{}
			for pages := 0; ; pages++ {
				if pages > 10 {
					t.Fatal("listing does not end")
				}
				u := fmt.Sprintf("%s/v1/hosts?limit=%d", r.URL, limit)
				if cursor != "" {
					u += "&cursor=" + url.QueryEscape(cursor)
				}
				code, body := getText(t, u, tc.tok)
				if code != 200 {
					t.Fatalf("GET %s: %d %s", u, code, body)
				}
				if strings.Contains(body, "b:") || strings.Contains(body, "a:z") {
					t.Fatalf("page leaks another tenant's id: %s", body)
				}
				var p hostPage
				if err := json.Unmarshal([]byte(body), &p); err != nil {
					t.Fatal(err)
				}
				for _, h := range p.Hosts {
					got = append(got, h.ID)
				}
				if p.NextCursor == "" {
					break
				}
				cursors = append(cursors, p.NextCursor)
				cursor = p.NextCursor
			}
			if strings.Join(got, " ") != tc.want {
				t.Fatalf("limit %d: listed %q, want %q", limit, got, tc.want)
			}
		}
	}
	if len(cursors) == 0 {
		t.Fatal("no listing was paged")
	}
	for _, c := range cursors {
		b, _ := base64.RawURLEncoding.DecodeString(c)
		for _, s := range []string{c, string(b)} {
			if strings.Contains(s, "a:") || strings.Contains(s, "b:") {
				t.Fatalf("cursor %q reads as a host id", c)
			}
		}
	}

	// Cursors the relay did not issue.
	real := cursors[0]
	tampered := []byte(real)
	tampered[len(tampered)/2] ^= 0x01
	if tampered[len(tampered)/2] == '_' || tampered[len(tampered)/2] == '-' {
		tampered[len(tampered)/2] = 'A'
	}
	for name, c := range map[string]string{
		"base64 of another tenant's id": base64.RawURLEncoding.EncodeToString([]byte("b:05")),
		"base64 of the caller's id":     base64.RawURLEncoding.EncodeToString([]byte("a:1")),
		"tampered":                      string(tampered),
		"truncated":                     real[:len(real)-4],
		"not base64":                    "!!",
		"very long":                     strings.Repeat("A", 4096),
	} {
		if code, errCode := apiError(t, r.URL+"/v1/hosts?cursor="+url.QueryEscape(c), narrow); code != 400 || errCode != "invalid_cursor" {
			t.Errorf("%s: %d %q, want 400 invalid_cursor", name, code, errCode)
		}
	}

	if n := metricValue(t, r, "switchboard_positions_refused_total", "kind", "cursor"); n != 6 {
		t.Errorf("switchboard_positions_refused_total{kind=cursor} = %v, want 6", n)
	}

	// Probing other tenants' id space with prefix= tells nothing: the same bytes for a prefix full of b's hosts,
	// a prefix of nothing at all, at every limit.
	for _, limit := range []int{1, 5} {
		_, want := getText(t, fmt.Sprintf("%s/v1/hosts?prefix=zzz&limit=%d", r.URL, limit), narrow)
		for _, prefix := range []string{"b:", "b:0", "a:z", "a:z0"} {
			if _, got := getText(t, fmt.Sprintf("%s/v1/hosts?prefix=%s&limit=%d", r.URL, prefix, limit), narrow); got != want {
				t.Fatalf("prefix %q: %s, want the answer to an empty prefix %s", prefix, got, want)
			}
		}
	}

	// The wide token still pages through everything, and a host of tenant a keeps answering meanwhile.
	if ids, _ := listAll(t, r.URL, "", all, 7); len(ids) != 42 {
		t.Fatalf("the wide token listed %d hosts, want 42", len(ids))
	}
	relaytest.Eventually(t, 10*time.Second, "a:1 answers", func() bool {
		code, body := getText(t, r.URL+"/hosts/a:1/", narrow)
		return code == 200 && body == "a1"
	})
}
