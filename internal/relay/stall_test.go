package relay_test

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/switchboard-relay/switchboard/internal/auth"
	"github.com/switchboard-relay/switchboard/internal/directory"
	"github.com/switchboard-relay/switchboard/internal/relay"
	"github.com/switchboard-relay/switchboard/internal/relaytest"
)

// Clients that never read, hosts that never read, and malformed request bodies: the bounds of the data path that
// are not about a host's answer head (hostile_test.go).

const stall = 200 * time.Millisecond

// wsFrame returns a binary WebSocket frame with n bytes of payload (n < 65536), masked with a zero key when masked
// (client to server; the zero key leaves the payload as it is).
func wsFrame(n int, masked bool) []byte {
	f := []byte{0x82, 126, 0, 0}
	binary.BigEndian.PutUint16(f[2:], uint16(n))
	if masked {
		f[1] |= 0x80
		f = append(f, 0, 0, 0, 0)
	}
	return append(f, make([]byte, n)...)
}

// switching is a 101 answer to a WebSocket upgrade, as a host writes it.
const switching = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
	"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"

// startFlood registers a hostile host id that answers a WebSocket upgrade and then sends frames as fast as the
// relay takes them; it reports the bytes it got out when the relay cut the stream.
func startFlood(t *testing.T, relayURL, id string) <-chan int64 {
	flooded := make(chan int64, 1)
	startHostile(t, relayURL, id, func(req *http.Request, c net.Conn, drain func()) {
		drain()
		n, unbounded := writeUntilCut(c, switching, wsFrame(16<<10, false), 1<<30)
		if unbounded {
			t.Errorf("the relay took %d bytes for a client that reads nothing", n)
		}
		flooded <- n
	})
	return flooded
}

// startMemoryPair starts replicas A and B on one memory directory, adjusted by mutateA and mutateB.
func startMemoryPair(t *testing.T, mutateA, mutateB func(*relay.Config)) (a, b *relaytest.Replica, dir *directory.Memory) {
	t.Helper()
	dir = directory.NewMemory()
	t.Cleanup(func() { _ = dir.Close() })
	a = relaytest.StartRelayOn(t, dir, mutateA)
	b = relaytest.StartRelayOn(t, dir, mutateB)
	return a, b, dir
}

// TestStalledWebSocketClientIsCut: a client that upgrades and then reads nothing while the host floods it is cut
// after StallTimeout, the host's stream is closed, and another host keeps answering meanwhile.
func TestStalledWebSocketClientIsCut(t *testing.T) {
	r := relaytest.StartRelay(t, func(c *relay.Config) { c.StallTimeout = stall })
	relaytest.StartHost(t, r.URL, "good", pong, nil)
	tok := relaytest.ClientToken(t, "mallory", "*")
	flooded := startFlood(t, r.URL, "flood")
	_, resp := rawUpgradeConn(t, r.URL, "/hosts/flood/ws", tok)
	if resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade: %d, want 101", resp.StatusCode)
	}
	// The client reads nothing from here on.
	checkGoodHost(t, newClient(t), r.URL, tok)
	n := waitChan(t, flooded, 30*time.Second, "the relay to cut a WebSocket whose client reads nothing")
	t.Logf("the host got %d bytes out before the cut", n)
	if got := metricValue(t, r, "switchboard_bound_cuts_total", "reason", "stalled_client"); got != 1 {
		t.Errorf("switchboard_bound_cuts_total{reason=stalled_client} = %v, want 1", got)
	}
	checkGoodHost(t, newClient(t), r.URL, tok)
}

// TestStalledWebSocketHostIsCut: a host that accepts an upgrade and then reads nothing while the client sends is
// cut after StallTimeout, and the client's connection is closed (after the close grace).
func TestStalledWebSocketHostIsCut(t *testing.T) {
	r := relaytest.StartRelay(t, func(c *relay.Config) { c.StallTimeout = stall })
	tok := relaytest.ClientToken(t, "mallory", "*")
	startHostile(t, r.URL, "deaf", func(req *http.Request, c net.Conn, drain func()) {
		if _, err := io.WriteString(c, switching); err != nil {
			return
		}
		<-t.Context().Done() // reads nothing, ever
	})
	nc, resp := rawUpgradeConn(t, r.URL, "/hosts/deaf/ws", tok)
	if resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade: %d, want 101", resp.StatusCode)
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	defer nc.Close()
	wg.Go(func() {
		frame := wsFrame(16<<10, true)
		for {
			if _, err := nc.Write(frame); err != nil {
				return
			}
		}
	})
	readEnd := make(chan error, 1)
	wg.Go(func() {
		_, err := io.Copy(io.Discard, nc)
		readEnd <- err
	})
	waitChan(t, readEnd, 30*time.Second, "the relay to close the client of a host that reads nothing")
	if got := metricValue(t, r, "switchboard_bound_cuts_total", "reason", "stalled_host"); got != 1 {
		t.Errorf("switchboard_bound_cuts_total{reason=stalled_host} = %v, want 1", got)
	}
}

// TestForwardedStalledClientIsCut: a client of replica B that stops reading an answer forwarded from replica A
// (lean forward, ReverseProxy forward, WebSocket) is cut by B after B's StallTimeout, which ends the host's
// exchange on A; A's own stall timeout is the long default, so the cut is B's.
func TestForwardedStalledClientIsCut(t *testing.T) {
	a, b, _ := startMemoryPair(t, nil, func(c *relay.Config) { c.StallTimeout = stall })
	done := make(chan string, 2)
	relaytest.StartHost(t, a.URL, "big", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		buf := make([]byte, 32<<10)
		for range (1 << 30) / len(buf) {
			if _, err := w.Write(buf); err != nil {
				break
			}
		}
		done <- r.Method
	}), nil)
	flooded := startFlood(t, a.URL, "flood")
	tok := relaytest.ClientToken(t, "mallory", "*")
	cuts := 0.0
	for _, method := range []string{"GET", "POST"} { // GET takes the lean forward, POST ReverseProxy
		t.Run(method, func(t *testing.T) {
			var body io.Reader // a GET without a body takes the lean forward
			if method == "POST" {
				body = strings.NewReader("x")
			}
			req, _ := http.NewRequest(method, b.URL+"/hosts/big/download", body)
			req.Header.Set("Authorization", "Bearer "+tok)
			resp, err := newClient(t).Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			if resp.StatusCode != 200 {
				t.Fatalf("download via B: %d", resp.StatusCode)
			}
			// The client reads nothing of the body.
			if got := waitChan(t, done, 30*time.Second, "B to cut a forwarded download its client stopped reading"); got != method {
				t.Fatalf("handler of %s ended, want %s", got, method)
			}
			// The cut is counted when B's write returns, which can be just after the host saw the end (B's failed
			// write cancels the request, which closes the peer connection at once).
			cuts++
			relaytest.Eventually(t, 10*time.Second, "B to count the stalled client", func() bool {
				return metricValue(t, b.Relay, "switchboard_bound_cuts_total", "reason", "stalled_client") == cuts
			})
		})
	}
	t.Run("websocket", func(t *testing.T) {
		_, resp := rawUpgradeConn(t, b.URL, "/hosts/flood/ws", tok)
		if resp.StatusCode != http.StatusSwitchingProtocols {
			t.Fatalf("upgrade via B: %d, want 101", resp.StatusCode)
		}
		waitChan(t, flooded, 30*time.Second, "B to cut a forwarded WebSocket whose client reads nothing")
		relaytest.Eventually(t, 10*time.Second, "B to count the stalled client", func() bool {
			return metricValue(t, b.Relay, "switchboard_bound_cuts_total", "reason", "stalled_client") == cuts+1
		})
	})
}

// TestMalformedChunkedBodyIsBadRequest: a client's request body with broken chunking is the client's fault: 400
// bad_request, locally and through a forward, not 502 blamed on the host.
func TestMalformedChunkedBodyIsBadRequest(t *testing.T) {
	a, b, _ := startMemoryPair(t, nil, nil)
	relaytest.StartHost(t, a.URL, "good", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		_, _ = io.WriteString(w, "read")
	}), nil)
	tok := relaytest.ClientToken(t, "mallory", "*")
	for name, r := range map[string]*relaytest.Replica{"local": a, "forwarded": b} {
		t.Run(name, func(t *testing.T) {
			nc, err := net.Dial("tcp", strings.TrimPrefix(r.URL, "http://"))
			if err != nil {
				t.Fatal(err)
			}
			defer nc.Close()
			_, _ = fmt.Fprintf(nc, "POST /hosts/good/up HTTP/1.1\r\nHost: relay\r\nAuthorization: Bearer %s\r\n"+
				"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nzz-not-hex\r\n", tok)
			resp, err := http.ReadResponse(bufio.NewReader(nc), nil)
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != http.StatusBadRequest {
				t.Fatalf("malformed chunked body: %d, want 400", resp.StatusCode)
			}
			if code := errorCode(t, resp); code != "bad_request" {
				t.Fatalf("malformed chunked body: code %q, want bad_request", code)
			}
		})
	}
	// A counts its own client's body and the forwarded one B cut short; B only its client's.
	if got := metricValue(t, b.Relay, "switchboard_bound_cuts_total", "reason", "client_body"); got != 1 {
		t.Errorf("B's switchboard_bound_cuts_total{reason=client_body} = %v, want 1", got)
	}
	if got := metricValue(t, a.Relay, "switchboard_bound_cuts_total", "reason", "client_body"); got < 1 {
		t.Errorf("A's switchboard_bound_cuts_total{reason=client_body} = %v, want at least 1", got)
	}
}

// TestHostilePeerHugeHead: a "replica" that the directory names as a host's owner answers forwarded exchanges with
// a 1 MiB header. The forwarding replica reads at most MaxResponseHeaderBytes plus a peer's slack of it, on the lean
// forward and on ReverseProxy's, and answers 502 upstream_header_too_large.
func TestHostilePeerHugeHead(t *testing.T) {
	dir := directory.NewMemory()
	t.Cleanup(func() { _ = dir.Close() })
	peer := newHugeHeadPeer(t)
	b := relaytest.StartRelayOn(t, dir, nil)
	ctx := context.Background()
	if err := dir.Advertise(ctx, "P", peer); err != nil {
		t.Fatal(err)
	}
	if _, _, err := dir.Claim(ctx, "ghost", "P", directory.Metadata{}); err != nil {
		t.Fatal(err)
	}
	relaytest.StartHost(t, b.URL, "good", pong, nil)
	tok := relaytest.ClientToken(t, "mallory", "*")
	for _, method := range []string{"GET", "POST"} {
		req, _ := http.NewRequest(method, b.URL+"/hosts/ghost/x", strings.NewReader("x"))
		req.Header.Set("Authorization", "Bearer "+tok)
		resp, err := newClient(t).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != http.StatusBadGateway {
			resp.Body.Close()
			t.Fatalf("%s from a peer with a huge head: %d, want 502", method, resp.StatusCode)
		}
		if code := errorCode(t, resp); code != "upstream_header_too_large" {
			t.Fatalf("%s from a peer with a huge head: code %q, want upstream_header_too_large", method, code)
		}
	}
	if got := metricValue(t, b.Relay, "switchboard_bound_cuts_total", "reason", "response_head"); got != 2 {
		t.Errorf("switchboard_bound_cuts_total{reason=response_head} = %v, want 2", got)
	}
	checkGoodHost(t, newClient(t), b.URL, tok)
}

// newHugeHeadPeer serves every request with a 1 MiB response header and returns its URL.
func newHugeHeadPeer(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("X-Big", strings.Repeat("b", 1<<20))
		_, _ = io.WriteString(w, "x")
	})}
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(ln) }()
	t.Cleanup(func() {
		_ = srv.Close()
		<-done
	})
	return "http://" + ln.Addr().String()
}

// TestRelayBusyAtMaxExchanges: the relay-wide cap on exchanges in flight, which with StreamWindow bounds what
// clients can make the relay buffer. At the cap, an exchange for any host gets 503 relay_busy with Retry-After;
// once exchanges end, the relay serves again.
func TestRelayBusyAtMaxExchanges(t *testing.T) {
	r := relaytest.StartRelay(t, func(c *relay.Config) { c.MaxExchanges = 2 })
	release := make(chan struct{})
	entered := make(chan struct{}, 2)
	relaytest.StartHost(t, r.URL, "slow", http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		entered <- struct{}{}
		<-release
	}), nil)
	relaytest.StartHost(t, r.URL, "good", pong, nil)
	tok := relaytest.ClientToken(t, "mallory", "*")
	client := newClient(t)
	var wg sync.WaitGroup
	for range 2 {
		wg.Go(func() {
			req, _ := http.NewRequest("GET", r.URL+"/hosts/slow/x", nil)
			req.Header.Set("Authorization", "Bearer "+tok)
			resp, err := client.Do(req)
			if err != nil {
				t.Errorf("slow exchange: %v", err)
				return
			}
			resp.Body.Close()
		})
	}
	for range 2 {
		waitChan(t, entered, 10*time.Second, "the slow exchanges to reach their host")
	}
	req, _ := http.NewRequest("GET", r.URL+"/hosts/good/ping", nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("exchange at the cap: %d Retry-After %q, want 503 with Retry-After", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
	if code := errorCode(t, resp); code != "relay_busy" {
		t.Fatalf("exchange at the cap: code %q, want relay_busy", code)
	}
	if got := metricValue(t, r, "switchboard_exchanges_relay_busy_total", "", ""); got != 1 {
		t.Errorf("switchboard_exchanges_relay_busy_total = %v, want 1", got)
	}
	close(release)
	wg.Wait()
	checkGoodHost(t, client, r.URL, tok)
}

// TestStreamWindowBelowMinimumRefused: a window yamux cannot use is refused by New, not papered over.
func TestStreamWindowBelowMinimumRefused(t *testing.T) {
	if _, err := relay.New(relay.Config{Verifier: auth.AllowAll(), StreamWindow: 1 << 10}); err == nil {
		t.Fatal("relay.New accepted a 1 KiB stream window")
	}
}

// TestForwardedHostileHugeHead: a hostile host on replica A answers with a 10 MiB header; a client of replica B
// gets A's 502 upstream_header_too_large through the forward, on the lean forward, ReverseProxy's, and for a
// WebSocket upgrade.
func TestForwardedHostileHugeHead(t *testing.T) {
	a, b, _ := startMemoryPair(t, nil, nil)
	huge := "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nX-Big: " +
		strings.Repeat("b", 10<<20) + "\r\n\r\n"
	startHostile(t, a.URL, "evil", func(req *http.Request, c net.Conn, drain func()) {
		drain()
		_, _ = io.WriteString(c, huge)
	})
	tok := relaytest.ClientToken(t, "mallory", "*")
	for _, method := range []string{"GET", "POST"} {
		req, _ := http.NewRequest(method, b.URL+"/hosts/evil/x", strings.NewReader("x"))
		req.Header.Set("Authorization", "Bearer "+tok)
		resp, err := newClient(t).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != http.StatusBadGateway {
			resp.Body.Close()
			t.Fatalf("%s via B: %d, want 502", method, resp.StatusCode)
		}
		if code := errorCode(t, resp); code != "upstream_header_too_large" {
			t.Fatalf("%s via B: code %q, want upstream_header_too_large", method, code)
		}
	}
	nc, resp := rawUpgradeConn(t, b.URL, "/hosts/evil/ws", tok)
	defer nc.Close()
	if resp.StatusCode != http.StatusBadGateway {
		t.Fatalf("upgrade via B: %d, want 502", resp.StatusCode)
	}
	if code := errorCode(t, resp); code != "upstream_header_too_large" {
		t.Fatalf("upgrade via B: code %q, want upstream_header_too_large", code)
	}
	if got := metricValue(t, a.Relay, "switchboard_bound_cuts_total", "reason", "response_head"); got != 3 {
		t.Errorf("A's switchboard_bound_cuts_total{reason=response_head} = %v, want 3", got)
	}
}
