package relay_test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/switchboard-relay/switchboard/agent"
	"github.com/switchboard-relay/switchboard/internal/relaytest"
)

// TestHostMetadataIsVisibleText: a host's name and labels reach clients as visible text only — a bidi override,
// zero-width and control characters are dropped and spaces folded — so a host cannot make its name print like
// another's or reorder what surrounds it in a dashboard.
func TestHostMetadataIsVisibleText(t *testing.T) {
	r := relaytest.StartRelay(t, nil)
	relaytest.StartHost(t, r.URL, "org:evil", echoPath, func(c *agent.Config) {
		c.Name = "laptop\u202e\u200b  of\tbob\x7f"
		c.Labels = map[string]string{"te\u200bam": "ops\u2066x", "\u200b": "dropped"}
	})
	tok := relaytest.ClientToken(t, "c", "org:evil")
	var view struct {
		Metadata struct {
			Name   string            `json:"name"`
			Labels map[string]string `json:"labels"`
		} `json:"metadata"`
	}
	relaytest.Eventually(t, 10*time.Second, "host online", func() bool {
		code, body := getText(t, r.URL+"/v1/hosts/org:evil", tok)
		return code == 200 && json.Unmarshal([]byte(body), &view) == nil && view.Metadata.Name != ""
	})
	got := view.Metadata
	if got.Name != "laptop of bob" {
		t.Fatalf("name %q, want %q", got.Name, "laptop of bob")
	}
	if len(got.Labels) != 1 || got.Labels["team"] != "opsx" {
		t.Fatalf("labels %q, want team=opsx only", got.Labels)
	}
}

// TestHostTokenIsNoClientCredential: a host token opens no client API — the listing, a host's presence, the event
// stream — and gets 401 saying so, instead of an empty view.
func TestHostTokenIsNoClientCredential(t *testing.T) {
	r := relaytest.StartRelay(t, nil)
	relaytest.StartHost(t, r.URL, "org:a", echoPath, nil)
	tok := relaytest.HostToken(t, "org:a")
	for _, path := range []string{"/v1/hosts", "/v1/hosts/org:a", "/v1/hosts?ids=org:a", "/v1/presence/events"} {
		if code, body := getText(t, r.URL+path, tok); code != 401 || !strings.Contains(body, "client token") {
			t.Errorf("GET %s with a host token: %d %s", path, code, body)
		}
	}
}
