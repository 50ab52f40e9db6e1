package relay_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/switchboard-relay/switchboard/internal/relay"
	"github.com/switchboard-relay/switchboard/internal/relaytest"
	"github.com/switchboard-relay/switchboard/internal/tunnel"
)

// TestMalformedWebSocketTunnelTraffic: a tunnel whose WebSocket carries garbage is closed, alone; the relay and
// its other hosts go on.
func TestMalformedWebSocketTunnelTraffic(t *testing.T) {
	// Bytes on the control stream are found by the ping loop, once per interval: a short one keeps the test short.
	r := relaytest.StartRelay(t, func(c *relay.Config) { c.PingInterval = 200 * time.Millisecond })
	relaytest.StartHost(t, r.URL, "good", echoPath, nil)
	tok := relaytest.ClientToken(t, "c", "*")
	tests := []struct {
		name    string
		control bool // open the control stream (a valid yamux session) before the garbage
		typ     websocket.MessageType
		msg     []byte
	}{
		{"garbage binary before any stream", false, websocket.MessageBinary, []byte("\x00\xff\xfe garbage, not yamux")},
		{"garbage binary after the control stream", true, websocket.MessageBinary, []byte{7, 7, 7, 7, 0, 0, 0, 9, 0, 0, 0, 1}},
		// A data frame on the control stream (id 2: the agent is the yamux server) far over its receive window.
		{"a data frame over the window", true, websocket.MessageBinary, []byte{0, 0, 0, 0, 0, 0, 0, 2, 1, 0, 0, 0}},
		{"a text message", true, websocket.MessageText, []byte("hello")},
	}
	t.Run("a write on the control stream", func(t *testing.T) {
		// The control stream carries messages from the relay only: writing on it is a protocol error.
		rt := dialRawTunnel(t, r.URL, "bad", relaytest.HostToken(t, "bad"), true)
		// The write may report the session's end that its own bytes caused: yamux answers a write once its frame
		// is out, and the relay's close can reach this side first. The close code says whether they arrived.
		_, _ = rt.ctrl.Write([]byte("{\"type\":\"ready\"}\n"))
		if code := rt.closeCode(t); code != tunnel.CloseProtocol {
			t.Fatalf("closed with %d, want %d", code, tunnel.CloseProtocol)
		}
		if code, body := getText(t, r.URL+"/hosts/good/ok", tok); code != 200 || body != "echoPath /ok" {
			t.Fatalf("the other host: %d %q", code, body)
		}
	})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rt := dialRawTunnel(t, r.URL, "bad", relaytest.HostToken(t, "bad"), tt.control)
			// Write under the yamux session, straight into the WebSocket.
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if err := rt.ws.Write(ctx, tt.typ, tt.msg); err != nil {
				t.Fatalf("write: %v", err)
			}
			select {
			case <-rt.sess.CloseChan():
			case <-time.After(5 * time.Second):
				t.Fatal("the relay kept a tunnel that sent garbage")
			}
			if code, body := getText(t, r.URL+"/hosts/good/ok", tok); code != 200 || body != "echoPath /ok" {
				t.Fatalf("the other host: %d %q", code, body)
			}
			relaytest.Eventually(t, 5*time.Second, "the malformed host to be gone", func() bool {
				code, _ := getText(t, r.URL+"/hosts/bad/", tok)
				return code == 503
			})
		})
	}
}

// stallUpgrade completes a raw tunnel upgrade for id and then sends nothing: the relay waits for a control stream
// that does not come. The connection is closed in t.Cleanup.
func stallUpgrade(t *testing.T, relayURL, id string) int {
	t.Helper()
	u, _ := url.Parse(relayURL)
	c, err := net.Dial("tcp", u.Host)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: %s\r\nConnection: Upgrade\r\nUpgrade: %s\r\nAuthorization: Bearer %s\r\n%s: %s\r\n\r\n",
		tunnel.Path, u.Host, tunnel.RawUpgrade, relaytest.HostToken(t, id), tunnel.HeaderHostID, id)
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode
}

// TestMaxTunnelsCountsSetupsInProgress: upgrades that have not finished their setup hold their place under
// MaxTunnels, so a burst of half-open tunnels cannot push the relay past its limit.
func TestMaxTunnelsCountsSetupsInProgress(t *testing.T) {
	r := relaytest.StartRelay(t, func(c *relay.Config) { c.MaxTunnels = 2 })
	for _, id := range []string{"s1", "s2"} {
		if status := stallUpgrade(t, r.URL, id); status != 101 {
			t.Fatalf("stalled upgrade %s: %d", id, status)
		}
	}
	if status, code := tunnelAttempt(t, r.URL, "c", relaytest.HostToken(t, "c")); status != 503 || code != "too_many_tunnels" {
		t.Fatalf("third tunnel with two setups in progress: %d %q, want 503 too_many_tunnels", status, code)
	}
}

// TestMaxTunnelsLetsAHostReplaceItsOwnTunnel: at the limit, a host that reconnects (its old tunnel may be a
// zombie the relay has not noticed yet) replaces its tunnel instead of being locked out; a new host is refused.
func TestMaxTunnelsLetsAHostReplaceItsOwnTunnel(t *testing.T) {
	r := relaytest.StartRelay(t, func(c *relay.Config) { c.MaxTunnels = 2 })
	a := dialRawTunnel(t, r.URL, "a", relaytest.HostToken(t, "a"), true)
	dialRawTunnel(t, r.URL, "b", relaytest.HostToken(t, "b"), true)
	if status, code := tunnelAttempt(t, r.URL, "c", relaytest.HostToken(t, "c")); status != 503 || code != "too_many_tunnels" {
		t.Fatalf("a third host: %d %q, want 503", status, code)
	}
	again := dialRawTunnel(t, r.URL, "a", relaytest.HostToken(t, "a"), true)
	again.serve(text("a again"))
	if code := a.closeCode(t); code != tunnel.CloseReplaced {
		t.Fatalf("the old tunnel of a closed with %d, want %d", code, tunnel.CloseReplaced)
	}
	if code, body := getText(t, r.URL+"/hosts/a/", relaytest.ClientToken(t, "c", "a")); code != 200 || body != "a again" {
		t.Fatalf("a after reconnecting at the limit: %d %q", code, body)
	}
	if status, _ := tunnelAttempt(t, r.URL, "c", relaytest.HostToken(t, "c")); status != 503 {
		t.Fatalf("a third host after the replacement: %d, want 503", status)
	}
}

// TestForwardedForDoesNotEscapeTheUpgradeRateLimit: the per-IP limit keys on the connection's address, not on a
// header the client writes.
func TestForwardedForDoesNotEscapeTheUpgradeRateLimit(t *testing.T) {
	r := relaytest.StartRelay(t, func(c *relay.Config) { c.AuthFailRate = 0.001; c.AuthFailBurst = 2 })
	var codes []int
	for i := range 4 {
		req, _ := http.NewRequest("GET", r.URL+tunnel.Path, nil)
		req.Header.Set("X-Forwarded-For", fmt.Sprintf("10.0.0.%d", i))
		req.Header.Set("X-Real-Ip", fmt.Sprintf("10.0.1.%d", i))
		req.Header.Set(tunnel.HeaderHostID, "h")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		codes = append(codes, resp.StatusCode)
	}
	if got, want := fmt.Sprint(codes), "[401 401 429 429]"; got != want {
		t.Fatalf("statuses %s, want %s", got, want)
	}
}

// TestStreamSlotsAreReturned: with one stream per host, exchanges that end every way (answered, refused with 429,
// abandoned by their client) each give their slot back.
func TestStreamSlotsAreReturned(t *testing.T) {
	r := relaytest.StartRelay(t, func(c *relay.Config) { c.MaxStreamsPerHost = 1 })
	entered := make(chan struct{}, 1)
	relaytest.StartHost(t, r.URL, "h", http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if req.URL.Path == "/hang" {
			entered <- struct{}{}
			<-req.Context().Done()
			return
		}
		_, _ = io.WriteString(w, "ok")
	}), nil)
	tok := relaytest.ClientToken(t, "c", "h")
	for i := range 20 {
		if code, _ := getText(t, r.URL+"/hosts/h/", tok); code != 200 {
			t.Fatalf("sequential exchange %d: %d", i, code)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "GET", r.URL+"/hosts/h/hang", nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	done := make(chan struct{})
	go func() {
		defer close(done)
		if resp, err := http.DefaultClient.Do(req); err == nil {
			resp.Body.Close()
		}
	}()
	<-entered
	if code, body := getText(t, r.URL+"/hosts/h/", tok); code != 429 || !strings.Contains(body, "too_many_streams") {
		t.Fatalf("second exchange beside a hanging one: %d %s", code, body)
	}
	cancel() // the client goes away: its slot must come back
	<-done
	relaytest.Eventually(t, 5*time.Second, "the abandoned exchange's slot", func() bool {
		code, _ := getText(t, r.URL+"/hosts/h/", tok)
		return code == 200
	})
}
