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

// TestShortSecretsRefused: every secret under 32 bytes, from a flag or the environment, stops serve and token with
// exit 2 and one line that says how to make a good one, without echoing the secret. The README's quick-start
// secret passes.
func TestShortSecretsRefused(t *testing.T) {
	const short = "short-secret-31-bytes-012345678"
	if len(short) != 31 {
		t.Fatalf("the short secret is %d bytes", len(short))
	}
	serve := []string{"serve", "--listen", "127.0.0.1:0", "--metrics-listen", ""}
	for _, tc := range []struct {
		name string
		env  []string
		args []string
		flag string
	}{
		{"secret env", []string{"SWITCHBOARD_SECRET=a"}, serve, "--secret"},
		{"secret flag", nil, append(serve, "--secret", short), "--secret"},
		{"cluster secret", []string{"SWITCHBOARD_SECRET=" + secret}, append(serve, "--cluster-secret", short), "--cluster-secret"},
		{"cluster secret env", []string{"SWITCHBOARD_SECRET=" + secret, "SWITCHBOARD_CLUSTER_SECRET=" + short}, serve, "--cluster-secret"},
		{"webhook secret", []string{"SWITCHBOARD_SECRET=" + secret},
			append(serve, "--webhook-url", "http://127.0.0.1:1/h", "--webhook-secret", short), "--webhook-secret"},
		{"webhook secret env", []string{"SWITCHBOARD_SECRET=" + secret, "SWITCHBOARD_WEBHOOK_SECRET=" + short},
			append(serve, "--webhook-url", "http://127.0.0.1:1/h"), "--webhook-secret"},
		{"token host", []string{"SWITCHBOARD_SECRET=" + short}, []string{"token", "host", "--id", "h1"}, "--secret"},
		{"token client", nil, []string{"token", "client", "--hosts", "*", "--secret", short}, "--secret"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := run(t, tc.env, tc.args...)
			if r.code != 2 || r.stdout != "" {
				t.Fatalf("exit %d, stdout %q, stderr %q; want exit 2 and nothing on stdout", r.code, r.stdout, r.stderr)
			}
			for _, want := range []string{tc.flag, "at least 32", "openssl rand -base64 32"} {
				if !strings.Contains(r.stderr, want) {
					t.Fatalf("stderr %q does not say %q", r.stderr, want)
				}
			}
			if strings.Contains(r.stderr, short) || strings.Contains(r.stderr, "=a") {
				t.Fatalf("stderr echoes the secret: %q", r.stderr)
			}
			if lines := strings.Count(strings.TrimSpace(r.stderr), "\n") + 1; lines != 1 {
				t.Fatalf("%d lines on stderr, want one:\n%s", lines, r.stderr)
			}
		})
	}
	const quickStart = "try-switchboard-locally-0123456789" // README.md
	if r := run(t, []string{"SWITCHBOARD_SECRET=" + quickStart}, "token", "client", "--hosts", "org:*", "--sub", "alice"); r.code != 0 {
		t.Fatalf("the quick-start secret is refused: %d %s", r.code, r.stderr)
	}
	_, addr, _ := startRelay(t, []string{"SWITCHBOARD_SECRET=" + quickStart})
	tok := run(t, []string{"SWITCHBOARD_SECRET=" + quickStart}, "token", "client", "--hosts", "*").stdout
	if code, body := get("http://"+addr+"/v1/hosts/nobody", strings.TrimSpace(tok)); code != 404 {
		t.Fatalf("relay with the quick-start secret: %d %s, want 404", code, body)
	}
}
