package relay_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/hashicorp/yamux"
	"github.com/redis/rueidis"

	"github.com/switchboard-relay/switchboard/agent"
	"github.com/switchboard-relay/switchboard/internal/directory"
	"github.com/switchboard-relay/switchboard/internal/redistest"
	"github.com/switchboard-relay/switchboard/internal/relay"
	"github.com/switchboard-relay/switchboard/internal/relaytest"
	"github.com/switchboard-relay/switchboard/internal/tunnel"
)

var clusterSeq atomic.Int64

// startPair starts replicas A and B on one fresh redis-server; mutateB adjusts B's config. It returns the Redis
// address too.
func startPair(t *testing.T, mutateB func(*relay.Config)) (a, b *relaytest.Replica, addr string) {
	t.Helper()
	addr, _ = redistest.Start(t)
	prefix := fmt.Sprintf("c%d:", clusterSeq.Add(1))
	a = relaytest.StartRedisReplica(t, []string{addr}, prefix, "A", nil)
	b = relaytest.StartRedisReplica(t, []string{addr}, prefix, "B", mutateB)
	return a, b, addr
}

// metricValue returns the value of the counter or gauge name whose label has value (any series if label is "").
func metricValue(t *testing.T, r *relaytest.Relay, name, label, value string) float64 {
	t.Helper()
	mfs, err := r.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			match := label == ""
			for _, l := range m.GetLabel() {
				if l.GetName() == label && l.GetValue() == value {
					match = true
				}
			}
			if !match {
				continue
			}
			if c := m.GetCounter(); c != nil {
				return c.GetValue()
			}
			return m.GetGauge().GetValue()
		}
	}
	return 0
}

// seenHeaders is a host handler that reports the request line and the headers that matter for hygiene.
func seenHeaders(w http.ResponseWriter, r *http.Request) {
	_, _ = fmt.Fprintf(w, "uri=%s sub=%s xff=%s auth=%q hop=%q hopsub=%q", r.URL.RequestURI(), r.Header.Get(relay.HeaderSubject),
		r.Header.Get("X-Forwarded-For"), r.Header.Get("Authorization"), r.Header.Get("Switchboard-Hop"),
		r.Header.Get("Switchboard-Hop-Subject"))
}

// TestClusterForwardHTTPSSEWebSocket: a host connected to replica A is reachable through replica B for a plain
// GET, an SSE stream (events arrive as they are produced) and a WebSocket, with the same header hygiene as locally.
func TestClusterForwardHTTPSSEWebSocket(t *testing.T) {
	a, b, _ := startPair(t, nil)
	sseStep := make(chan struct{})
	mux := http.NewServeMux()
	mux.HandleFunc("/get", seenHeaders)
	mux.HandleFunc("/sse", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		_, _ = io.WriteString(w, "data: one\n\n")
		w.(http.Flusher).Flush()
		select {
		case <-sseStep:
		case <-r.Context().Done():
			return
		}
		_, _ = io.WriteString(w, "data: two\n\n")
	})
	echo := newEchoUpstream()
	mux.Handle("/ws", echo)
	relaytest.StartHost(t, a.URL, "h1", mux, nil)
	tok := relaytest.ClientToken(t, "alice", "h1")

	code, body := getText(t, b.URL+"/hosts/h1/get?x=1&access_token="+tok, "")
	if want := `uri=/get?x=1 sub=alice xff=127.0.0.1 auth="" hop="" hopsub=""`; code != 200 || body != want {
		t.Fatalf("GET via B: %d %q, want 200 %q", code, body, want)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", b.URL+"/hosts/h1/sse", nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	req.Header.Set("Accept", "text/event-stream")
	resp, err := newClient(t).Do(req)
	if err != nil {
		t.Fatalf("SSE via B: %v", err)
	}
	defer resp.Body.Close()
	br := bufio.NewReader(resp.Body)
	if line, err := br.ReadString('\n'); err != nil || line != "data: one\n" {
		t.Fatalf("first SSE event before the second was produced: %q, %v", line, err)
	}
	close(sseStep)
	rest, _ := io.ReadAll(br)
	if string(rest) != "\ndata: two\n\n" {
		t.Fatalf("rest of the SSE stream %q", rest)
	}

	c, _, err := dialWS(t, "ws"+strings.TrimPrefix(b.URL, "http")+"/hosts/h1/ws", tok)
	if err != nil {
		t.Fatalf("WebSocket via B: %v", err)
	}
	for _, m := range []struct {
		typ  websocket.MessageType
		data string
	}{{websocket.MessageText, "hello"}, {websocket.MessageBinary, "\x00\x01\xff"}} {
		if err := c.Write(ctx, m.typ, []byte(m.data)); err != nil {
			t.Fatalf("write: %v", err)
		}
		typ, got, err := c.Read(ctx)
		if err != nil || typ != m.typ || string(got) != m.data {
			t.Fatalf("echo via B: %v %q %v, want %v %q", typ, got, err, m.typ, m.data)
		}
	}
	if r := <-echo.requests; r.Header.Get(relay.HeaderSubject) != "alice" || r.Header.Get("Switchboard-Hop") != "" {
		t.Fatalf("upgrade at the host: subject %q, hop %q", r.Header.Get(relay.HeaderSubject), r.Header.Get("Switchboard-Hop"))
	}
	_ = c.Close(websocket.StatusNormalClosure, "bye")
	if got := <-echo.closed; got != websocket.StatusNormalClosure {
		t.Fatalf("host saw close %d, want 1000", got)
	}

	// The WebSocket forward is counted when its handler returns, after the close.
	relaytest.Eventually(t, 5*time.Second, "B counted 3 forwards", func() bool {
		return metricValue(t, b.Relay, "switchboard_forwards_total", "outcome", "ok") == 3
	})
	// A counts its side when its own handler returns, which for the WebSocket may be after B counted.
	relaytest.Eventually(t, 5*time.Second, "A counted 3 forwards received", func() bool {
		return metricValue(t, a.Relay, "switchboard_forwards_total", "outcome", "received") == 3
	})
	if n := metricValue(t, b.Relay, "switchboard_directory_errors_total", "", ""); n != 0 {
		t.Fatalf("B directory errors = %v, want 0", n)
	}
}

// hopHeader computes a Switchboard-Hop value the way docs/scaling.md specifies it, with a fresh nonce and no
// forwarding headers.
func hopHeader(secret, replica string, ts time.Time, method, requestURI, host, subject string) string {
	return hopValue(secret, replica, ts, newNonce(), method, requestURI, host, subject, nil)
}

// newNonce returns a fresh hop nonce.
func newNonce() string {
	var n [16]byte
	_, _ = rand.Read(n[:])
	return hex.EncodeToString(n[:])
}

// hopValue computes a Switchboard-Hop value from every field the signature covers (docs/scaling.md).
func hopValue(secret, replica string, ts time.Time, nonce, method, requestURI, host, subject string, fwd http.Header) string {
	unix := strconv.FormatInt(ts.Unix(), 10)
	m := hmac.New(sha256.New, []byte(secret))
	field := func(v string) { _, _ = fmt.Fprintf(m, "%d:%s\n", len(v), v) }
	for _, v := range []string{"switchboard-hop-v2", replica, unix, nonce, method, requestURI, host, subject} {
		field(v)
	}
	for _, k := range []string{"X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto"} {
		field(strconv.Itoa(len(fwd[k])))
		for _, v := range fwd[k] {
			field(v)
		}
	}
	return replica + "," + unix + "," + nonce + "," + hex.EncodeToString(m.Sum(nil))
}

// TestClusterHopForgeryRejected: the internal listener serves only requests signed with the cluster secret, fresh,
// and for exactly the method and URI signed; a hop header sent by a client to the public listener is dropped.
func TestClusterHopForgeryRejected(t *testing.T) {
	a, _, _ := startPair(t, nil)
	relaytest.StartHost(t, a.URL, "h1", http.HandlerFunc(seenHeaders), nil)
	now := time.Now()
	good := relaytest.ClusterSecret
	ih := strings.TrimPrefix(a.InternalURL, "http://")
	for _, tc := range []struct {
		name string
		path string
		hop  string
		want int
	}{
		{"missing", "/hosts/h1/get", "", 403},
		{"garbage", "/hosts/h1/get", "B,x,deadbeef", 403},
		{"bad mac", "/hosts/h1/get", "B," + strconv.FormatInt(now.Unix(), 10) + ",deadbeef", 403},
		{"wrong secret", "/hosts/h1/get", hopHeader("guess", "B", now, "GET", "/hosts/h1/get", ih, ""), 403},
		{"too old", "/hosts/h1/get", hopHeader(good, "B", now.Add(-time.Minute), "GET", "/hosts/h1/get", ih, ""), 403},
		{"from the future", "/hosts/h1/get", hopHeader(good, "B", now.Add(time.Minute), "GET", "/hosts/h1/get", ih, ""), 403},
		{"moved to another path", "/hosts/h1/other", hopHeader(good, "B", now, "GET", "/hosts/h1/get", ih, ""), 403},
		{"other method", "/hosts/h1/get", hopHeader(good, "B", now, "POST", "/hosts/h1/get", ih, ""), 403},
		{"valid", "/hosts/h1/get", hopHeader(good, "B", now, "GET", "/hosts/h1/get", ih, ""), 200},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest("GET", a.InternalURL+tc.path, nil)
			if tc.hop != "" {
				req.Header.Set("Switchboard-Hop", tc.hop)
			}
			resp, err := newClient(t).Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.want {
				t.Fatalf("status %d (%s), want %d", resp.StatusCode, b, tc.want)
			}
		})
	}
	if n := metricValue(t, a.Relay, "switchboard_forwards_total", "outcome", "rejected"); n != 8 {
		t.Fatalf("rejected hops = %v, want 8", n)
	}
	// A signed subject is the one the host sees.
	req, _ := http.NewRequest("GET", a.InternalURL+"/hosts/h1/get", nil)
	req.Header.Set("Switchboard-Hop", hopHeader(good, "B", now, "GET", "/hosts/h1/get", ih, "bob smith"))
	req.Header.Set("Switchboard-Hop-Subject", "bob+smith")
	resp, err := newClient(t).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(b), "sub=bob smith ") || strings.Contains(string(b), `hop="B`) {
		t.Fatalf("host saw %q", b)
	}
	// A client cannot pass a hop through the public listener.
	code, body := getText(t, a.URL+"/hosts/h1/get?access_token="+relaytest.ClientToken(t, "c", "h1"), "")
	if code != 200 || !strings.Contains(body, `hop="" hopsub=""`) {
		t.Fatalf("public GET: %d %q", code, body)
	}
	req, _ = http.NewRequest("GET", a.URL+"/hosts/h1/get", nil)
	req.Header.Set("Authorization", "Bearer "+relaytest.ClientToken(t, "c", "h1"))
	req.Header.Set("Switchboard-Hop", hopHeader(good, "B", now, "GET", "/hosts/h1/get", ih, "root"))
	req.Header.Set("Switchboard-Hop-Subject", "root")
	resp, err = newClient(t).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(b), `sub=c `) || !strings.Contains(string(b), `hop="" hopsub=""`) {
		t.Fatalf("a client's hop headers reached the host or changed the subject: %q", b)
	}
}

// TestClusterForwardedMissAnswered: a stale entry names A, which holds no tunnel: B forwards once, A answers 503
// without forwarding again, and A releases the stale entry.
func TestClusterForwardedMissAnswered(t *testing.T) {
	a, b, _ := startPair(t, nil)
	wrote, err := a.Directory.ReassertEach(t.Context(), []directory.Entry{{HostID: "ghost", Replica: "A", Epoch: 12345,
		ConnectedAt: time.Now().Add(-time.Minute)}})
	if err != nil || !slices.Equal(wrote, []bool{true}) {
		t.Fatalf("stale entry: %v, %v", wrote, err)
	}
	resp := relaytest.Do(t, "GET", b.URL+"/hosts/ghost/x", relaytest.ClientToken(t, "c", "ghost"))
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 503 || !strings.Contains(string(body), "host_offline") || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("forwarded miss: %d %q Retry-After %q", resp.StatusCode, body, resp.Header.Get("Retry-After"))
	}
	for _, c := range []struct {
		r       *relaytest.Replica
		outcome string
		want    float64
	}{{b, "ok", 1}, {a, "received_miss", 1}, {a, "ok", 0}, {b, "received_miss", 0}, {b, "received", 0}} {
		if got := metricValue(t, c.r.Relay, "switchboard_forwards_total", "outcome", c.outcome); got != c.want {
			t.Fatalf("%s forwards %s = %v, want %v", c.r.ID, c.outcome, got, c.want)
		}
	}
	relaytest.Eventually(t, 5*time.Second, "stale entry released", func() bool {
		_, err := b.Directory.Lookup(t.Context(), "ghost")
		return errors.Is(err, directory.ErrNotFound)
	})
}

// TestClusterFlyReplay: in fly-replay mode, plain HTTP on a non-owner is answered with fly-replay naming the
// owner; SSE, WebSocket and already-replayed requests are forwarded.
func TestClusterFlyReplay(t *testing.T) {
	a, b, _ := startPair(t, func(c *relay.Config) { c.RouteMode = relay.RouteFlyReplay })
	mux := http.NewServeMux()
	mux.HandleFunc("/get", seenHeaders)
	mux.HandleFunc("/sse", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		_, _ = io.WriteString(w, "data: one\n\n")
	})
	mux.Handle("/ws", newEchoUpstream())
	relaytest.StartHost(t, a.URL, "h1", mux, nil)
	tok := relaytest.ClientToken(t, "c", "h1")
	client := newClient(t)
	get := func(path string, hdr ...string) (*http.Response, string) {
		req, _ := http.NewRequest("GET", b.URL+path, nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		for i := 0; i+1 < len(hdr); i += 2 {
			req.Header.Set(hdr[i], hdr[i+1])
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return resp, string(body)
	}
	resp, body := get("/hosts/h1/get")
	if resp.StatusCode != 409 || resp.Header.Get("Fly-Replay") != "instance=A" {
		t.Fatalf("plain GET: %d fly-replay %q %q", resp.StatusCode, resp.Header.Get("Fly-Replay"), body)
	}
	if resp, body = get("/hosts/h1/sse", "Accept", "text/event-stream"); resp.StatusCode != 200 || body != "data: one\n\n" {
		t.Fatalf("SSE: %d %q", resp.StatusCode, body)
	}
	if resp, body = get("/hosts/h1/get", "Fly-Replay-Src", "instance=B;state=x"); resp.StatusCode != 200 || resp.Header.Get("Fly-Replay") != "" {
		t.Fatalf("replayed GET: %d %q", resp.StatusCode, body)
	}
	c, _, err := dialWS(t, "ws"+strings.TrimPrefix(b.URL, "http")+"/hosts/h1/ws", tok)
	if err != nil {
		t.Fatalf("WebSocket in fly-replay mode: %v", err)
	}
	_ = c.Close(websocket.StatusNormalClosure, "")
	if n := metricValue(t, b.Relay, "switchboard_forwards_total", "outcome", "fly_replay"); n != 1 {
		t.Fatalf("fly_replay answers = %v, want 1", n)
	}
}

// TestClusterHoldOnMiss: a request for a host connected nowhere waits for it; the host connects to the other
// replica 300 ms later and the request is answered 200. With nobody coming, the wait ends in 503 + Retry-After.
func TestClusterHoldOnMiss(t *testing.T) {
	a, b, _ := startPair(t, func(c *relay.Config) { c.MissWait = 5 * time.Second })
	tok := relaytest.ClientToken(t, "c", "late")
	type result struct {
		code int
		body string
	}
	done := make(chan result, 1)
	start := time.Now()
	go func() {
		req, _ := http.NewRequest("GET", b.URL+"/hosts/late/x", nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			done <- result{0, err.Error()}
			return
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		done <- result{resp.StatusCode, string(body)}
	}()
	time.Sleep(300 * time.Millisecond) // the scenario: the host connects this much later
	relaytest.StartHost(t, a.URL, "late", textHandler("here"), nil)
	r := <-done
	if r.code != 200 || r.body != "here" {
		t.Fatalf("held request: %d %q", r.code, r.body)
	}
	if d := time.Since(start); d < 300*time.Millisecond {
		t.Fatalf("answered after %v, before the host connected", d)
	}
	if n := metricValue(t, b.Relay, "switchboard_miss_waits_total", "outcome", "appeared"); n != 1 {
		t.Fatalf("miss waits appeared = %v, want 1", n)
	}

	single := relaytest.StartRelay(t, func(c *relay.Config) { c.MissWait = 200 * time.Millisecond })
	start = time.Now()
	resp := relaytest.Do(t, "GET", single.URL+"/hosts/nobody/x", relaytest.ClientToken(t, "c", "nobody"))
	resp.Body.Close()
	if d := time.Since(start); resp.StatusCode != 503 || resp.Header.Get("Retry-After") == "" || d < 200*time.Millisecond {
		t.Fatalf("nobody: %d Retry-After %q after %v", resp.StatusCode, resp.Header.Get("Retry-After"), d)
	}
	if n := metricValue(t, single, "switchboard_miss_waits_total", "outcome", "timed_out"); n != 1 {
		t.Fatalf("miss waits timed_out = %v, want 1", n)
	}
}

// TestClusterDuplicateHostOneWins: the same host id connects to A, then to B: B's newer epoch wins, A closes its
// tunnel with 4409, and both replicas route to B's tunnel from then on, without flapping.
func TestClusterDuplicateHostOneWins(t *testing.T) {
	a, b, _ := startPair(t, nil)
	tok := relaytest.ClientToken(t, "c", "dup")
	first := dialBareTunnel(t, a.URL, "dup", "first")
	if code, body := getText(t, b.URL+"/hosts/dup/", tok); code != 200 || body != "first" {
		t.Fatalf("via B before the duplicate: %d %q", code, body)
	}
	second := dialBareTunnel(t, b.URL, "dup", "second")
	if second.epoch <= first.epoch {
		t.Fatalf("epochs %d then %d", first.epoch, second.epoch)
	}
	if code := first.closeCode(t); code != tunnel.CloseReplaced {
		t.Fatalf("A's tunnel closed with %d, want %d", code, tunnel.CloseReplaced)
	}
	relaytest.Eventually(t, 5*time.Second, "A's tunnel gone", func() bool {
		return metricValue(t, a.Relay, "switchboard_tunnels", "", "") == 0
	})
	for i := range 20 {
		for _, r := range []*relaytest.Replica{a, b} {
			if code, body := getText(t, r.URL+"/hosts/dup/", tok); code != 200 || body != "second" {
				t.Fatalf("round %d via %s: %d %q", i, r.ID, code, body)
			}
		}
	}
	if n := metricValue(t, a.Relay, "switchboard_tunnels_closed_total", "reason", "replaced"); n != 1 {
		t.Fatalf("A tunnels closed as replaced = %v, want 1", n)
	}
	if n := metricValue(t, b.Relay, "switchboard_tunnels_closed_total", "reason", "replaced"); n != 0 {
		t.Fatalf("B tunnels closed as replaced = %v, want 0", n)
	}
	e, err := b.Directory.Lookup(t.Context(), "dup")
	if err != nil || e.Replica != "B" || e.Epoch != second.epoch {
		t.Fatalf("directory: %+v %v, want B epoch %d", e, err, second.epoch)
	}
}

// TestClusterFlushAllReassert: after Redis loses every key, A re-asserts its entries and re-advertises itself, and
// the host is routable from B again without its tunnel reconnecting.
func TestClusterFlushAllReassert(t *testing.T) {
	a, b, addr := startPair(t, nil)
	relaytest.StartHost(t, a.URL, "h1", textHandler("ok"), nil)
	tok := relaytest.ClientToken(t, "c", "h1")
	if code, body := getText(t, b.URL+"/hosts/h1/", tok); code != 200 || body != "ok" {
		t.Fatalf("before FLUSHALL: %d %q", code, body)
	}
	raw, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{addr}, DisableCache: true})
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	if err := raw.Do(t.Context(), raw.B().Flushall().Build()).Error(); err != nil {
		t.Fatalf("FLUSHALL: %v", err)
	}
	relaytest.Eventually(t, 15*time.Second, "h1 routable via B after FLUSHALL", func() bool {
		code, body := getText(t, b.URL+"/hosts/h1/", tok)
		return code == 200 && body == "ok"
	})
	if n := metricValue(t, a.Relay, "switchboard_tunnel_registrations_total", "outcome", "ok"); n != 1 {
		t.Fatalf("A registrations = %v, want 1 (no reconnect)", n)
	}
}

// textHandler answers every request with s.
func textHandler(s string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, s) })
}

// bareTunnel is a tunnel client built from the parts (coder/websocket + yamux), so a test sees the epoch and the
// close code the relay sends. It answers every exchange with a fixed body.
type bareTunnel struct {
	epoch uint64
	sess  *yamux.Session
	rec   *readErr
}

// dialBareTunnel registers id at relayURL, waits for "ready" and serves body. It is closed in t.Cleanup.
func dialBareTunnel(t *testing.T, relayURL, id, body string) *bareTunnel {
	t.Helper()
	return dialBare(t, relayURL, id, body, true)
}

// dialBare is dialBareTunnel; without ready it does not wait for the relay's "ready".
func dialBare(t *testing.T, relayURL, id, body string, ready bool) *bareTunnel {
	t.Helper()
	h := http.Header{}
	h.Set(tunnel.HeaderHostID, id)
	h.Set("Authorization", "Bearer "+relaytest.HostToken(t, id))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ws, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(relayURL, "http")+tunnel.Path, &websocket.DialOptions{
		HTTPHeader: h, Subprotocols: []string{tunnel.Subprotocol},
	})
	if err != nil {
		t.Fatalf("tunnel upgrade for %s: %v", id, err)
	}
	ws.SetReadLimit(-1)
	bt := &bareTunnel{rec: &readErr{Conn: websocket.NetConn(context.Background(), ws, websocket.MessageBinary)}}
	if bt.sess, err = yamux.Server(bt.rec, tunnel.Options{}.YamuxConfig()); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() {
		_ = ws.CloseNow()
		_ = bt.sess.Close()
		wg.Wait()
	})
	ctrl, err := bt.sess.OpenStream()
	if err != nil {
		t.Fatalf("control stream: %v", err)
	}
	wg.Go(func() { _ = http.Serve(bt.sess, textHandler(body)) })
	if !ready {
		return bt
	}
	_ = ctrl.SetReadDeadline(time.Now().Add(10 * time.Second))
	line, err := bufio.NewReader(ctrl).ReadBytes('\n')
	if err != nil {
		t.Fatalf("ready: %v", err)
	}
	c, err := tunnel.ParseControl(bytes.TrimSpace(line))
	if err != nil || c.Type != tunnel.ControlReady || c.Epoch == 0 {
		t.Fatalf("first control message %q (%v), want ready with an epoch", line, err)
	}
	bt.epoch = c.Epoch
	return bt
}

// closeCode waits for the tunnel to end and returns the WebSocket close code the relay sent.
func (bt *bareTunnel) closeCode(t *testing.T) websocket.StatusCode {
	t.Helper()
	select {
	case <-bt.sess.CloseChan():
	case <-time.After(10 * time.Second):
		t.Fatal("the relay did not close the tunnel")
	}
	// The session may end on a write error before the read that carries the close frame returns.
	deadline := time.Now().Add(2 * time.Second)
	for websocket.CloseStatus(bt.rec.err()) == -1 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	return websocket.CloseStatus(bt.rec.err())
}

// readErr remembers the close code the peer sent, from whichever of a read or a write saw it first (yamux's send
// loop may be the first to hit the closed WebSocket), or else the first read error.
type readErr struct {
	net.Conn
	mu    sync.Mutex
	first error
}

func (c *readErr) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.record(err)
	return n, err
}

func (c *readErr) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	if websocket.CloseStatus(err) != -1 {
		c.record(err)
	}
	return n, err
}

func (c *readErr) record(err error) {
	if err == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.first == nil || (websocket.CloseStatus(c.first) == -1 && websocket.CloseStatus(err) != -1) {
		c.first = err
	}
}

func (c *readErr) err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.first
}

// TestClusterRedisDownAcceptsTunnels: with Redis stopped, a new tunnel is still accepted and served locally; when
// Redis comes back empty, the entry is written back and the other replica routes to it.
func TestClusterRedisDownAcceptsTunnels(t *testing.T) {
	rs := redistest.StartServer(t)
	prefix := fmt.Sprintf("c%d:", clusterSeq.Add(1))
	a := relaytest.StartRedisReplica(t, []string{rs.Addr}, prefix, "A", nil)
	rs.Stop()
	waitDirUp(t, false, a) // then the claim is not even tried (it would only wait for its timeout)
	claims := histogramCount(t, a.Relay, "switchboard_directory_op_seconds", directory.OpClaim)
	relaytest.StartHost(t, a.URL, "h2", textHandler("local"), nil)
	tok := relaytest.ClientToken(t, "c", "h2")
	if code, body := getText(t, a.URL+"/hosts/h2/", tok); code != 200 || body != "local" {
		t.Fatalf("local exchange with Redis down: %d %q", code, body)
	}
	rs.Restart()
	b := relaytest.StartRedisReplica(t, []string{rs.Addr}, prefix, "B", nil)
	relaytest.Eventually(t, 15*time.Second, "h2 routable via B after Redis returned", func() bool {
		code, body := getText(t, b.URL+"/hosts/h2/", tok)
		return code == 200 && body == "local"
	})
	if n := metricValue(t, a.Relay, "switchboard_tunnel_registrations_total", "outcome", "ok"); n != 1 {
		t.Fatalf("A registrations = %v, want 1 (no reconnect)", n)
	}
	if n := histogramCount(t, a.Relay, "switchboard_directory_op_seconds", directory.OpClaim); n != claims {
		t.Fatalf("A tried %d directory claims while the directory was known down, want 0", n-claims)
	}
}

// TestClusterEvictBeforeRegister: an eviction notice that arrives before the older tunnel registered (two replicas
// claimed at once) still closes that tunnel with 4409 when it registers; an older notice closes nothing.
func TestClusterEvictBeforeRegister(t *testing.T) {
	a, _, _ := startPair(t, nil)
	evict := func(host string, epoch uint64) {
		t.Helper()
		uri := "/internal/v1/evict?epoch=" + strconv.FormatUint(epoch, 10) + "&host=" + host
		req, _ := http.NewRequest("POST", a.InternalURL+uri, nil)
		req.Header.Set("Switchboard-Hop", hopHeader(relaytest.ClusterSecret, "B", time.Now(), "POST", uri, strings.TrimPrefix(a.InternalURL, "http://"), ""))
		resp, err := newClient(t).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusNoContent {
			t.Fatalf("evict: %d", resp.StatusCode)
		}
	}
	evict("early", uint64(time.Now().Add(time.Hour).UnixMicro()))
	evict("stale", 1)
	early := dialBare(t, a.URL, "early", "early", false)
	if code := early.closeCode(t); code != tunnel.CloseReplaced {
		t.Fatalf("tunnel registered after a newer eviction notice closed with %d, want %d", code, tunnel.CloseReplaced)
	}
	dialBareTunnel(t, a.URL, "stale", "stale")
	if code, body := getText(t, a.URL+"/hosts/stale/", relaytest.ClientToken(t, "c", "stale")); code != 200 || body != "stale" {
		t.Fatalf("tunnel after an older eviction notice: %d %q", code, body)
	}
}

// TestClusterDrainMovesTunnel: make-before-break across replicas. A drains while an exchange is in flight on its
// tunnel; the agent opens a new tunnel on B, the directory flips to it and new exchanges go there through either
// replica, while the in-flight exchange finishes on the old tunnel; then A's drain ends.
func TestClusterDrainMovesTunnel(t *testing.T) {
	addr, _ := redistest.Start(t)
	prefix := fmt.Sprintf("c%d:", clusterSeq.Add(1))
	a := relaytest.StartRedisReplica(t, []string{addr}, prefix, "A", func(c *relay.Config) { c.DrainJitter = 10 * time.Millisecond })
	b := relaytest.StartRedisReplica(t, []string{addr}, prefix, "B", nil)
	entered, release := make(chan struct{}), make(chan struct{})
	mux := http.NewServeMux()
	mux.HandleFunc("/slow", func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "started ")
		w.(http.Flusher).Flush()
		close(entered)
		select {
		case <-release:
		case <-r.Context().Done():
			return
		}
		_, _ = io.WriteString(w, "done")
	})
	mux.Handle("/fast", textHandler("fast"))
	relaytest.StartHost(t, a.URL, "mv", mux, func(c *agent.Config) { c.Relays = []string{a.URL, b.URL} })
	tok := relaytest.ClientToken(t, "c", "mv")

	slow := make(chan string, 1)
	go func() {
		req, _ := http.NewRequest("GET", a.URL+"/hosts/mv/slow", nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			slow <- err.Error()
			return
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		slow <- fmt.Sprintf("%d %s %v", resp.StatusCode, body, err)
	}()
	<-entered
	drained := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		drained <- a.Drain(ctx)
	}()
	relaytest.Eventually(t, 10*time.Second, "directory flipped to B", func() bool {
		e, err := b.Directory.Lookup(context.Background(), "mv")
		return err == nil && e.Replica == "B"
	})
	for _, r := range []*relaytest.Replica{b, a} {
		if code, body := getText(t, r.URL+"/hosts/mv/fast", tok); code != 200 || body != "fast" {
			t.Fatalf("new exchange via %s during the drain: %d %q", r.ID, code, body)
		}
	}
	close(release)
	if got := <-slow; got != "200 started done <nil>" {
		t.Fatalf("in-flight exchange on the old tunnel: %q", got)
	}
	if err := <-drained; err != nil {
		t.Fatalf("drain: %v", err)
	}
	if n := metricValue(t, a.Relay, "switchboard_tunnels_closed_total", "reason", "replaced"); n != 0 {
		t.Fatalf("A closed %v tunnels as replaced during its drain, want 0", n)
	}
}

// TestClusterRedisDownAsksPeers: with Redis stopped, B cannot look the host up and asks its peers instead; A says it
// holds the host and B forwards there.
func TestClusterRedisDownAsksPeers(t *testing.T) {
	rs := redistest.StartServer(t)
	prefix := fmt.Sprintf("c%d:", clusterSeq.Add(1))
	a := relaytest.StartRedisReplica(t, []string{rs.Addr}, prefix, "A", nil)
	b := relaytest.StartRedisReplica(t, []string{rs.Addr}, prefix, "B", nil)
	relaytest.StartHost(t, a.URL, "h3", textHandler("on A"), nil)
	tok := relaytest.ClientToken(t, "c", "h3")
	// B lists its peers every 2 s; wait until it knows A (a GET via B also proves the directory path works).
	if code, body := getText(t, b.URL+"/hosts/h3/", tok); code != 200 || body != "on A" {
		t.Fatalf("via B with Redis up: %d %q", code, body)
	}
	relaytest.Eventually(t, 10*time.Second, "B listed its peers", func() bool {
		return histogramCount(t, b.Relay, "switchboard_directory_op_seconds", "list_peers") > 0
	})
	rs.Stop()
	relaytest.Eventually(t, 10*time.Second, "h3 reached via B by asking peers", func() bool {
		code, body := getText(t, b.URL+"/hosts/h3/", tok)
		return code == 200 && body == "on A" &&
			metricValue(t, b.Relay, "switchboard_forwards_total", "outcome", "asked_peers") >= 1
	})
}

// histogramCount returns the sample count of histogram name's series with label op.
func histogramCount(t testing.TB, r *relaytest.Relay, name, op string) uint64 {
	t.Helper()
	mfs, err := r.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "op" && l.GetValue() == op {
					return m.GetHistogram().GetSampleCount()
				}
			}
		}
	}
	return 0
}

// TestClusterDrainUnderLoad: clients keep calling hosts through both replicas while A drains; every exchange
// succeeds, including those that reach A after a host has moved (they go to B), and the drain ends without cutting
// anything. Before tunnels retired one by one, steady load kept A from ever being idle, and the final close cut the
// exchanges admitted after the last idle check.
func TestClusterDrainUnderLoad(t *testing.T) {
	addr, _ := redistest.Start(t)
	prefix := fmt.Sprintf("c%d:", clusterSeq.Add(1))
	a := relaytest.StartRedisReplica(t, []string{addr}, prefix, "A", func(c *relay.Config) { c.DrainJitter = 200 * time.Millisecond })
	b := relaytest.StartRedisReplica(t, []string{addr}, prefix, "B", nil)
	const hosts = 5
	ids := make([]string, hosts)
	for i := range ids {
		ids[i] = fmt.Sprintf("load%d", i)
		// The agents use A first and fail over to B when A, draining, refuses their new tunnel.
		relaytest.StartHost(t, a.URL, ids[i], textHandler(ids[i]), func(c *agent.Config) { c.Relays = []string{a.URL, b.URL} })
	}
	for _, id := range ids {
		relaytest.Eventually(t, 10*time.Second, id+" on A", func() bool {
			e, err := b.Directory.Lookup(context.Background(), id)
			return err == nil && e.Replica == "A"
		})
	}
	tok := relaytest.ClientToken(t, "c", "load*")

	var sent, failed atomic.Int64
	var firstFailure atomic.Value
	stop := make(chan struct{})
	var wg sync.WaitGroup
	client := &http.Client{Timeout: 10 * time.Second}
	for g := range 4 {
		wg.Go(func() {
			for i := 0; i < 2000; i++ {
				select {
				case <-stop:
					return
				default:
				}
				base := []string{a.URL, b.URL}[(g+i)%2]
				id := ids[(g+i)%hosts]
				sent.Add(1)
				if err := getEchoedID(client, base, id, tok); err != nil {
					failed.Add(1)
					firstFailure.CompareAndSwap(nil, err.Error())
				}
			}
		})
	}
	time.Sleep(200 * time.Millisecond) // load is running
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	err := a.Drain(ctx)
	for _, id := range ids {
		relaytest.Eventually(t, 10*time.Second, id+" on B", func() bool {
			e, err := b.Directory.Lookup(context.Background(), id)
			return err == nil && e.Replica == "B"
		})
	}
	time.Sleep(200 * time.Millisecond) // load continues after the drain, through A (forwarded) and B
	close(stop)
	wg.Wait()
	if err != nil {
		t.Errorf("drain: %v", err)
	}
	if n := failed.Load(); n != 0 {
		t.Fatalf("%d of %d exchanges failed during the drain (A %s, B %s); first: %v; A received_miss %v, B received_miss %v",
			n, sent.Load(), a.URL, b.URL, firstFailure.Load(),
			metricValue(t, a.Relay, "switchboard_forwards_total", "outcome", "received_miss"),
			metricValue(t, b.Relay, "switchboard_forwards_total", "outcome", "received_miss"))
	}
	if n := metricValue(t, a.Relay, "switchboard_drain_moved_tunnels_total", "", ""); n != hosts {
		t.Errorf("drain_moved_tunnels_total = %v, want %d", n, hosts)
	}
	// B looked the hosts up again and again while they were on A: the client-side cache answered most of those.
	if hits, misses := metricValue(t, b.Relay, "switchboard_directory_cache_lookups_total", "result", "hit"),
		metricValue(t, b.Relay, "switchboard_directory_cache_lookups_total", "result", "miss"); hits == 0 || misses == 0 {
		t.Errorf("B's directory cache: %v hits, %v misses; want both counted", hits, misses)
	}
	t.Logf("%d exchanges during the drain, none failed", sent.Load())
}

// TestClusterEvictionNoticeRetried: B's eviction notice to A finds A's internal listener down; B sends it again,
// and once the listener is back A closes its tunnel as replaced instead of keeping it.
func TestClusterEvictionNoticeRetried(t *testing.T) {
	a, b, _ := startPair(t, nil)
	first := dialBareTunnel(t, a.URL, "lost", "first")
	a.SetInternalDown(true)
	second := dialBareTunnel(t, b.URL, "lost", "second")
	if second.epoch <= first.epoch {
		t.Fatalf("epochs %d then %d", first.epoch, second.epoch)
	}
	a.SetInternalDown(false) // A's internal listener comes back on its advertised address
	if code := first.closeCode(t); code != tunnel.CloseReplaced {
		t.Fatalf("A's tunnel closed with %d, want %d (replaced, once the notice got through)", code, tunnel.CloseReplaced)
	}
}

// getEchoedID sends GET /hosts/{id}/ to base with tok, to a host whose upstream answers its own id, and returns
// an error naming the host, the replica and what came back unless that id came back with 200.
func getEchoedID(client *http.Client, base, id, tok string) error {
	req, _ := http.NewRequest("GET", base+"/hosts/"+id+"/", nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("%s via %s: %w", id, base, err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(body) != id || err != nil {
		return fmt.Errorf("%s via %s: %d %q %v", id, base, resp.StatusCode, body, err)
	}
	return nil
}
