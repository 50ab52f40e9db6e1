package cli_test

import (
	"strings"
	"testing"
)

// TestPublicListenerServesNoMetrics: /metrics answers 404 on --listen, whatever token is sent, and 200 on
// --metrics-listen; the relay keeps answering clients meanwhile.
func TestPublicListenerServesNoMetrics(t *testing.T) {
	_, addr, metrics := startRelay(t, withSecret)
	tok := mint(t, "client", "--hosts", "*")
	for _, token := range []string{"", tok} {
		if code, body := get("http://"+addr+"/metrics", token); code != 404 || strings.Contains(body, "switchboard_") {
			t.Fatalf("GET /metrics on --listen: %d %.200s, want 404", code, body)
		}
	}
	if code, body := get("http://"+metrics+"/metrics", ""); code != 200 || !strings.Contains(body, "switchboard_tunnels") {
		t.Fatalf("GET /metrics on --metrics-listen: %d %.200s", code, body)
	}
	if code, body := get("http://"+addr+"/v1/hosts/nobody", tok); code != 404 {
		t.Fatalf("client call: %d %s, want 404", code, body)
	}
}

// TestPprofHidesCommandLine: with --pprof, a secret given on the command line is not readable from the metrics
// listener: /debug/pprof/cmdline is not served, while the profiles are.
func TestPprofHidesCommandLine(t *testing.T) {
	const flagSecret = "pprof-test-secret-0123456789abcdefghij"
	_, addr, metrics := startRelay(t, nil, "--pprof", "--secret", flagSecret)
	if code, body := get("http://"+metrics+"/debug/pprof/cmdline", ""); code == 200 || strings.Contains(body, flagSecret) {
		t.Fatalf("GET /debug/pprof/cmdline: %d %q, want no command line", code, body)
	}
	for _, path := range []string{"/debug/pprof/", "/debug/pprof/goroutine?debug=1", "/metrics"} {
		code, body := get("http://"+metrics+path, "")
		if code != 200 {
			t.Fatalf("GET %s: %d", path, code)
		}
		if strings.Contains(body, flagSecret) {
			t.Fatalf("GET %s shows the secret", path)
		}
	}
	if code, _ := get("http://"+addr+"/debug/pprof/", ""); code != 404 {
		t.Fatalf("pprof on the public listener: %d, want 404", code)
	}
}
