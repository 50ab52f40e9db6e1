package relay_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/switchboard-relay/switchboard/internal/relay"
	"github.com/switchboard-relay/switchboard/internal/relaytest"
	"github.com/switchboard-relay/switchboard/internal/tunnel"
)

func TestTunnelHostIDValidation(t *testing.T) {
	r := relaytest.StartRelay(t, nil)
	for name, id := range map[string]string{
		"empty":      "",
		"129 bytes":  strings.Repeat("a", 129),
		"slash":      "a/b",
		"space":      "a b",
		"control":    "a\x01b",
		"bad utf-8":  "a\xffb",
		"delete":     "a\x7fb",
		"c1 control": "a\u0085b",
	} {
		t.Run(name, func(t *testing.T) {
			status, code := tunnelAttempt(t, r.URL, id, relaytest.HostToken(t, "a"))
			// Control bytes in a header are already refused by the HTTP server itself (400, not JSON).
			serverRefused := strings.ContainsAny(id, "\x01\x7f") && code == ""
			if status != 400 || (code != "invalid_host_id" && !serverRefused) {
				t.Fatalf("got %d %q, want 400 invalid_host_id", status, code)
			}
		})
	}
	if status, _ := tunnelAttempt(t, r.URL, strings.Repeat("a", 128), relaytest.HostToken(t, strings.Repeat("a", 128))); status != 101 {
		t.Fatalf("a 128-byte id: %d, want 101", status)
	}
}

func TestMaxTunnelsRefusesBeforeUpgrade(t *testing.T) {
	r := relaytest.StartRelay(t, func(c *relay.Config) { c.MaxTunnels = 2 })
	relaytest.StartHost(t, r.URL, "a", echoPath, nil)
	relaytest.StartHost(t, r.URL, "b", echoPath, nil)
	if status, code := tunnelAttempt(t, r.URL, "c", relaytest.HostToken(t, "c")); status != 503 || code != "too_many_tunnels" {
		t.Fatalf("third tunnel: %d %q, want 503 too_many_tunnels", status, code)
	}
}

func TestUpgradeRateLimitPerIP(t *testing.T) {
	r := relaytest.StartRelay(t, func(c *relay.Config) { c.AuthFailRate = 0.001; c.AuthFailBurst = 3 })
	var codes []int
	for i := range 5 {
		status, _ := tunnelAttempt(t, r.URL, fmt.Sprint("h", i), "bad-token")
		codes = append(codes, status)
	}
	want := []int{401, 401, 401, 429, 429}
	if fmt.Sprint(codes) != fmt.Sprint(want) {
		t.Fatalf("statuses %v, want %v", codes, want)
	}
}

// TestStreamLimitPerHost: one host at its limit gets 429; another host on the same relay is unaffected.
func TestStreamLimitPerHost(t *testing.T) {
	r := relaytest.StartRelay(t, func(c *relay.Config) { c.MaxStreamsPerHost = 2; c.MaxStreamsPerClient = 2 })
	release := make(chan struct{})
	entered := make(chan struct{}, 2)
	relaytest.StartHost(t, r.URL, "busy", http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		entered <- struct{}{}
		<-release
	}), nil)
	relaytest.StartHost(t, r.URL, "calm", echoPath, nil)
	tok := relaytest.ClientToken(t, "c", "*")
	var wg sync.WaitGroup
	for range 2 {
		wg.Go(func() {
			if _, _, err := fetchText(r.URL+"/hosts/busy/", tok); err != nil {
				t.Error(err)
			}
		})
	}
	<-entered
	<-entered
	code, body := getText(t, r.URL+"/hosts/busy/", tok)
	if code != 429 || !strings.Contains(body, "too_many_streams") {
		t.Fatalf("third exchange: %d %s", code, body)
	}
	if code, _ := getText(t, r.URL+"/hosts/calm/", tok); code != 200 {
		t.Fatalf("another host: %d, want 200", code)
	}
	close(release)
	wg.Wait()
}

func TestOversizedHeadersGet431(t *testing.T) {
	r := relaytest.StartRelay(t, nil)
	req, _ := http.NewRequest("GET", r.URL+"/hosts/a/", nil)
	req.Header.Set("X-Big", strings.Repeat("x", 70<<10))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Fatalf("status %d, want 431", resp.StatusCode)
	}
}

// TestMalformedTunnelTrafficClosesOnlyThatTunnel: garbage after the upgrade, or no control stream, ends that
// tunnel; another host on the relay keeps working.
func TestMalformedTunnelTrafficClosesOnlyThatTunnel(t *testing.T) {
	r := relaytest.StartRelay(t, nil)
	relaytest.StartHost(t, r.URL, "good", echoPath, nil)
	tok := relaytest.ClientToken(t, "c", "*")
	u, _ := url.Parse(r.URL)
	for name, after := range map[string][]byte{
		"garbage":          []byte("this is not yamux at all, not even close\x00\xff\xfe"),
		"bad yamux header": {9, 9, 9, 9, 0, 0, 0, 1, 0, 0, 0, 4, 'x', 'x', 'x', 'x'},
		"silence":          nil,
	} {
		t.Run(name, func(t *testing.T) {
			c, err := net.Dial("tcp", u.Host)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: %s\r\nConnection: Upgrade\r\nUpgrade: %s\r\nAuthorization: Bearer %s\r\n%s: bad\r\n\r\n",
				tunnel.Path, u.Host, tunnel.RawUpgrade, relaytest.HostToken(t, "bad"), tunnel.HeaderHostID)
			br := bufio.NewReader(c)
			resp, err := http.ReadResponse(br, nil)
			if err != nil || resp.StatusCode != 101 {
				t.Fatalf("upgrade: %v %v", resp, err)
			}
			if after != nil {
				_, _ = c.Write(after)
				// The relay ends this tunnel: the connection closes (silence ends by the control-stream timeout,
				// too slow to wait for here; garbage must end it at once).
				_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
				if _, err := io.Copy(io.Discard, br); err != nil {
					t.Fatalf("relay kept a garbage tunnel open: %v", err)
				}
			}
			if code, body := getText(t, r.URL+"/hosts/good/ok", tok); code != 200 || body != "echoPath /ok" {
				t.Fatalf("the other host: %d %q", code, body)
			}
			if code, _ := getText(t, r.URL+"/hosts/bad/", tok); code != 503 {
				t.Fatalf("the malformed host: %d, want 503", code)
			}
		})
	}
}
