package cli_test

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestQuickStart is the README's quick start with the real binary: serve, token host, host --upstream, then a
// client call and a presence query with a token client token; SIGTERM stops the host cleanly.
func TestQuickStart(t *testing.T) {
	up := upstream(t, func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello from the upstream: %s %s as %s", r.Method, r.URL.RequestURI(), r.Header.Get("X-Switchboard-Subject"))
	})
	_, addr, _ := startRelay(t, withSecret)
	host := start(t, nil, "host", "--relay", "http://"+addr, "--id", "org:laptop",
		"--token", mint(t, "host", "--id", "org:laptop"), "--upstream", up, "--name", "laptop", "--label", "env=dev")
	tok := mint(t, "client", "--hosts", "org:*", "--sub", "alice")

	body := waitStatus(t, "http://"+addr+"/hosts/org:laptop/", tok, 200)
	if want := "hello from the upstream: GET / as alice"; body != want {
		t.Fatalf("body = %q, want %q", body, want)
	}
	if code, body := get("http://"+addr+"/hosts/org:laptop/a/b?x=1", tok); code != 200 || !strings.HasSuffix(body, "GET /a/b?x=1 as alice") {
		t.Fatalf("path and query: %d %q", code, body)
	}
	code, body := get("http://"+addr+"/v1/hosts/org:laptop", tok)
	for _, want := range []string{`"online":true`, `"name":"laptop"`, `"env":"dev"`, `"agent_version"`} {
		if code != 200 || !strings.Contains(body, want) {
			t.Fatalf("presence: %d %s, want %s", code, body, want)
		}
	}

	host.signal(t, syscall.SIGTERM)
	if code := host.exitCode(t, 10*time.Second); code != 0 {
		t.Fatalf("host exit code after SIGTERM: %d, want 0", code)
	}
	waitFor(t, "host offline", func() bool {
		_, body := get("http://"+addr+"/v1/hosts/org:laptop", tok)
		return strings.Contains(body, `"online":false`)
	})
}

// TestUpstreamHeader: every --upstream-header reaches the upstream on every request.
func TestUpstreamHeader(t *testing.T) {
	up := upstream(t, func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s|%s", r.Header.Get("X-Pre-Shared"), r.Header.Get("X-Other"))
	})
	_, addr, _ := startRelay(t, withSecret)
	start(t, nil, "host", "--relay", "http://"+addr, "--id", "h1", "--token", mint(t, "host", "--id", "h1"),
		"--upstream", up, "--upstream-header", "X-Pre-Shared: abc", "--upstream-header", "X-Other:  two words ")
	tok := mint(t, "client", "--hosts", "h1")
	for range 3 {
		if body := waitStatus(t, "http://"+addr+"/hosts/h1/", tok, 200); body != "abc|two words" {
			t.Fatalf("upstream saw %q, want %q", body, "abc|two words")
		}
	}
}

// TestTokenCommand: `--token-command 'printf TOKEN'` supplies the token, and it is run again for the reconnect
// after the relay is killed and started again on the same port.
func TestTokenCommand(t *testing.T) {
	up := upstream(t, func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write([]byte("ok")) })
	runs := filepath.Join(t.TempDir(), "runs")
	count := func() int {
		b, _ := os.ReadFile(runs)
		return len(b)
	}
	socks := listenSockets(t, 2)
	addr := socks.addrs[0]
	relay := startRelayOn(t, withSecret, socks)
	command := fmt.Sprintf("printf x >> '%s'; printf '%s'", runs, mint(t, "host", "--id", "h1"))
	start(t, nil, "host", "--relay", "http://"+addr, "--id", "h1", "--token-command", command, "--upstream", up,
		"--min-backoff", "50ms", "--max-backoff", "200ms")
	tok := mint(t, "client", "--hosts", "h1")
	waitStatus(t, "http://"+addr+"/hosts/h1/", tok, 200)
	before := count()
	if before < 1 {
		t.Fatalf("the token command ran %d times before the first tunnel", before)
	}

	relay.signal(t, syscall.SIGKILL)
	relay.exitCode(t, 10*time.Second)
	startRelayOn(t, withSecret, socks) // on the same sockets, held by the test
	waitStatus(t, "http://"+addr+"/hosts/h1/", tok, 200)
	if after := count(); after <= before {
		t.Fatalf("the token command ran %d times in all, %d before the restart: not run again to reconnect", after, before)
	}
}

// TestTokenCommandFreshToken: the token command's current answer is used on reconnect, so a relay that comes back
// with a new secret accepts the host once the command prints a token signed with it.
func TestTokenCommandFreshToken(t *testing.T) {
	up := upstream(t, func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write([]byte("ok")) })
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte(mint(t, "host", "--id", "h1")), 0o600); err != nil {
		t.Fatal(err)
	}
	socks := listenSockets(t, 2)
	addr := socks.addrs[0]
	relay := startRelayOn(t, withSecret, socks)
	start(t, nil, "host", "--relay", "http://"+addr, "--id", "h1", "--token-command", "cat '"+tokenFile+"'", "--upstream", up,
		"--min-backoff", "50ms", "--max-backoff", "200ms")
	waitStatus(t, "http://"+addr+"/hosts/h1/", mint(t, "client", "--hosts", "h1"), 200)

	const rotated = "rotated-secret-0123456789abcdefghij"
	newToken := run(t, []string{"SWITCHBOARD_SECRET=" + rotated}, "token", "host", "--id", "h1")
	if err := os.WriteFile(tokenFile, []byte(newToken.stdout), 0o600); err != nil {
		t.Fatal(err)
	}
	relay.signal(t, syscall.SIGKILL)
	relay.exitCode(t, 10*time.Second)
	startRelayOn(t, []string{"SWITCHBOARD_SECRET=" + rotated}, socks) // on the same sockets, held by the test
	tok := run(t, []string{"SWITCHBOARD_SECRET=" + rotated}, "token", "client", "--hosts", "h1").stdout
	waitStatus(t, "http://"+addr+"/hosts/h1/", strings.TrimSpace(tok), 200)
}

// TestConfigFromEnvironment: a relay and a host configured only through SWITCHBOARD_ variables carry a request.
func TestConfigFromEnvironment(t *testing.T) {
	up := upstream(t, func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write([]byte(r.Header.Get("X-Pre-Shared"))) })
	socks := listenSockets(t, 2)
	addr, metrics := socks.addrs[0], socks.addrs[1]
	startFiles(t, []string{"SWITCHBOARD_SECRET=" + secret, "SWITCHBOARD_LISTEN=fd:3", "SWITCHBOARD_METRICS_LISTEN=fd:4"}, socks.files, "serve")
	waitStatus(t, "http://"+metrics+"/healthz", "", 200)
	start(t, []string{
		"SWITCHBOARD_RELAY=ws://" + addr, "SWITCHBOARD_HOST_ID=h1", "SWITCHBOARD_TOKEN=" + mint(t, "host", "--id", "h1"),
		"SWITCHBOARD_UPSTREAM=" + up, "SWITCHBOARD_UPSTREAM_HEADER=X-Pre-Shared: from-env",
	}, "host")
	if body := waitStatus(t, "http://"+addr+"/hosts/h1/", mint(t, "client", "--hosts", "h1"), 200); body != "from-env" {
		t.Fatalf("upstream saw %q, want %q", body, "from-env")
	}
}

// TestTokenCommandRenewsBeforeExpiry: a host whose token command mints 6-second tokens stays reachable across
// several expiries: the agent renews each tunnel before the relay would close it (4401), and no request fails.
func TestTokenCommandRenewsBeforeExpiry(t *testing.T) {
	up := upstream(t, func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write([]byte("ok")) })
	runs := filepath.Join(t.TempDir(), "runs")
	_, addr, metrics := startRelay(t, withSecret, "--ping-interval", "100ms")
	command := fmt.Sprintf("printf x >> '%s'; '%s' token host --id h1 --ttl 6s", runs, binary)
	start(t, withSecret, "host", "--relay", "http://"+addr, "--id", "h1", "--token-command", command, "--upstream", up,
		"--min-backoff", "50ms", "--max-backoff", "200ms")
	tok := mint(t, "client", "--hosts", "h1")
	waitStatus(t, "http://"+addr+"/hosts/h1/", tok, 200)
	until := time.Now().Add(8 * time.Second) // past the first token's exp
	requests := 0
	for time.Now().Before(until) {
		if code, body := get("http://"+addr+"/hosts/h1/", tok); code != 200 || body != "ok" {
			t.Fatalf("request %d: %d %q", requests, code, body)
		}
		requests++
		time.Sleep(20 * time.Millisecond)
	}
	if b, _ := os.ReadFile(runs); len(b) < 2 {
		t.Fatalf("the token command ran %d times across the first token's exp, want a renewal", len(b))
	}
	_, text := get("http://"+metrics+"/metrics", "")
	if v, ok := metricValue(text, `switchboard_tunnels_closed_total{reason="token_expired"}`); !ok || v != 0 {
		t.Fatalf("a tunnel was closed for an expired token (%v); renewal came too late:\n%s", v, text)
	}
	if v, _ := metricValue(text, `switchboard_tunnels_closed_total{reason="replaced"}`); v == 0 {
		t.Fatal("no tunnel was replaced by its renewal")
	}
}

// TestBrowserFlags: `serve --hosts-domain` routes NAME.DOMAIN to the host with its path unchanged, `--cors-origin`
// answers that origin's preflight, and `host --host-header preserve` passes the public name to the upstream; a
// --host-header that is not a host name, or --upstream-ca with --upstream-insecure-skip-verify, exits 2.
func TestBrowserFlags(t *testing.T) {
	up := upstream(t, func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s %s %s", r.Host, r.Header.Get("X-Forwarded-Host"), r.URL.RequestURI())
	})
	_, addr, _ := startRelay(t, withSecret, "--hosts-domain", "localhost", "--cors-origin", "http://app.example:3000")
	start(t, nil, "host", "--relay", "http://"+addr, "--id", "h1", "--token", mint(t, "host", "--id", "h1"),
		"--upstream", up, "--host-header", "preserve")
	tok := mint(t, "client", "--hosts", "h1")
	waitStatus(t, "http://"+addr+"/hosts/h1/", tok, 200)

	_, port, _ := strings.Cut(addr, ":")
	name := "h1.localhost:" + port
	req, _ := http.NewRequest("GET", "http://"+addr+"/a?b=1", nil)
	req.Host = name
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if want := name + " " + name + " /a?b=1"; resp.StatusCode != 200 || string(body) != want {
		t.Fatalf("host mode: %d %q, want %q", resp.StatusCode, body, want)
	}

	req, _ = http.NewRequest("OPTIONS", "http://"+addr+"/v1/hosts/h1", nil)
	req.Header.Set("Origin", "http://app.example:3000")
	req.Header.Set("Access-Control-Request-Method", "GET")
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent || resp.Header.Get("Access-Control-Allow-Origin") != "http://app.example:3000" {
		t.Fatalf("preflight: %d %v", resp.StatusCode, resp.Header)
	}

	for _, args := range [][]string{
		{"--host-header", "a/b"},
		{"--upstream-ca", "ca.pem", "--upstream-insecure-skip-verify"},
	} {
		r := run(t, nil, append([]string{"host", "--relay", "http://" + addr, "--id", "h2", "--token", "x", "--upstream", up}, args...)...)
		if r.code != 2 {
			t.Fatalf("host %v: exit %d, want 2: %s", args, r.code, r.stderr)
		}
	}
	for _, args := range [][]string{{"--cors-origin", "*"}, {"--cors-origin", "https://app.example/path"}, {"--hosts-domain", "bad_name"}} {
		if r := run(t, nil, append([]string{"serve"}, args...)...); r.code != 2 || !strings.Contains(r.stderr, args[0]) {
			t.Fatalf("serve %v: exit %d, want 2 and a message naming the flag: %s", args, r.code, r.stderr)
		}
	}
}

// TestHostPprof: `host --pprof` serves the agent's profiles (not its command line, which holds the token) on the
// socket given, and refuses an address that is not loopback unless --pprof-allow-remote says so.
func TestHostPprof(t *testing.T) {
	up := upstream(t, func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "up") })
	_, addr, _ := startRelay(t, withSecret)
	s := listenSockets(t, 1)
	hostTok := mint(t, "host", "--id", "h1")
	startFiles(t, nil, s.files, "host", "--relay", "http://"+addr, "--id", "h1", "--token", hostTok, "--upstream", up,
		"--pprof", "fd:3")
	s.release()
	waitStatus(t, "http://"+addr+"/hosts/h1/", mint(t, "client", "--hosts", "h1"), 200)
	waitStatus(t, "http://"+s.addrs[0]+"/debug/pprof/", "", 200)
	if code, body := get("http://"+s.addrs[0]+"/debug/pprof/goroutine?debug=1", ""); code != 200 ||
		!strings.Contains(body, "agent.(*Bridge)") {
		t.Fatalf("goroutine profile: %d, bridge not in it:\n%.2000s", code, body)
	}
	if code, body := get("http://"+s.addrs[0]+"/debug/pprof/cmdline", ""); code == 200 || strings.Contains(body, hostTok) {
		t.Fatalf("/debug/pprof/cmdline: %d %q, want no command line", code, body)
	}
	for _, tc := range []struct {
		args []string
		code int
	}{
		{[]string{"--pprof", "0.0.0.0:6061"}, 2},
		{[]string{"--pprof", ":6061"}, 2},
		{[]string{"--pprof", "nonsense"}, 2},
	} {
		r := run(t, nil, append([]string{"host", "--relay", "http://" + addr, "--id", "h2", "--token", "x", "--upstream", up}, tc.args...)...)
		if r.code != tc.code || !strings.Contains(r.stderr, "--pprof") {
			t.Fatalf("host %v: exit %d, want %d and a message naming --pprof: %s", tc.args, r.code, tc.code, r.stderr)
		}
	}
}
