package relay_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/switchboard-relay/switchboard/agent"
	"github.com/switchboard-relay/switchboard/internal/directory"
	"github.com/switchboard-relay/switchboard/internal/relay"
	"github.com/switchboard-relay/switchboard/internal/relaytest"
)

// tap is a network attacker between replicas: a TCP relay to a replica's internal listener that records every
// byte sent to it, per connection.
type tap struct {
	ln     net.Listener
	target string
	wg     sync.WaitGroup

	mu    sync.Mutex
	conns []net.Conn
	sent  []*bytes.Buffer // one per accepted connection, guarded by mu
}

// startTap listens on loopback and relays every connection to target.
func startTap(t *testing.T, target string) *tap {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	tp := &tap{ln: ln, target: target}
	tp.wg.Go(tp.acceptLoop)
	t.Cleanup(func() {
		_ = ln.Close()
		tp.mu.Lock()
		for _, c := range tp.conns {
			_ = c.Close()
		}
		tp.mu.Unlock()
		tp.wg.Wait()
	})
	return tp
}

func (tp *tap) acceptLoop() {
	for {
		c, err := tp.ln.Accept()
		if err != nil {
			return
		}
		up, err := net.Dial("tcp", tp.target)
		if err != nil {
			_ = c.Close()
			continue
		}
		buf := &bytes.Buffer{}
		tp.mu.Lock()
		tp.conns = append(tp.conns, c, up)
		tp.sent = append(tp.sent, buf)
		tp.mu.Unlock()
		tp.wg.Go(func() {
			_, _ = io.Copy(up, io.TeeReader(c, lockedWriter{&tp.mu, buf}))
			_ = up.Close()
		})
		tp.wg.Go(func() {
			_, _ = io.Copy(c, up)
			_ = c.Close()
		})
	}
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// requests parses every request captured so far, bodies included.
func (tp *tap) requests(t *testing.T) []capturedRequest {
	t.Helper()
	tp.mu.Lock()
	var raws [][]byte
	for _, b := range tp.sent {
		raws = append(raws, bytes.Clone(b.Bytes()))
	}
	tp.mu.Unlock()
	var out []capturedRequest
	for _, raw := range raws {
		br := bufio.NewReader(bytes.NewReader(raw))
		for {
			r, err := http.ReadRequest(br)
			if err != nil {
				break
			}
			body, err := io.ReadAll(r.Body)
			if err != nil {
				break
			}
			out = append(out, capturedRequest{method: r.Method, uri: r.RequestURI, host: r.Host, header: r.Header, body: body})
		}
	}
	return out
}

type capturedRequest struct {
	method, uri, host string
	header            http.Header
	body              []byte
}

// raw serializes the request again, with body as its body (sized).
func (c capturedRequest) raw(body []byte) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s HTTP/1.1\r\nHost: %s\r\n", c.method, c.uri, c.host)
	for k, vs := range c.header {
		if k == "Content-Length" || k == "Transfer-Encoding" || k == "Connection" {
			continue
		}
		for _, v := range vs {
			fmt.Fprintf(&b, "%s: %s\r\n", k, v)
		}
	}
	fmt.Fprintf(&b, "Content-Length: %d\r\nConnection: close\r\n\r\n%s", len(body), body)
	return b.String()
}

// tappedDir is a directory that gives its replica the tap's URL as peer's internal URL.
type tappedDir struct {
	*directory.Memory
	peer, url string
}

func (d tappedDir) PeerURL(ctx context.Context, replica string) (string, error) {
	if replica == d.peer {
		return d.url, nil
	}
	return d.Memory.PeerURL(ctx, replica)
}

func (d tappedDir) ListPeers(ctx context.Context) (map[string]string, error) {
	m, err := d.Memory.ListPeers(ctx)
	if _, ok := m[d.peer]; ok {
		m[d.peer] = d.url
	}
	return m, err
}

// sendRaw sends one raw request to addr and returns the status and error code of the answer.
func sendRaw(t *testing.T, addr, raw string) (int, string) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := io.WriteString(c, raw); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var e struct {
		Error struct{ Code string } `json:"error"`
	}
	_ = json.NewDecoder(resp.Body).Decode(&e)
	return resp.StatusCode, e.Error.Code
}

// TestHopReplayRefused: an attacker on the network between replicas captures real hops (a POST through the
// ReverseProxy forward, a GET through the lean forward) and sends them again within the acceptance window: as
// they were, with another body, with a forged X-Forwarded-For, and to another Host. Every replay is refused and
// counted, the host sees none of them, and the replicas keep forwarding.
func TestHopReplayRefused(t *testing.T) {
	dir := directory.NewMemory()
	t.Cleanup(func() { _ = dir.Close() })
	a := relaytest.StartRelayOn(t, dir, nil)
	tp := startTap(t, a.Internal.Listener.Addr().String())
	b := relaytest.StartRelayOn(t, tappedDir{Memory: dir, peer: a.ID, url: "http://" + tp.ln.Addr().String()}, nil)
	host := &recordingHost{}
	relaytest.StartHost(t, a.URL, "h1", host, nil)
	tok := relaytest.ClientToken(t, "alice", "h1")
	client := newClient(t)

	req, _ := http.NewRequest("POST", b.URL+"/hosts/h1/pay", strings.NewReader("amount=1"))
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if code, _ := getText(t, b.URL+"/hosts/h1/read", tok); resp.StatusCode != 200 || code != 200 {
		t.Fatalf("forwarded POST %d, GET %d; want 200", resp.StatusCode, code)
	}
	if seen := host.take(); len(seen) != 2 || seen[0].body != "amount=1" {
		t.Fatalf("host saw %d requests (%v), want the POST and the GET", len(seen), seen)
	}
	captured := tp.requests(t)
	if len(captured) != 2 {
		t.Fatalf("tap captured %d hops, want 2", len(captured))
	}

	internal := a.Internal.Listener.Addr().String()
	var wantReplayed, wantForged float64
	for _, c := range captured {
		if c.header.Get("Switchboard-Hop") == "" {
			t.Fatalf("captured %s %s without a hop header", c.method, c.uri)
		}
		forgedXFF := c
		forgedXFF.header = c.header.Clone()
		forgedXFF.header.Set("X-Forwarded-For", "6.6.6.6")
		otherHost := c
		otherHost.host = "evil.example"
		for _, tc := range []struct {
			name string
			raw  string
		}{
			{"as captured", c.raw(c.body)},
			{"another body", c.raw([]byte("amount=1000000"))},
			{"forged X-Forwarded-For", forgedXFF.raw(c.body)},
			{"another Host", otherHost.raw(c.body)},
		} {
			if code, ecode := sendRaw(t, internal, tc.raw); code != http.StatusForbidden || ecode != "forbidden" {
				t.Errorf("%s %s replayed %s: %d %s, want 403 forbidden", c.method, c.uri, tc.name, code, ecode)
			}
		}
		wantReplayed += 2
		wantForged += 2
	}
	if seen := host.take(); len(seen) != 0 {
		t.Fatalf("a replayed hop reached the host: %v", seen[0])
	}
	if n := metricValue(t, a.Relay, "switchboard_hop_rejections_total", "reason", "replayed"); n != wantReplayed {
		t.Errorf("replayed rejections = %v, want %v", n, wantReplayed)
	}
	if n := metricValue(t, a.Relay, "switchboard_hop_rejections_total", "reason", "bad_signature"); n != wantForged {
		t.Errorf("bad_signature rejections = %v, want %v", n, wantForged)
	}
	// The replicas keep forwarding: every hop has a fresh nonce.
	for i := range 3 {
		if code, _ := getText(t, b.URL+"/hosts/h1/again", tok); code != 200 {
			t.Fatalf("forwarded GET %d after the replays: %d", i, code)
		}
	}
}

// TestHopNonceCacheBounded: a replica remembers at most HopNonceCache hop nonces; past that, forwarded requests are
// refused with 503 replica_busy (counted) instead of forgetting a nonce early, while clients of its own tunnels are
// served as before.
func TestHopNonceCacheBounded(t *testing.T) {
	dir := directory.NewMemory()
	t.Cleanup(func() { _ = dir.Close() })
	a := relaytest.StartRelayOn(t, dir, func(c *relay.Config) { c.HopNonceCache = 3 })
	b := relaytest.StartRelayOn(t, dir, nil)
	relaytest.StartHost(t, a.URL, "h1", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "ok")
	}), nil)
	tok := relaytest.ClientToken(t, "alice", "h1")
	for i := range 3 {
		if code, body := getText(t, b.URL+"/hosts/h1/x", tok); code != 200 {
			t.Fatalf("forwarded GET %d: %d %s", i, code, body)
		}
	}
	code, body := getText(t, b.URL+"/hosts/h1/x", tok)
	if code != http.StatusServiceUnavailable || !strings.Contains(body, `"replica_busy"`) {
		t.Fatalf("forwarded GET past the cap: %d %s, want 503 replica_busy", code, body)
	}
	if n := metricValue(t, a.Relay, "switchboard_hop_rejections_total", "reason", "nonce_cache_full"); n != 1 {
		t.Errorf("nonce_cache_full rejections = %v, want 1", n)
	}
	if n := metricValue(t, a.Relay, "switchboard_hop_nonces", "", ""); n != 3 {
		t.Errorf("hop nonces held = %v, want 3", n)
	}
	if code, body := getText(t, a.URL+"/hosts/h1/x", tok); code != 200 || body != "ok" {
		t.Fatalf("local GET on the replica whose cache is full: %d %q", code, body)
	}
}

// TestPassOnKeepsForwardingHeaders: a forwarded exchange that a draining replica passes on to the host's new owner
// keeps the forwarding headers the first replica set and signed (the client's address, the Host it used, its
// scheme), rather than describing the draining replica as the client.
func TestPassOnKeepsForwardingHeaders(t *testing.T) {
	dir := directory.NewMemory()
	t.Cleanup(func() { _ = dir.Close() })
	a := relaytest.StartRelayOn(t, dir, func(c *relay.Config) { c.DrainJitter = 10 * time.Millisecond })
	b := relaytest.StartRelayOn(t, dir, nil)
	entered, release := make(chan struct{}), make(chan struct{})
	host := &recordingHost{}
	mux := http.NewServeMux()
	mux.HandleFunc("/slow", func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "started ")
		w.(http.Flusher).Flush()
		close(entered)
		select {
		case <-release:
		case <-r.Context().Done():
		}
	})
	mux.Handle("/", host)
	relaytest.StartHost(t, a.URL, "mv", mux, func(c *agent.Config) { c.Relays = []string{a.URL, b.URL} })
	tok := relaytest.ClientToken(t, "c", "mv")

	// An exchange in flight keeps A's tunnel retiring, not closed, while A drains and the host moves to B.
	slowDone := make(chan struct{})
	go func() {
		defer close(slowDone)
		req, _ := http.NewRequest("GET", a.URL+"/hosts/mv/slow", nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		if resp, err := http.DefaultClient.Do(req); err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	}()
	<-entered
	drained := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		drained <- a.Drain(ctx)
	}()
	relaytest.Eventually(t, 10*time.Second, "directory flipped to B", func() bool {
		e, err := dir.Lookup(context.Background(), "mv")
		return err == nil && e.Replica == b.ID
	})

	// A retires its old tunnel once it sees the host moved: from then on its own clients are forwarded to B.
	relaytest.Eventually(t, 10*time.Second, "A forwards to B", func() bool {
		_, _ = getText(t, a.URL+"/hosts/mv/probe", tok)
		return metricValue(t, a.Relay, "switchboard_forwards_total", "outcome", "ok") > 0
	})
	relaytest.Eventually(t, 10*time.Second, "B counted A's forwards", func() bool {
		return metricValue(t, b.Relay, "switchboard_forwards_total", "outcome", "received") > 0
	})
	host.take()
	before := metricValue(t, b.Relay, "switchboard_forwards_total", "outcome", "received")

	// A third replica's hop reaches A, which passes it on to B.
	internal := strings.TrimPrefix(a.InternalURL, "http://")
	fwd := http.Header{"X-Forwarded-For": {"203.0.113.7"}, "X-Forwarded-Host": {"front.example"}, "X-Forwarded-Proto": {"https"}}
	uri := "/hosts/mv/moved"
	raw := "GET " + uri + " HTTP/1.1\r\nHost: " + internal + "\r\nX-Forwarded-For: 203.0.113.7\r\n" +
		"X-Forwarded-Host: front.example\r\nX-Forwarded-Proto: https\r\nSwitchboard-Hop-Subject: c\r\n" +
		"Switchboard-Hop: " + hopValue(relaytest.ClusterSecret, "C", time.Now(), newNonce(), "GET", uri, internal, "c", fwd) +
		"\r\nConnection: close\r\n\r\n"
	if code, ecode := sendRaw(t, internal, raw); code != 200 {
		t.Fatalf("hop to the draining replica: %d %s", code, ecode)
	}
	seen := host.take()
	if len(seen) != 1 {
		t.Fatalf("host saw %d requests, want 1", len(seen))
	}
	for k, want := range fwd {
		if got := seen[0].header[k]; len(got) != 1 || got[0] != want[0] {
			t.Errorf("passed-on exchange: host saw %s %q, want %q", k, got, want)
		}
	}
	if got := seen[0].header.Get(relay.HeaderSubject); got != "c" {
		t.Errorf("passed-on exchange: subject %q, want c", got)
	}
	// Counted when B's handler returns, after the answer's head reached the test.
	relaytest.Eventually(t, 10*time.Second, "B counted the exchange A passed on", func() bool {
		return metricValue(t, b.Relay, "switchboard_forwards_total", "outcome", "received") == before+1
	})
	close(release)
	<-slowDone
	if err := <-drained; err != nil {
		t.Fatalf("drain: %v", err)
	}
}

// TestHopAfterTunnelMovedAway: a hop that reaches a replica after the host's tunnel there has retired and closed —
// the sender read the directory just before the host moved — is passed on to the new owner, which the eviction
// notice and the directory name, instead of answered 503 host_offline. (Seen as rare failed exchanges of
// TestClusterDrainUnderLoad.)
func TestHopAfterTunnelMovedAway(t *testing.T) {
	dir := directory.NewMemory()
	t.Cleanup(func() { _ = dir.Close() })
	a := relaytest.StartRelayOn(t, dir, func(c *relay.Config) { c.DrainJitter = 10 * time.Millisecond })
	b := relaytest.StartRelayOn(t, dir, nil)
	relaytest.StartHost(t, a.URL, "mv", textHandler("mv"), func(c *agent.Config) { c.Relays = []string{a.URL, b.URL} })

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := a.Drain(ctx); err != nil {
		t.Fatalf("drain: %v", err)
	}
	relaytest.Eventually(t, 10*time.Second, "the directory names B, and A holds no tunnel", func() bool {
		e, err := dir.Lookup(context.Background(), "mv")
		return err == nil && e.Replica == b.ID && metricValue(t, a.Relay, "switchboard_tunnels", "", "") == 0
	})

	internal := strings.TrimPrefix(a.InternalURL, "http://")
	uri := "/hosts/mv/"
	raw := "GET " + uri + " HTTP/1.1\r\nHost: " + internal + "\r\nSwitchboard-Hop-Subject: c\r\n" +
		"Switchboard-Hop: " + hopValue(relaytest.ClusterSecret, "C", time.Now(), newNonce(), "GET", uri, internal, "c", http.Header{}) +
		"\r\nConnection: close\r\n\r\n"
	if code, ecode := sendRaw(t, internal, raw); code != 200 {
		t.Fatalf("hop to a replica whose tunnel moved away: %d %s, want 200 (passed on to B)", code, ecode)
	}
}
