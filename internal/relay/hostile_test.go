package relay_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/switchboard-relay/switchboard/internal/relay"
	"github.com/switchboard-relay/switchboard/internal/relaytest"
)

// The hostile part of the adversarial suite: a host that registers with a valid host token over the real tunnel
// protocol (the agent's own Listener: WebSocket or raw upgrade, yamux, control stream) but answers the streams the
// relay opens with bytes of its choosing — heads that never end, huge heads, floods, slow reads. Each test checks
// the bound, that the relay keeps serving a well-behaved host meanwhile, and that goroutines return to where they
// were once the attack is over.

// hostile is a host answering every stream by hand.
type hostile struct {
	streams atomic.Int64 // streams answered so far
	ended   atomic.Int64 // answers that returned
}

// startHostile registers id on relayURL and runs answer on every stream the relay opens, with the stream's request
// head already read (req) and the stream to write the answer to. Unless answer means to read nothing more, it
// calls drain, which reads the rest of the stream in the background: then the stream closes itself once the relay
// has closed its side (the agent's eofCloseConn), which fails answer's writes. The stream is closed when answer
// returns. Every answer has returned when the test's cleanup is over (t.Context() ends before it).
func startHostile(t *testing.T, relayURL, id string, answer func(req *http.Request, c net.Conn, drain func())) *hostile {
	t.Helper()
	h := &hostile{}
	ln := relaytest.StartListener(t, relayURL, id, nil)
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			h.streams.Add(1)
			wg.Go(func() {
				defer h.ended.Add(1)
				defer c.Close()
				br := bufio.NewReader(c)
				req, err := http.ReadRequest(br)
				if err != nil {
					return
				}
				// Read on (the request body, then the relay's end of the stream) so that its close is seen.
				drain := func() { wg.Go(func() { _, _ = io.Copy(io.Discard, br) }) }
				answer(req, c, drain)
			})
		}
	})
	t.Cleanup(func() {
		_ = ln.Close()
		wg.Wait()
	})
	return h
}

// writeUntilCut writes head, then chunk over and over until a write fails or more than limit bytes in all were
// written. It returns the bytes written and whether the limit was reached (the relay never cut the stream).
func writeUntilCut(c net.Conn, head string, chunk []byte, limit int64) (written int64, unbounded bool) {
	n, err := io.WriteString(c, head)
	written = int64(n)
	for err == nil {
		if written > limit {
			return written, true
		}
		n, err = c.Write(chunk)
		written += int64(n)
	}
	return written, false
}

// baseline returns the goroutine count once it has settled (a test's earlier connections wind down).
func baseline() int {
	n := runtime.NumGoroutine()
	for range 20 {
		time.Sleep(20 * time.Millisecond)
		n = min(n, runtime.NumGoroutine())
	}
	return n
}

// backToBaseline waits until the goroutine count is at most base plus slack.
func backToBaseline(t *testing.T, base, slack int) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for runtime.NumGoroutine() > base+slack {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("goroutines: %d, want at most %d+%d; stacks:\n%s", runtime.NumGoroutine(), base, slack,
				buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// rawUpgrade sends a WebSocket upgrade for path through the relay on a fresh connection and returns the connection
// and the relay's answer head.
func rawUpgradeConn(t *testing.T, relayURL, path, token string) (net.Conn, *http.Response) {
	t.Helper()
	nc, resp, err := dialUpgrade(relayURL, path, token)
	if nc != nil {
		t.Cleanup(func() { _ = nc.Close() })
	}
	if err != nil {
		t.Fatal(err)
	}
	return nc, resp
}

// dialUpgrade is rawUpgradeConn for a goroutine the test spawned, which must not call t.Fatal: it returns the
// error, and the connection (if any) for the caller to close.
func dialUpgrade(relayURL, path, token string) (net.Conn, *http.Response, error) {
	nc, err := net.Dial("tcp", strings.TrimPrefix(relayURL, "http://"))
	if err != nil {
		return nil, nil, err
	}
	_, err = fmt.Fprintf(nc, "GET %s HTTP/1.1\r\nHost: relay\r\nAuthorization: Bearer %s\r\nConnection: Upgrade\r\n"+
		"Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n", path, token)
	if err != nil {
		return nc, nil, err
	}
	resp, err := http.ReadResponse(bufio.NewReader(nc), nil)
	if err != nil {
		return nc, nil, fmt.Errorf("upgrade %s: %w", path, err)
	}
	return nc, resp, nil
}

// checkGoodHost fails t unless the well-behaved host "good" answers through r.
func checkGoodHost(t *testing.T, c *http.Client, relayURL, token string) {
	t.Helper()
	req, _ := http.NewRequest("GET", relayURL+"/hosts/good/ping", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := c.Do(req)
	if err != nil {
		t.Errorf("good host: %v", err)
		return
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(body) != "pong" {
		t.Errorf("good host: %d %q, want 200 pong", resp.StatusCode, body)
	}
}

var pong = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "pong") })

// TestHostileEndlessUpgradeHead: a host answers WebSocket upgrades with a 101 whose header never ends. The relay
// reads at most MaxResponseHeaderBytes of it, answers 502 upstream_header_too_large and closes the stream, so the
// host cannot push more than the cap plus one stream window; a good host keeps answering meanwhile, and the
// goroutines of the attack are gone afterwards.
func TestHostileEndlessUpgradeHead(t *testing.T) {
	r := relaytest.StartRelay(t, func(c *relay.Config) { c.IdleTimeout = 5 * time.Minute })
	relaytest.StartHost(t, r.URL, "good", pong, nil)
	tok := relaytest.ClientToken(t, "mallory", "*")
	client := newClient(t)
	checkGoodHost(t, client, r.URL, tok)

	const limit = 64 << 20 // far past any bound the relay should keep: the attack stops here if the relay does not
	var (
		mu      sync.Mutex
		written []int64
	)
	chunk := []byte(strings.Repeat("a", 32<<10))
	h := startHostile(t, r.URL, "evil", func(req *http.Request, c net.Conn, drain func()) {
		drain()
		n, unbounded := writeUntilCut(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nX-Junk: ", chunk, limit)
		if unbounded {
			t.Errorf("the relay took %d bytes of a head that never ends", n)
		}
		mu.Lock()
		written = append(written, n)
		mu.Unlock()
	})
	base := baseline()

	var wg sync.WaitGroup
	for range 3 {
		wg.Go(func() {
			nc, resp, err := dialUpgrade(r.URL, "/hosts/evil/ws", tok)
			if nc != nil {
				defer nc.Close()
			}
			if err != nil {
				t.Error(err)
				return
			}
			if resp.StatusCode != http.StatusBadGateway {
				t.Errorf("endless upgrade head: %d, want 502", resp.StatusCode)
				return
			}
			if code, err := errorCodeOf(resp); err != nil || code != "upstream_header_too_large" {
				t.Errorf("endless upgrade head: code %q (%v), want upstream_header_too_large", code, err)
			}
		})
	}
	checkGoodHost(t, client, r.URL, tok)
	wg.Wait()
	relaytest.Eventually(t, 20*time.Second, "the hostile answers to end", func() bool { return h.ended.Load() == 3 })
	mu.Lock()
	for _, n := range written {
		// The cap plus what one yamux stream window can hold before the relay stops granting credit.
		if n > relay.DefaultMaxResponseHeaderBytes+(4<<20)+(64<<10) {
			t.Errorf("host pushed %d bytes of an endless head; want at most the cap plus a stream window", n)
		}
	}
	mu.Unlock()
	if got := metricValue(t, r, "switchboard_bound_cuts_total", "reason", "response_head"); got != 3 {
		t.Errorf("switchboard_bound_cuts_total{reason=response_head} = %v, want 3", got)
	}
	checkGoodHost(t, client, r.URL, tok)
	client.CloseIdleConnections()
	backToBaseline(t, base, 2)
}

// TestHostileTrickledUpgradeHeadClientGone: a host trickles a 101 head that never ends, slowly enough that neither
// the cap nor the (long) idle timeout ends it. When the client goes away the relay closes the stream at once.
func TestHostileTrickledUpgradeHeadClientGone(t *testing.T) {
	r := relaytest.StartRelay(t, func(c *relay.Config) { c.IdleTimeout = 5 * time.Minute })
	tok := relaytest.ClientToken(t, "mallory", "*")
	started := make(chan struct{}, 1)
	h := startHostile(t, r.URL, "evil", func(req *http.Request, c net.Conn, drain func()) {
		drain()
		if _, err := io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nX-Slow: "); err != nil {
			return
		}
		started <- struct{}{}
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for range tick.C {
			if _, err := c.Write([]byte("a")); err != nil {
				return
			}
		}
	})
	relaytest.StartHost(t, r.URL, "good", pong, nil)
	client := newClient(t)

	nc, err := net.Dial("tcp", strings.TrimPrefix(r.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	_, _ = fmt.Fprintf(nc, "GET /hosts/evil/ws HTTP/1.1\r\nHost: relay\r\nAuthorization: Bearer %s\r\nConnection: Upgrade\r\n"+
		"Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n", tok)
	waitChan(t, started, 10*time.Second, "the host to start its answer")
	checkGoodHost(t, client, r.URL, tok)
	_ = nc.Close()
	relaytest.Eventually(t, 20*time.Second, "the stream of a gone client to be closed", func() bool { return h.ended.Load() == 1 })
	checkGoodHost(t, client, r.URL, tok)
}

// TestHostileHugeResponseHeader: hosts answer plain exchanges with a 10 MiB header, many at once. Each exchange
// gets 502 upstream_header_too_large, no host gets to push more than the cap plus a stream window, a good host
// keeps answering, and goroutines return to where they were.
func TestHostileHugeResponseHeader(t *testing.T) {
	r := relaytest.StartRelay(t, nil)
	relaytest.StartHost(t, r.URL, "good", pong, nil)
	tok := relaytest.ClientToken(t, "mallory", "*")
	client := newClient(t)
	checkGoodHost(t, client, r.URL, tok)
	huge := "HTTP/1.1 200 OK\r\nX-Big: " + strings.Repeat("b", 10<<20) + "\r\nContent-Length: 0\r\n\r\n"
	var pushed atomic.Int64 // most bytes one answer got out
	startHostile(t, r.URL, "evil", func(req *http.Request, c net.Conn, drain func()) {
		drain()
		n, _ := io.WriteString(c, huge)
		for {
			old := pushed.Load()
			if int64(n) <= old || pushed.CompareAndSwap(old, int64(n)) {
				break
			}
		}
	})
	base := baseline()

	const parallel = 16
	var wg sync.WaitGroup
	for range parallel {
		wg.Go(func() {
			req, _ := http.NewRequest("GET", r.URL+"/hosts/evil/x", nil)
			req.Header.Set("Authorization", "Bearer "+tok)
			resp, err := client.Do(req)
			if err != nil {
				t.Errorf("huge header: %v", err)
				return
			}
			if resp.StatusCode != http.StatusBadGateway {
				resp.Body.Close()
				t.Errorf("huge header: %d, want 502", resp.StatusCode)
				return
			}
			if code, err := errorCodeOf(resp); err != nil || code != "upstream_header_too_large" {
				t.Errorf("huge header: code %q (%v), want upstream_header_too_large", code, err)
			}
		})
	}
	checkGoodHost(t, client, r.URL, tok)
	wg.Wait()
	if got := metricValue(t, r, "switchboard_bound_cuts_total", "reason", "response_head"); got != parallel {
		t.Errorf("switchboard_bound_cuts_total{reason=response_head} = %v, want %d", got, parallel)
	}
	if n := pushed.Load(); n >= 10<<20 {
		t.Errorf("a host pushed its whole %d-byte head; want the stream cut at the cap", n)
	}
	checkGoodHost(t, client, r.URL, tok)
	client.CloseIdleConnections()
	backToBaseline(t, base, 2)
}
