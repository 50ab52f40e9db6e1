package relay_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/switchboard-relay/switchboard/agent"
	"github.com/switchboard-relay/switchboard/internal/relay"
	"github.com/switchboard-relay/switchboard/internal/relaytest"
)

// TestPresenceThroughAReplacement: while a newer tunnel replaces an older one, the host never reads as offline;
// afterwards it shows the newer registration's metadata and connection time.
func TestPresenceThroughAReplacement(t *testing.T) {
	r := relaytest.StartRelay(t, nil)
	tok := relaytest.ClientToken(t, "c", "h")
	relaytest.StartHost(t, r.URL, "h", echoPath, func(c *agent.Config) {
		c.Name, c.Labels, c.Version = "old", map[string]string{"gen": "1"}, "v1"
	})
	_, before := getHost(t, r, "h", tok)
	stop := make(chan struct{})
	flapped := make(chan string, 1)
	polled := make(chan struct{})
	go func() {
		defer close(polled)
		for {
			select {
			case <-stop:
				return
			default:
			}
			code, body, err := fetchText(r.URL+"/v1/hosts/h", tok)
			var h hostJSON
			if err == nil && code == 200 {
				err = json.Unmarshal([]byte(body), &h)
			}
			if err != nil || code != 200 || !h.Online {
				select {
				case flapped <- fmt.Sprintf("%d %+v %v", code, h, err):
				default:
				}
			}
		}
	}()
	relaytest.StartHost(t, r.URL, "h", echoPath, func(c *agent.Config) {
		c.Name, c.Labels, c.Version = "new", map[string]string{"gen": "2"}, "v2"
	})
	relaytest.Eventually(t, 5*time.Second, "the replacement to be counted", func() bool { return registrationCount(t, r, "replaced_older") == 1 })
	close(stop)
	<-polled
	select {
	case s := <-flapped:
		t.Fatalf("the host read as offline during its replacement: %s", s)
	default:
	}
	code, after := getHost(t, r, "h", tok)
	if code != 200 || !after.Online || after.Metadata.Name != "new" || after.Metadata.Labels["gen"] != "2" ||
		after.Metadata.AgentVersion != "v2" || after.DisconnectedAt != nil {
		t.Fatalf("after the replacement: %d %+v", code, after)
	}
	if after.ConnectedAt == nil || before.ConnectedAt == nil || after.ConnectedAt.Before(*before.ConnectedAt) {
		t.Fatalf("connected_at %v before, %v after: want the newer registration's", before.ConnectedAt, after.ConnectedAt)
	}
}

// TestPresenceExactJSON: the documented fields, with their names and types, and labels always an object.
func TestPresenceExactJSON(t *testing.T) {
	r := relaytest.StartRelay(t, nil)
	relaytest.StartHost(t, r.URL, "bare", echoPath, nil)
	code, body := getText(t, r.URL+"/v1/hosts/bare", relaytest.ClientToken(t, "c", "bare"))
	var m map[string]any
	if err := json.Unmarshal([]byte(body), &m); code != 200 || err != nil {
		t.Fatalf("%d %s %v", code, body, err)
	}
	for _, k := range []string{"id", "online", "connected_at", "disconnected_at", "metadata"} {
		if _, ok := m[k]; !ok {
			t.Fatalf("field %q missing in %s", k, body)
		}
	}
	if m["disconnected_at"] != nil {
		t.Fatalf("disconnected_at of a host never disconnected: %v", m["disconnected_at"])
	}
	if _, err := time.Parse(time.RFC3339Nano, fmt.Sprint(m["connected_at"])); err != nil {
		t.Fatalf("connected_at: %v", err)
	}
	meta, _ := m["metadata"].(map[string]any)
	for _, k := range []string{"name", "os", "agent_version", "labels"} {
		if _, ok := meta[k]; !ok {
			t.Fatalf("metadata field %q missing in %s", k, body)
		}
	}
	if _, ok := meta["labels"].(map[string]any); !ok {
		t.Fatalf("labels of a host without labels: %v, want {}", meta["labels"])
	}
}

// TestPresenceBatchEdges: the bound is inclusive, duplicates are answered once, a bad id is a 400, and a host
// the token may not reach is answered exactly like one never seen.
func TestPresenceBatchEdges(t *testing.T) {
	r := relaytest.StartRelay(t, func(c *relay.Config) { c.MaxBatchIDs = 4 })
	relaytest.StartHost(t, r.URL, "team:a", echoPath, nil)
	relaytest.StartHost(t, r.URL, "other:b", echoPath, nil)
	tok := relaytest.ClientToken(t, "c", "team:*")
	ids := func(body string) string {
		var out struct{ Hosts []hostJSON }
		if err := json.Unmarshal([]byte(body), &out); err != nil {
			t.Fatalf("%s: %v", body, err)
		}
		var s []string
		for _, h := range out.Hosts {
			s = append(s, h.ID)
		}
		return fmt.Sprint(s)
	}
	tests := []struct {
		name, query string
		code        int
		want        string // ids answered, or the error code
	}{
		{"exactly the bound, duplicates once", "team:a,team:a,team:zz,other:b", 200, "[team:a]"},
		{"over the bound", "a,b,c,d,e", 400, "too_many_ids"},
		{"an id with a slash", "team:a,x%2Fy", 400, "invalid_host_id"},
		{"an id too long", "team:a," + strings.Repeat("x", 129), 400, "invalid_host_id"},
		{"only hosts not reachable", "other:b", 200, "[]"},
		{"only hosts never seen", "team:never", 200, "[]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, body := getText(t, r.URL+"/v1/hosts?ids="+tt.query, tok)
			if code != tt.code {
				t.Fatalf("status %d, want %d (%s)", code, tt.code, body)
			}
			if code == 200 {
				if got := ids(body); got != tt.want {
					t.Fatalf("ids %s, want %s", got, tt.want)
				}
			} else if !strings.Contains(body, `"`+tt.want+`"`) {
				t.Fatalf("body %s, want code %s", body, tt.want)
			}
		})
	}
	// A host token reads no presence: it is not a client of anything, and is told so.
	code, body := getText(t, r.URL+"/v1/hosts?ids=team:a", relaytest.HostToken(t, "team:a"))
	if code != 401 || !strings.Contains(body, "client token") {
		t.Fatalf("a host token: %d %s", code, body)
	}
	if code, _ := getText(t, r.URL+"/v1/hosts?ids=team:a", "forged."+tok); code != 401 {
		t.Fatalf("a bad token: %d, want 401", code)
	}
}

// TestMetricsLabelsAreClosedSets: scrape /metrics after traffic of every kind and check every label value
// against the host ids used: none may appear, whatever the series.
func TestMetricsLabelsAreClosedSets(t *testing.T) {
	r := relaytest.StartRelay(t, func(c *relay.Config) { c.MaxStreamsPerHost = 1 })
	hosts := []string{"alpha", "beta:1", "gamma"}
	release := make(chan struct{})
	entered := make(chan struct{}, 1)
	relaytest.StartHost(t, r.URL, "alpha", http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if req.URL.Path == "/hold" {
			entered <- struct{}{}
			<-release
		}
		w.WriteHeader(http.StatusTeapot)
	}), nil)
	relaytest.StartHost(t, r.URL, "beta:1", echoPath, nil)
	tok := relaytest.ClientToken(t, "c", "alpha", "beta:*")
	held := make(chan struct{})
	go func() {
		defer close(held)
		if _, _, err := fetchText(r.URL+"/hosts/alpha/hold", tok); err != nil {
			t.Error(err)
		}
	}()
	<-entered
	getText(t, r.URL+"/hosts/alpha/", tok) // 429
	close(release)
	<-held
	getText(t, r.URL+"/hosts/alpha/", tok)  // 418
	getText(t, r.URL+"/hosts/beta:1/", tok) // 200
	getText(t, r.URL+"/hosts/gamma/", tok)  // 403
	getText(t, r.URL+"/hosts/beta:2/", tok) // 503
	getText(t, r.URL+"/v1/hosts/gamma", tok)
	tunnelAttempt(t, r.URL, "gamma", relaytest.HostToken(t, "alpha"))

	resp, err := http.Get(r.MetricsURL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var series int
	for line := range strings.SplitSeq(string(b), "\n") {
		if strings.HasPrefix(line, "#") || line == "" {
			continue
		}
		series++
		open, end := strings.IndexByte(line, '{'), strings.LastIndexByte(line, '}')
		if open < 0 || end < open {
			continue
		}
		for pair := range strings.SplitSeq(line[open+1:end], ",") {
			_, v, _ := strings.Cut(pair, "=")
			v = strings.Trim(v, `"`)
			for _, h := range hosts {
				if v == h || strings.Contains(v, h) {
					t.Fatalf("host id %q in a label: %s", h, line)
				}
			}
		}
	}
	for _, want := range []string{
		"switchboard_tunnels 2",
		`switchboard_tunnel_registrations_total{outcome="ok"} 2`,
		`switchboard_tunnel_registrations_total{outcome="forbidden"} 1`,
		`switchboard_exchanges_total{class="4xx",kind="http",outcome="too_many_streams"} 1`,
		`switchboard_exchanges_total{class="5xx",kind="http",outcome="host_offline"} 1`,
		`switchboard_exchanges_total{class="4xx",kind="http",outcome="forbidden"} 1`,
	} {
		if !strings.Contains(string(b), want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	if series < 10 {
		t.Fatalf("only %d series scraped", series)
	}
}
