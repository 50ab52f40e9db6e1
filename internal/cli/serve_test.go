package cli_test

import (
	"bufio"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// TestServeGeneratedSecretNotLogged: with no SWITCHBOARD_SECRET and stderr not a terminal (a pipe here, as under a
// supervisor that collects logs), the relay starts with a generated secret it does not print, and a WARN says tokens
// from this run cannot be minted elsewhere. Tokens signed with any other secret are refused.
func TestServeGeneratedSecretNotLogged(t *testing.T) {
	p, addr, metrics := startRelay(t, nil)
	for _, url := range []string{"http://" + metrics + "/healthz", "http://" + metrics + "/readyz", "http://" + addr + "/readyz"} {
		if code, body := get(url, ""); code != 200 {
			t.Fatalf("GET %s: %d %s", url, code, body)
		}
	}
	p.waitOutput(t, "relay listening")
	out := p.output()
	if !strings.Contains(out, `"level":"WARN","msg":"SWITCHBOARD_SECRET is not set`) ||
		!strings.Contains(out, "cannot be minted elsewhere") {
		t.Fatalf("serve without a secret did not warn:\n%s", out)
	}
	if strings.Contains(out, "export SWITCHBOARD_SECRET") || regexp.MustCompile(`[0-9a-f]{64}`).MatchString(out) {
		t.Fatalf("serve printed its generated secret into non-terminal stderr:\n%s", out)
	}
	if code, _ := get("http://"+addr+"/v1/hosts/nobody", mint(t, "client", "--hosts", "*")); code != 401 {
		t.Fatalf("token with another secret: %d, want 401", code)
	}
}

// TestServeWithSecret: with SWITCHBOARD_SECRET set the relay neither generates a secret nor prints it.
func TestServeWithSecret(t *testing.T) {
	p, addr, _ := startRelay(t, withSecret)
	if code, _ := get("http://"+addr+"/v1/hosts/nobody", mint(t, "client", "--hosts", "*")); code != 404 {
		t.Fatalf("token signed with SWITCHBOARD_SECRET: %d, want 404", code)
	}
	p.waitOutput(t, "relay listening")
	out := p.output()
	if strings.Contains(out, "is not set") || strings.Contains(out, "export SWITCHBOARD_SECRET") || strings.Contains(out, secret) {
		t.Fatalf("serve with a secret generated or printed one:\n%s", out)
	}
}

// TestSingleInstanceGuard: on a platform that may run several instances the in-memory directory refuses to start
// with one ERROR line naming both ways out, unless bypassed.
func TestSingleInstanceGuard(t *testing.T) {
	for _, platform := range []string{"FLY_APP_NAME=x", "KUBERNETES_SERVICE_HOST=x"} {
		t.Run(platform, func(t *testing.T) {
			p := start(t, []string{platform, "SWITCHBOARD_SECRET=" + secret},
				"serve", "--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0")
			if code := p.exitCode(t, 10*time.Second); code != 2 {
				t.Fatalf("exit code %d, want 2", code)
			}
			var errorLines []string
			sc := bufio.NewScanner(strings.NewReader(p.output()))
			for sc.Scan() {
				if strings.Contains(sc.Text(), `"level":"ERROR"`) {
					errorLines = append(errorLines, sc.Text())
				}
			}
			if len(errorLines) != 1 {
				t.Fatalf("%d ERROR lines, want 1:\n%s", len(errorLines), p.output())
			}
			name, _, _ := strings.Cut(platform, "=")
			for _, want := range []string{"SWITCHBOARD_SINGLE_INSTANCE=1", "Redis directory", "--directory redis://", name} {
				if !strings.Contains(errorLines[0], want) {
					t.Fatalf("the ERROR line does not name %q: %s", want, errorLines[0])
				}
			}
		})
		t.Run(platform+"+SWITCHBOARD_SINGLE_INSTANCE=1", func(t *testing.T) {
			startRelay(t, []string{platform, "SWITCHBOARD_SINGLE_INSTANCE=1", "SWITCHBOARD_SECRET=" + secret})
		})
	}
}

// TestAuthNoneWarns: --auth none starts without a secret, logs a warning, and lets any caller in.
func TestAuthNoneWarns(t *testing.T) {
	p, addr, _ := startRelay(t, nil, "--auth", "none")
	if code, body := get("http://"+addr+"/v1/hosts/nobody", ""); code != 404 {
		t.Fatalf("no token with --auth none: %d %s, want 404", code, body)
	}
	p.waitOutput(t, "relay listening")
	var warned bool
	sc := bufio.NewScanner(strings.NewReader(p.output()))
	for sc.Scan() {
		warned = warned || strings.Contains(sc.Text(), `"level":"WARN"`) && strings.Contains(sc.Text(), "AUTH DISABLED")
	}
	if !warned || strings.Contains(p.output(), "SWITCHBOARD_SECRET is not set") {
		t.Fatalf("--auth none: want one warning and no secret talk:\n%s", p.output())
	}
}

// TestDrainOnSIGTERM: on SIGTERM /readyz turns 503, new tunnels get 503, the in-flight exchange completes, the
// process exits 0 within the drain timeout, and the agent comes back to a relay started again on the same port.
func TestDrainOnSIGTERM(t *testing.T) {
	started, release := make(chan struct{}, 1), make(chan struct{})
	up := upstream(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			started <- struct{}{}
			select { // busy until the test has checked the drain around it
			case <-release:
			case <-r.Context().Done():
				return
			}
		}
		_, _ = w.Write([]byte("done " + r.URL.Path))
	})
	finish := sync.OnceFunc(func() { close(release) })
	t.Cleanup(finish) // runs before the upstream is closed

	const drainTimeout = 10 * time.Second
	relayArgs := []string{"--drain-timeout", drainTimeout.String(), "--drain-jitter", "100ms"}
	socks := listenSockets(t, 2)
	addr, metrics := socks.addrs[0], socks.addrs[1]
	relay := startRelayOn(t, withSecret, socks, relayArgs...)
	start(t, nil, "host", "--relay", "http://"+addr, "--id", "h1", "--token", mint(t, "host", "--id", "h1"),
		"--upstream", up, "--min-backoff", "50ms", "--max-backoff", "200ms")
	tok := mint(t, "client", "--hosts", "h1")
	waitStatus(t, "http://"+addr+"/hosts/h1/ping", tok, 200)

	type answer struct {
		code int
		body string
	}
	slow := make(chan answer, 1)
	go func() {
		code, body := get("http://"+addr+"/hosts/h1/slow", tok)
		slow <- answer{code, body}
	}()
	<-started
	sigterm := time.Now()
	relay.signal(t, syscall.SIGTERM)
	waitStatus(t, "http://"+metrics+"/readyz", "", 503)
	waitStatus(t, "http://"+addr+"/readyz", "", 503)

	// New tunnels, over either transport, are refused before the upgrade.
	for _, upgrade := range []string{"websocket", "switchboard.v1"} {
		req, _ := http.NewRequest("GET", "http://"+addr+"/v1/tunnel", nil)
		req.Header.Set("Authorization", "Bearer "+mint(t, "host", "--id", "h2"))
		req.Header.Set("Switchboard-Host-Id", "h2")
		req.Header.Set("Connection", "Upgrade")
		req.Header.Set("Upgrade", upgrade)
		req.Header.Set("Sec-WebSocket-Version", "13")
		req.Header.Set("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
		req.Header.Set("Sec-WebSocket-Protocol", "switchboard.v1")
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("%s upgrade while draining: %v", upgrade, err)
		}
		resp.Body.Close()
		if resp.StatusCode != 503 {
			t.Fatalf("%s upgrade while draining: %d, want 503", upgrade, resp.StatusCode)
		}
	}

	finish()
	if a := <-slow; a.code != 200 || a.body != "done /slow" {
		t.Fatalf("in-flight exchange: %d %q, want 200", a.code, a.body)
	}
	if code := relay.exitCode(t, drainTimeout); code != 0 {
		t.Fatalf("relay exit code %d, want 0", code)
	}
	t.Logf("relay exited %v after SIGTERM", time.Since(sigterm).Round(time.Millisecond))

	startRelayOn(t, withSecret, socks, relayArgs...) // on the same sockets, as a supervisor holding them would
	waitStatus(t, "http://"+addr+"/hosts/h1/again", tok, 200)
}

// TestSecondSignalStopsAtOnce: a second SIGTERM during a drain ends the process without waiting for it.
func TestSecondSignalStopsAtOnce(t *testing.T) {
	started := make(chan struct{}, 1)
	up := upstream(t, func(w http.ResponseWriter, r *http.Request) {
		started <- struct{}{}
		<-r.Context().Done() // never answers; ends when the relay goes away
	})
	relay, addr, metrics := startRelay(t, withSecret, "--drain-timeout", "1m", "--drain-jitter", "100ms")
	start(t, nil, "host", "--relay", "http://"+addr, "--id", "h1", "--token", mint(t, "host", "--id", "h1"),
		"--upstream", up)
	tok := mint(t, "client", "--hosts", "h1")
	waitStatus(t, "http://"+addr+"/v1/hosts/h1", tok, 200)
	waitFor(t, "host online", func() bool {
		_, body := get("http://"+addr+"/v1/hosts/h1", tok)
		return strings.Contains(body, `"online":true`)
	})
	stuck := make(chan int, 1)
	go func() {
		code, _ := get("http://"+addr+"/hosts/h1/stuck", tok)
		stuck <- code
	}()
	<-started
	relay.signal(t, syscall.SIGTERM)
	waitStatus(t, "http://"+metrics+"/readyz", "", 503)
	relay.signal(t, syscall.SIGTERM)
	if code := relay.exitCode(t, 10*time.Second); code == 0 {
		t.Fatalf("exit code %d after a second signal, want a signal death", code)
	}
	<-stuck
}

// TestDrainTimeoutEndsStuckExchanges: an exchange that never finishes holds the relay no longer than
// --drain-timeout; the relay still exits 0 and the stuck client gets an answer or a closed connection.
func TestDrainTimeoutEndsStuckExchanges(t *testing.T) {
	started := make(chan struct{}, 1)
	up := upstream(t, func(w http.ResponseWriter, r *http.Request) {
		started <- struct{}{}
		<-r.Context().Done()
	})
	relay, addr, _ := startRelay(t, withSecret, "--drain-timeout", "1s", "--drain-jitter", "100ms")
	start(t, nil, "host", "--relay", "http://"+addr, "--id", "h1", "--token", mint(t, "host", "--id", "h1"),
		"--upstream", up)
	tok := mint(t, "client", "--hosts", "h1")
	waitFor(t, "host online", func() bool {
		_, body := get("http://"+addr+"/v1/hosts/h1", tok)
		return strings.Contains(body, `"online":true`)
	})
	stuck := make(chan int, 1)
	go func() {
		code, _ := get("http://"+addr+"/hosts/h1/stuck", tok)
		stuck <- code
	}()
	<-started
	sigterm := time.Now()
	relay.signal(t, syscall.SIGTERM)
	if code := relay.exitCode(t, 8*time.Second); code != 0 {
		t.Fatalf("relay exit code %d, want 0", code)
	}
	took := time.Since(sigterm)
	if took < time.Second {
		t.Fatalf("relay exited %v after SIGTERM, before the 1s drain timeout with an exchange in flight", took)
	}
	if code := <-stuck; code == 200 {
		t.Fatalf("the stuck exchange answered %d", code)
	}
	t.Logf("relay exited %v after SIGTERM", took.Round(time.Millisecond))
	// The drain reports what it cut: one tunnel, under one exchange.
	var report string
	for _, line := range strings.Split(relay.output(), "\n") {
		if strings.Contains(line, `"msg":"drain done"`) {
			report = line
		}
	}
	if !strings.Contains(report, `"tunnels":1,`) || !strings.Contains(report, `"cut":1,"exchanges_cut":1,`) {
		t.Fatalf("drain report %q, want one tunnel cut under one exchange", report)
	}
}
