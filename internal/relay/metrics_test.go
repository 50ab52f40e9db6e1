package relay_test

import (
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/switchboard-relay/switchboard/agent"
	"github.com/switchboard-relay/switchboard/internal/relay"
	"github.com/switchboard-relay/switchboard/internal/relaytest"
)

// TestLabelledSeriesExistAtStart: on a fresh relay every labelled family has its series at 0 before any traffic
// (alerts need no "or vector(0)"), and traffic of many kinds adds no series to switchboard_exchanges_total: the
// combinations it produced were all initialised.
func TestLabelledSeriesExistAtStart(t *testing.T) {
	r := relaytest.StartRelay(t, nil)
	for _, want := range []struct {
		family string
		labels map[string]string
	}{
		{"switchboard_exchanges_total", map[string]string{"kind": "http", "outcome": "timeout", "class": "5xx"}},
		{"switchboard_exchanges_total", map[string]string{"kind": "websocket", "outcome": "ok", "class": "1xx"}},
		{"switchboard_exchanges_total", map[string]string{"kind": "tcp", "outcome": "upstream_unreachable", "class": "5xx"}},
		{"switchboard_tunnel_registrations_total", map[string]string{"outcome": "rate_limited"}},
		{"switchboard_tunnels_closed_total", map[string]string{"reason": "ping_timeout"}},
		{"switchboard_tunnel_upgrades_rate_limited_total", map[string]string{"bucket": "auth_failed"}},
		{"switchboard_exchange_bytes_total", map[string]string{"direction": "to_host"}},
		{"switchboard_tcp_bytes_total", map[string]string{"direction": "to_client"}},
		{"switchboard_forwards_total", map[string]string{"outcome": "peer_timeout"}},
		{"switchboard_miss_waits_total", map[string]string{"outcome": "timed_out"}},
		{"switchboard_hop_rejections_total", map[string]string{"reason": "replayed"}},
		{"switchboard_directory_errors_total", map[string]string{"op": "claim"}},
		{"switchboard_presence_events_total", map[string]string{"type": "moved"}},
		{"switchboard_directory_cache_lookups_total", map[string]string{"result": "miss"}},
	} {
		if !hasSeries(t, r, want.family, want.labels) {
			t.Errorf("no series %s%v at start", want.family, want.labels)
		}
	}
	for _, h := range []string{"switchboard_exchange_header_latency_seconds", "switchboard_directory_op_seconds"} {
		if n, err := testutil.GatherAndCount(r.Registry, h); err != nil || n == 0 {
			t.Errorf("%s: %d series at start (%v)", h, n, err)
		}
	}
	before, err := testutil.GatherAndCount(r.Registry, "switchboard_exchanges_total")
	if err != nil {
		t.Fatal(err)
	}

	// Traffic: answers of every class, offline, unauthorized, forbidden, upstream unreachable, WebSocket ok and
	// refused.
	mux := http.NewServeMux()
	mux.Handle("/ws", newEchoUpstream())
	mux.HandleFunc("/status/", func(w http.ResponseWriter, r *http.Request) {
		var code int
		_, _ = fmt.Sscanf(r.URL.Path, "/status/%d", &code)
		w.WriteHeader(code)
	})
	relaytest.StartUpstreamHost(t, r.URL, "org:m", mux, nil)
	relaytest.StartHost(t, r.URL, "org:dead", agent.UpstreamHandler(refusingUpstream(t), nil), nil)
	tok := relaytest.ClientToken(t, "alice", "org:*")
	base := r.URL + "/hosts/org:m"
	for _, code := range []int{200, 204, 302, 404, 500, 503} {
		readAll(t, relaytest.Do(t, "GET", fmt.Sprintf("%s/status/%d", base, code), tok))
	}
	readAll(t, relaytest.Do(t, "GET", r.URL+"/hosts/org:offline/", tok))
	readAll(t, relaytest.Do(t, "GET", base+"/", "bad"))
	readAll(t, relaytest.Do(t, "GET", base+"/", relaytest.ClientToken(t, "alice", "other")))
	readAll(t, relaytest.Do(t, "GET", r.URL+"/hosts/org:dead/", tok))
	env := proxyEnv{relay: r, base: base, token: tok}
	ws, _, err := dialWS(t, env.wsURL("/ws"), tok)
	if err != nil {
		t.Fatal(err)
	}
	_ = ws.Close(websocket.StatusNormalClosure, "")
	if _, resp, err := dialWS(t, env.wsURL("/status/403"), tok); err == nil || resp == nil || resp.StatusCode != 403 {
		t.Fatalf("refused upgrade: %v %v", resp, err)
	}
	relaytest.Eventually(t, 30*time.Second, "the WebSocket exchanges counted", func() bool {
		return seriesValue(t, r, "switchboard_exchanges_total", map[string]string{"kind": "websocket"}) == 2
	})
	if v := seriesValue(t, r, "switchboard_exchanges_total", map[string]string{"outcome": "upstream_unreachable"}); v != 1 {
		t.Errorf("upstream_unreachable %v, want 1", v)
	}
	if v := seriesValue(t, r, "switchboard_exchanges_total", map[string]string{"outcome": "ok", "class": "5xx"}); v != 2 {
		t.Errorf("ok 5xx (the host's own 500 and 503) %v, want 2", v)
	}
	after, err := testutil.GatherAndCount(r.Registry, "switchboard_exchanges_total")
	if err != nil {
		t.Fatal(err)
	}
	if after != before {
		t.Fatalf("switchboard_exchanges_total had %d series at start and %d after traffic: a combination was not initialised", before, after)
	}
}

// hasSeries reports whether family has a series with exactly labels.
func hasSeries(t *testing.T, r *relaytest.Relay, family string, labels map[string]string) bool {
	t.Helper()
	mfs, err := r.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != family {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			if len(m.GetLabel()) != len(labels) {
				continue
			}
			for _, lp := range m.GetLabel() {
				if v, ok := labels[lp.GetName()]; !ok || v != lp.GetValue() {
					continue next
				}
			}
			return true
		}
	}
	return false
}

// TestHeaderLatencyBucketsReachIdleTimeout: the last finite bucket of the header latency histogram is the idle
// timeout, past which no header is waited for.
func TestHeaderLatencyBucketsReachIdleTimeout(t *testing.T) {
	for _, idle := range []time.Duration{60 * time.Second, 5 * time.Minute, 1500 * time.Millisecond} {
		r := relaytest.StartRelay(t, func(c *relay.Config) { c.IdleTimeout = idle })
		mfs, err := r.Registry.Gather()
		if err != nil {
			t.Fatal(err)
		}
		var bounds []float64
		for _, mf := range mfs {
			if mf.GetName() == "switchboard_exchange_header_latency_seconds" {
				for _, b := range mf.GetMetric()[0].GetHistogram().GetBucket() {
					bounds = append(bounds, b.GetUpperBound())
				}
			}
		}
		if len(bounds) < 2 || bounds[len(bounds)-1] != idle.Seconds() || bounds[len(bounds)-2] >= idle.Seconds() {
			t.Errorf("idle %v: buckets %v", idle, bounds)
		}
	}
}
