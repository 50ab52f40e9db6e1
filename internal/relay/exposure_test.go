package relay_test

import (
	"strings"
	"testing"

	"github.com/switchboard-relay/switchboard/internal/relaytest"
)

// TestMetricsNotOnPublicListener: the public handler, which clients and hosts reach, answers /metrics with 404 (no
// token opens it); the operator's MetricsHandler serves it. /healthz and /readyz answer on both. The relay keeps
// carrying exchanges meanwhile.
func TestMetricsNotOnPublicListener(t *testing.T) {
	r := relaytest.StartRelay(t, nil)
	relaytest.StartHost(t, r.URL, "h1", echoPath, nil)
	tok := relaytest.ClientToken(t, "c", "*")
	for _, token := range []string{"", tok, relaytest.HostToken(t, "h1")} {
		if code, body := getText(t, r.URL+"/metrics", token); code != 404 || strings.Contains(body, "switchboard_") {
			t.Fatalf("public GET /metrics: %d %.200s, want 404 without metrics", code, body)
		}
	}
	if code, body := getText(t, r.MetricsURL+"/metrics", ""); code != 200 || !strings.Contains(body, "switchboard_tunnels 1") {
		t.Fatalf("metrics listener GET /metrics: %d %.200s", code, body)
	}
	for _, base := range []string{r.URL, r.MetricsURL} {
		for _, path := range []string{"/healthz", "/readyz"} {
			if code, body := getText(t, base+path, ""); code != 200 {
				t.Fatalf("GET %s: %d %s", path, code, body)
			}
		}
	}
	if code, body := getText(t, r.URL+"/hosts/h1/x", tok); code != 200 || body != "echoPath /x" {
		t.Fatalf("exchange: %d %q", code, body)
	}
}
