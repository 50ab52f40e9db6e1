package relay_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/switchboard-relay/switchboard/agent"
	"github.com/switchboard-relay/switchboard/internal/relay"
	"github.com/switchboard-relay/switchboard/internal/relaytest"
)

type hostJSON struct {
	ID             string     `json:"id"`
	Online         bool       `json:"online"`
	ConnectedAt    *time.Time `json:"connected_at"`
	DisconnectedAt *time.Time `json:"disconnected_at"`
	Metadata       struct {
		Name         string            `json:"name"`
		OS           string            `json:"os"`
		AgentVersion string            `json:"agent_version"`
		Labels       map[string]string `json:"labels"`
	} `json:"metadata"`
}

func getHost(t *testing.T, r *relaytest.Relay, id, tok string) (int, hostJSON) {
	t.Helper()
	code, body := getText(t, r.URL+"/v1/hosts/"+id, tok)
	var h hostJSON
	if code == 200 {
		if err := json.Unmarshal([]byte(body), &h); err != nil {
			t.Fatalf("%s: %v", body, err)
		}
	}
	return code, h
}

func TestPresenceOfOneHost(t *testing.T) {
	r := relaytest.StartRelay(t, nil)
	ln := relaytest.StartHost(t, r.URL, "org:m1", echoPath, func(c *agent.Config) {
		c.Name = "box"
		c.Labels = map[string]string{"env": "dev"}
		c.Version = "v9"
	})
	tok := relaytest.ClientToken(t, "c", "org:*")
	code, h := getHost(t, r, "org%3Am1", tok)
	if code != 200 || h.ID != "org:m1" || !h.Online || h.ConnectedAt == nil || h.DisconnectedAt != nil ||
		h.Metadata.Name != "box" || h.Metadata.OS == "" || h.Metadata.AgentVersion != "v9" || h.Metadata.Labels["env"] != "dev" {
		t.Fatalf("online: %d %+v", code, h)
	}
	_ = ln.Close()
	relaytest.Eventually(t, 5*time.Second, "offline", func() bool {
		_, h := getHost(t, r, "org:m1", tok)
		return !h.Online
	})
	_, h = getHost(t, r, "org:m1", tok)
	if h.DisconnectedAt == nil || h.ConnectedAt == nil || h.DisconnectedAt.Before(*h.ConnectedAt) || h.Metadata.Name != "box" {
		t.Fatalf("offline: %+v", h)
	}
	// Unknown and not-disclosed hosts get the same answer.
	other := relaytest.ClientToken(t, "c", "elsewhere")
	c1, b1 := getText(t, r.URL+"/v1/hosts/org:m1", other)
	c2, b2 := getText(t, r.URL+"/v1/hosts/never-seen", other)
	if c1 != 404 || c2 != 404 || b1 != b2 {
		t.Fatalf("not disclosed vs unknown: %d %s / %d %s", c1, b1, c2, b2)
	}
	if code, _ := getText(t, r.URL+"/v1/hosts/org:m1", ""); code != 401 {
		t.Fatalf("no token: %d", code)
	}
}

func TestPresenceBatch(t *testing.T) {
	r := relaytest.StartRelay(t, func(c *relay.Config) { c.MaxBatchIDs = 5 })
	relaytest.StartHost(t, r.URL, "a", echoPath, nil)
	relaytest.StartHost(t, r.URL, "b", echoPath, nil)
	relaytest.StartHost(t, r.URL, "secret", echoPath, nil)
	tok := relaytest.ClientToken(t, "c", "a", "b", "zz")
	code, body := getText(t, r.URL+"/v1/hosts?ids=a,b,secret,zz", tok)
	var out struct{ Hosts []hostJSON }
	if err := json.Unmarshal([]byte(body), &out); code != 200 || err != nil {
		t.Fatalf("%d %s %v", code, body, err)
	}
	var ids []string
	for _, h := range out.Hosts {
		if !h.Online {
			t.Fatalf("%s offline", h.ID)
		}
		ids = append(ids, h.ID)
	}
	if fmt.Sprint(ids) != "[a b]" {
		t.Fatalf("ids %v, want [a b] (secret not disclosed, zz never seen)", ids)
	}
	if code, body := getText(t, r.URL+"/v1/hosts?ids=1,2,3,4,5,6", tok); code != 400 || !strings.Contains(body, "too_many_ids") {
		t.Fatalf("over the bound: %d %s", code, body)
	}
	if code, _ := getText(t, r.URL+"/v1/hosts?ids=", tok); code != 400 {
		t.Fatalf("empty ids: %d", code)
	}
}

// TestMetricsNeverCarryHostIDs: after traffic of every kind, no label value is a host id.
func TestMetricsNeverCarryHostIDs(t *testing.T) {
	r := relaytest.StartRelay(t, nil)
	relaytest.StartHost(t, r.URL, "host-id-xyzzy", echoPath, nil)
	tok := relaytest.ClientToken(t, "c", "*")
	getText(t, r.URL+"/hosts/host-id-xyzzy/", tok)
	getText(t, r.URL+"/hosts/host-id-offline-plugh/", tok)
	getText(t, r.URL+"/hosts/host-id-xyzzy/", "")
	tunnelAttempt(t, r.URL, "host-id-hijack", relaytest.HostToken(t, "x"))
	resp, err := http.Get(r.MetricsURL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	text := string(b)
	for _, want := range []string{"switchboard_tunnels 1", "switchboard_tunnel_registrations_total", "switchboard_exchanges_total",
		"switchboard_exchange_header_latency_seconds", "switchboard_exchanges_active", "switchboard_draining 0"} {
		if !strings.Contains(text, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
	if strings.Contains(text, "host-id-") {
		t.Fatal("a host id appears in the metrics")
	}
	if n, err := testutil.GatherAndCount(r.Registry, "switchboard_exchanges_total"); err != nil || n < 3 {
		t.Fatalf("exchange series: %d, %v", n, err)
	}
}
