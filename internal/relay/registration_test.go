package relay_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/switchboard-relay/switchboard/agent"
	"github.com/switchboard-relay/switchboard/internal/directory"
	"github.com/switchboard-relay/switchboard/internal/presence"
	"github.com/switchboard-relay/switchboard/internal/redistest"
	"github.com/switchboard-relay/switchboard/internal/relay"
	"github.com/switchboard-relay/switchboard/internal/relaytest"
	"github.com/switchboard-relay/switchboard/internal/tunnel"
)

// TestFailedRegistrationLeavesLiveHostAlone: a second registration of a live host that never becomes a tunnel
// (the upgrade succeeds, then no control stream comes) changes nothing for the live host, on a memory and on a
// Redis directory, whichever replica the failed attempt reached: the host keeps answering through both replicas,
// its directory entry and metadata are unchanged, and no presence event is emitted for it.
func TestFailedRegistrationLeavesLiveHostAlone(t *testing.T) {
	pairs := map[string]func(t *testing.T, mutate func(*relay.Config)) (a, b *relaytest.Replica){
		"memory": func(t *testing.T, mutate func(*relay.Config)) (a, b *relaytest.Replica) {
			dir := directory.NewMemory()
			t.Cleanup(func() { _ = dir.Close() })
			return relaytest.StartRelayOn(t, dir, mutate), relaytest.StartRelayOn(t, dir, mutate)
		},
		"redis": func(t *testing.T, mutate func(*relay.Config)) (a, b *relaytest.Replica) {
			addr, _ := redistest.Start(t)
			prefix := fmt.Sprintf("c%d:", clusterSeq.Add(1))
			return relaytest.StartRedisReplica(t, []string{addr}, prefix, "A", mutate),
				relaytest.StartRedisReplica(t, []string{addr}, prefix, "B", mutate)
		},
	}
	for name, startPair := range pairs {
		t.Run(name, func(t *testing.T) {
			events := presence.NewMemory(presence.MemoryConfig{})
			a, b := startPair(t, func(c *relay.Config) {
				c.Events = events
				c.FlapWindow = -1 // an offline would be announced at once
			})
			relaytest.StartHost(t, a.URL, "h", text("live"), func(c *agent.Config) { c.Name = "live" })
			tok := relaytest.ClientToken(t, "c", "*")
			for _, r := range []*relaytest.Replica{a, b} {
				relaytest.Eventually(t, 20*time.Second, "the host to answer through "+r.ID, func() bool {
					code, body := getText(t, r.URL+"/hosts/h/", tok)
					return code == 200 && body == "live"
				})
			}
			before, err := a.Directory.Lookup(context.Background(), "h")
			if err != nil {
				t.Fatal(err)
			}
			stream := subscribe(t, a.URL, tok, "")

			// The failed registrations: one on the replica that holds the host, one on the other.
			for _, r := range []*relaytest.Replica{a, b} {
				failedBefore := registrationCount(t, r.Relay, "failed")
				if code := upgradeWithName(t, r.URL, "h", "impostor"); code != http.StatusSwitchingProtocols {
					t.Fatalf("impostor's upgrade on %s: %d, want 101", r.ID, code)
				}
				relaytest.Eventually(t, 20*time.Second, "the failed setup on "+r.ID, func() bool {
					return registrationCount(t, r.Relay, "failed") == failedBefore+1
				})
			}

			for _, r := range []*relaytest.Replica{a, b} {
				for range 5 {
					if code, body := getText(t, r.URL+"/hosts/h/", tok); code != 200 || body != "live" {
						t.Fatalf("through %s after the failed registrations: %d %q", r.ID, code, body)
					}
				}
			}
			after, err := b.Directory.Lookup(context.Background(), "h")
			if err != nil || after.Epoch != before.Epoch || after.Replica != before.Replica || after.Metadata.Name != "live" {
				t.Fatalf("directory entry %+v (%v), want the live one %+v", after, err, before)
			}
			code, body := getText(t, b.URL+"/v1/hosts/h", tok)
			var rec struct {
				Online   bool `json:"online"`
				Metadata struct {
					Name string `json:"name"`
				} `json:"metadata"`
			}
			if err := json.Unmarshal([]byte(body), &rec); code != 200 || err != nil || !rec.Online || rec.Metadata.Name != "live" {
				t.Fatalf("presence API: %d %s", code, body)
			}
			// Events are ordered: the next one must be the marker's, with nothing about h before it.
			relaytest.StartHost(t, b.URL, "marker", text("marker"), nil)
			stream.expect(t, 20*time.Second, "online marker")
		})
	}
}

// upgradeWithName completes a raw tunnel upgrade for id with a valid host token and metadata name, then closes
// the connection without opening the control stream. It returns the upgrade's status.
func upgradeWithName(t *testing.T, relayURL, id, name string) int {
	t.Helper()
	return rawUpgrade(t, relayURL, "127.0.0.1", fmt.Sprintf("%s: %s\r\n%s: %s\r\nAuthorization: Bearer %s\r\n",
		tunnel.HeaderHostID, id, tunnel.HeaderHostName, name, relaytest.HostToken(t, id)))
}
