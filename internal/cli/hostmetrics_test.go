package cli_test

import (
	"net/http"
	"regexp"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// metricValue returns the value of the series whose line starts with series (name and labels as exposed) in
// text, and whether it is there.
func metricValue(text, series string) (float64, bool) {
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(series) + ` (\S+)$`).FindStringSubmatch(text)
	if m == nil {
		return 0, false
	}
	v, err := strconv.ParseFloat(m[1], 64)
	return v, err == nil
}

// TestHostMetricsListen: `switchboard host --metrics-listen` serves /healthz (200 while the tunnel is up, 503
// while the relay is gone) and /metrics with the tunnel's state, reconnects, ping round trip, exchanges by
// outcome (an upstream the agent cannot reach is upstream_unreachable, on the agent and on the relay) and
// build info.
func TestHostMetricsListen(t *testing.T) {
	up := upstream(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/die" { // the connection ends with no answer: the agent cannot get one
			c, _, err := http.NewResponseController(w).Hijack()
			if err == nil {
				_ = c.Close()
			}
			return
		}
		_, _ = w.Write([]byte("ok"))
	})
	socks := listenSockets(t, 2)
	addr := socks.addrs[0]
	relay := startRelayOn(t, withSecret, socks)
	msock := listenSockets(t, 1)
	startFiles(t, nil, msock.files, "host", "--relay", "http://"+addr, "--id", "h1", "--token", mint(t, "host", "--id", "h1"),
		"--upstream", up, "--metrics-listen", "fd:3", "--ping-interval", "200ms", "--min-backoff", "50ms", "--max-backoff", "200ms")
	metrics := "http://" + msock.addrs[0]
	waitStatus(t, metrics+"/healthz", "", 200)
	tok := mint(t, "client", "--hosts", "h1")
	if code, body := get("http://"+addr+"/hosts/h1/", tok); code != 200 || body != "ok" {
		t.Fatalf("through the relay: %d %q", code, body)
	}
	if code, body := get("http://"+addr+"/hosts/h1/die", tok); code != 502 {
		t.Fatalf("unreachable upstream: %d %q", code, body)
	}
	scrape := func() string {
		t.Helper()
		code, body := get(metrics+"/metrics", "")
		if code != 200 {
			t.Fatalf("/metrics: %d", code)
		}
		return body
	}
	waitFor(t, "a ping round trip", func() bool {
		v, ok := metricValue(scrape(), "switchboard_agent_ping_rtt_seconds")
		return ok && v > 0
	})
	text := scrape()
	for series, want := range map[string]float64{
		`switchboard_agent_tunnel_up`:                                                   1,
		`switchboard_agent_tunnels`:                                                     1,
		`switchboard_agent_reconnects_total`:                                            0,
		`switchboard_agent_connect_failures_total`:                                      0,
		`switchboard_agent_exchanges_total{kind="http",outcome="ok"}`:                   1,
		`switchboard_agent_exchanges_total{kind="http",outcome="upstream_unreachable"}`: 1,
		`switchboard_agent_exchanges_total{kind="websocket",outcome="client_gone"}`:     0,
		`switchboard_agent_exchanges_active`:                                            0,
	} {
		if got, ok := metricValue(text, series); !ok || got != want {
			t.Errorf("%s = %v (present %v), want %v", series, got, ok, want)
		}
	}
	if !regexp.MustCompile(`(?m)^switchboard_build_info\{goversion="go[^"]+",revision="[0-9a-f]*",version="[^"]+"\} 1$`).MatchString(text) {
		t.Errorf("no switchboard_build_info in the agent's metrics")
	}
	_, rm := get("http://"+socks.addrs[1]+"/metrics", "")
	if v, ok := metricValue(rm, `switchboard_exchanges_total{class="5xx",kind="http",outcome="upstream_unreachable"}`); !ok || v != 1 {
		t.Errorf("relay: upstream_unreachable = %v (present %v), want 1", v, ok)
	}

	// The relay dies: the agent is unhealthy until it reconnects to the relay started again.
	relay.signal(t, syscall.SIGKILL)
	relay.exitCode(t, 10*time.Second)
	waitStatus(t, metrics+"/healthz", "", 503)
	if v, _ := metricValue(scrape(), "switchboard_agent_tunnel_up"); v != 0 {
		t.Fatalf("tunnel_up %v with the relay gone", v)
	}
	startRelayOn(t, withSecret, socks) // on the same sockets, held by the test
	waitStatus(t, metrics+"/healthz", "", 200)
	text = scrape()
	if v, _ := metricValue(text, "switchboard_agent_reconnects_total"); v != 1 {
		t.Errorf("reconnects_total %v, want 1", v)
	}
}
