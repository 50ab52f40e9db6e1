package relay_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/switchboard-relay/switchboard/agent"
	"github.com/switchboard-relay/switchboard/internal/directory"
	"github.com/switchboard-relay/switchboard/internal/relay"
	"github.com/switchboard-relay/switchboard/internal/relaytest"
)

// accessLine is a line of the access log as a reader of it sees it.
type accessLine struct {
	Time     string  `json:"time"`
	Replica  string  `json:"replica"`
	HostID   string  `json:"host_id"`
	Method   string  `json:"method"`
	Path     string  `json:"path"`
	Kind     string  `json:"kind"`
	Route    string  `json:"route"`
	Status   int     `json:"status"`
	BytesIn  int64   `json:"bytes_in"`
	BytesOut int64   `json:"bytes_out"`
	Duration float64 `json:"duration_seconds"`
	Subject  string  `json:"subject"`
	Error    string  `json:"error"`
	Sample   uint64  `json:"sample"`
}

// startAccessLog opens an access log in a temporary directory; it is closed in t.Cleanup, after everything
// registered later (start it before the relay that writes to it).
func startAccessLog(t *testing.T, cfg relay.AccessLogConfig) (*relay.AccessLog, string) {
	t.Helper()
	if cfg.Path == "" {
		cfg.Path = filepath.Join(t.TempDir(), "access.log")
	}
	al, err := relay.NewAccessLog(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = al.Close() })
	return al, cfg.Path
}

// readAccessLog waits until n lines were written, closes the log (flushing it) and returns the file and its lines.
func readAccessLog(t *testing.T, al *relay.AccessLog, path string, n uint64) ([]byte, []accessLine) {
	t.Helper()
	relaytest.Eventually(t, 30*time.Second, "access log lines", func() bool { return al.Written()+al.Dropped() >= n })
	if err := al.Close(); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var lines []accessLine
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		var l accessLine
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			t.Fatalf("line %q: %v", sc.Text(), err)
		}
		lines = append(lines, l)
	}
	return b, lines
}

// refusingUpstream is an address that accepts connections and closes them at once: an upstream the agent cannot
// get an answer from. Its listener is held until the test ends.
func refusingUpstream(t *testing.T) *url.URL {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_ = c.Close()
		}
	}()
	t.Cleanup(func() { _ = ln.Close(); <-done })
	return &url.URL{Scheme: "http", Host: ln.Addr().String()}
}

// TestAccessLog: one line per client exchange with its fields; no token, cookie or query string in the file;
// WebSocket and SSE exchanges are logged when they end; an agent's own 502 is upstream_unreachable in the log and
// in switchboard_exchanges_total.
func TestAccessLog(t *testing.T) {
	al, path := startAccessLog(t, relay.AccessLogConfig{})
	sseGo := make(chan struct{})
	mux := http.NewServeMux()
	mux.Handle("/ws", newEchoUpstream())
	mux.HandleFunc("/sse", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		_, _ = w.Write([]byte("data: one\n\n"))
		w.(http.Flusher).Flush()
		<-sseGo
		_, _ = w.Write([]byte("data: two\n\n"))
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		n, _ := r.Body.Read(make([]byte, 64))
		_, _ = w.Write([]byte("hello" + strings.Repeat("!", n)))
	})
	env := startProxy(t, upstreamHost, mux, func(c *relay.Config) { c.AccessLog = al; c.Replica = "r1" }, nil)
	relaytest.StartHost(t, env.relay.URL, "org:dead", agent.UpstreamHandler(refusingUpstream(t), nil), nil)
	cookieToken := relaytest.ClientToken(t, "carol", "org:*")
	queryToken := relaytest.ClientToken(t, "bob", "org:*")
	c := newClient(t)

	send := func(method, target string, body string, header ...string) *http.Response {
		t.Helper()
		req, err := http.NewRequest(method, env.relay.URL+target, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		if body == "" {
			req.Body = http.NoBody
		}
		for i := 0; i+1 < len(header); i += 2 {
			req.Header.Set(header[i], header[i+1])
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		readAll(t, resp)
		return resp
	}
	const hostPath = "/hosts/org:machine"
	if r := send("GET", hostPath+"/q?access_token="+queryToken+"&q=querysecret", ""); r.StatusCode != 200 {
		t.Fatalf("query token: %d", r.StatusCode)
	}
	if r := send("GET", hostPath+"/c", "", "Cookie", relay.SessionCookie+"="+cookieToken+"; other=cookiesecret"); r.StatusCode != 200 {
		t.Fatalf("cookie: %d", r.StatusCode)
	}
	if r := send("POST", hostPath+"/h", "12345", "Authorization", "Bearer "+env.token); r.StatusCode != 200 {
		t.Fatalf("header: %d", r.StatusCode)
	}
	send("GET", "/hosts/org:offline/x", "", "Authorization", "Bearer "+env.token)
	send("GET", hostPath+"/u", "", "Authorization", "Bearer not-a-token")
	if r := send("GET", "/hosts/org:dead/down", "", "Authorization", "Bearer "+env.token); r.StatusCode != 502 {
		t.Fatalf("dead upstream: %d", r.StatusCode)
	}

	// A WebSocket exchange: logged when it ends, with the bytes that crossed it.
	ws, _, err := dialWS(t, env.wsURL("/ws"), env.token)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := ws.Write(ctx, websocket.MessageText, []byte("ping over the relay")); err != nil {
		t.Fatal(err)
	}
	if _, msg, err := ws.Read(ctx); err != nil || string(msg) != "ping over the relay" {
		t.Fatalf("echo %q %v", msg, err)
	}
	_ = ws.Close(websocket.StatusNormalClosure, "done")

	// An SSE stream: no line while it runs, one when it ends.
	relaytest.Eventually(t, 30*time.Second, "lines of the finished exchanges", func() bool { return al.Written() >= 7 })
	req, _ := http.NewRequest("GET", env.base+"/sse", nil)
	req.Header.Set("Authorization", "Bearer "+env.token)
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(resp.Body)
	if l, err := br.ReadString('\n'); err != nil || l != "data: one\n" {
		t.Fatalf("first event %q %v", l, err)
	}
	if n := al.Written(); n != 7 {
		t.Fatalf("%d lines while the SSE stream runs, want 7", n)
	}
	close(sseGo)
	readAll(t, resp)

	file, lines := readAccessLog(t, al, path, 8)
	for _, secret := range []string{queryToken, cookieToken, env.token, "querysecret", "cookiesecret", "access_token", "not-a-token"} {
		if bytes.Contains(file, []byte(secret)) {
			t.Fatalf("the access log holds %q:\n%s", secret, file)
		}
	}
	byPath := map[string]accessLine{}
	for _, l := range lines {
		if l.Replica != "r1" || l.Sample != 1 || l.Time == "" || l.Duration <= 0 {
			t.Errorf("line %+v", l)
		}
		byPath[l.Path] = l
	}
	if len(lines) != 8 {
		t.Fatalf("%d lines, want 8:\n%s", len(lines), file)
	}
	for _, want := range []accessLine{
		{Path: hostPath + "/q", HostID: "org:machine", Method: "GET", Kind: "http", Route: "local", Status: 200, BytesOut: 5, Subject: "bob"},
		{Path: hostPath + "/c", HostID: "org:machine", Method: "GET", Kind: "http", Route: "local", Status: 200, BytesOut: 5, Subject: "carol"},
		{Path: hostPath + "/h", HostID: "org:machine", Method: "POST", Kind: "http", Route: "local", Status: 200, BytesIn: 5, BytesOut: 10, Subject: "alice"},
		{Path: "/hosts/org:offline/x", HostID: "org:offline", Method: "GET", Kind: "http", Route: "none", Status: 503, Subject: "alice", Error: "host_offline"},
		{Path: hostPath + "/u", HostID: "org:machine", Method: "GET", Kind: "http", Route: "none", Status: 401, Error: "unauthorized"},
		{Path: "/hosts/org:dead/down", HostID: "org:dead", Method: "GET", Kind: "http", Route: "local", Status: 502, Subject: "alice", Error: "upstream_unreachable"},
	} {
		got, ok := byPath[want.Path]
		if !ok {
			t.Errorf("no line for %s", want.Path)
			continue
		}
		if want.Status >= 400 {
			if got.BytesOut <= 0 {
				t.Errorf("%s: bytes_out %d", want.Path, got.BytesOut)
			}
			want.BytesOut = got.BytesOut
		}
		want.Time, want.Replica, want.Duration, want.Sample = got.Time, got.Replica, got.Duration, got.Sample
		if got != want {
			t.Errorf("line\n got %+v\nwant %+v", got, want)
		}
	}
	if l := byPath[hostPath+"/ws"]; l.Kind != "websocket" || l.Status != 101 || l.Route != "local" || l.BytesIn <= int64(len("ping over the relay")) ||
		l.BytesOut <= int64(len("ping over the relay")) {
		t.Errorf("websocket line %+v", l)
	}
	if l := byPath[hostPath+"/sse"]; l.Status != 200 || l.BytesOut != int64(len("data: one\n\ndata: two\n\n")) {
		t.Errorf("sse line %+v", l)
	}
	if v := seriesValue(t, env.relay, "switchboard_exchanges_total",
		map[string]string{"kind": "http", "outcome": "upstream_unreachable", "class": "5xx"}); v != 1 {
		t.Errorf("exchanges_total{outcome=upstream_unreachable} = %v, want 1", v)
	}
}

// TestAccessLogSample: one in N successful exchanges is logged, with sample N; every failed one is, with sample 1.
func TestAccessLogSample(t *testing.T) {
	al, path := startAccessLog(t, relay.AccessLogConfig{Sample: 3})
	env := startProxy(t, listenerHost, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}),
		func(c *relay.Config) { c.AccessLog = al }, nil)
	c := newClient(t)
	for range 9 {
		readAll(t, env.do(t, c, "GET", "/ok", nil))
	}
	for range 2 {
		readAll(t, relaytest.Do(t, "GET", env.relay.URL+"/hosts/org:offline/x", env.token))
	}
	_, lines := readAccessLog(t, al, path, 5)
	ok, failed := 0, 0
	for _, l := range lines {
		switch {
		case l.Status == 200 && l.Sample == 3:
			ok++
		case l.Status >= 400 && l.Sample == 1:
			failed++
		default:
			t.Errorf("line %+v", l)
		}
	}
	if ok != 3 || failed != 2 {
		t.Fatalf("%d successful and %d failed lines, want 3 and 2: %+v", ok, failed, lines)
	}
}

// TestAccessLogRoutes: the replica a client reached logs a forwarded exchange as forwarded and a fly-replay answer
// as replayed; the owner, which the peer reached, logs neither.
func TestAccessLogRoutes(t *testing.T) {
	for _, mode := range []string{relay.RouteForward, relay.RouteFlyReplay} {
		t.Run(mode, func(t *testing.T) {
			alA, pathA := startAccessLog(t, relay.AccessLogConfig{})
			alB, pathB := startAccessLog(t, relay.AccessLogConfig{})
			dir := directory.NewMemory()
			a := relaytest.StartRelayOn(t, dir, func(c *relay.Config) { c.AccessLog = alA; c.RouteMode = mode })
			b := relaytest.StartRelayOn(t, dir, func(c *relay.Config) { c.AccessLog = alB; c.RouteMode = mode })
			relaytest.StartHost(t, b.URL, "org:m", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				_, _ = w.Write([]byte("from b"))
			}), nil)
			resp := relaytest.Do(t, "GET", a.URL+"/hosts/org:m/x", relaytest.ClientToken(t, "alice", "org:*"))
			readAll(t, resp)
			_, lines := readAccessLog(t, alA, pathA, 1)
			want := accessLine{Route: "forwarded", Status: 200, BytesOut: 6}
			if mode == relay.RouteFlyReplay {
				want = accessLine{Route: "replayed", Status: 409, Error: "wrong_replica"}
			}
			if len(lines) != 1 || lines[0].Route != want.Route || lines[0].Status != want.Status || lines[0].Error != want.Error ||
				(want.BytesOut != 0 && lines[0].BytesOut != want.BytesOut) {
				t.Fatalf("entry replica's lines %+v, want %+v", lines, want)
			}
			if err := alB.Close(); err != nil {
				t.Fatal(err)
			}
			if b, _ := os.ReadFile(pathB); len(b) != 0 {
				t.Fatalf("the owner logged the peer's request: %s", b)
			}
		})
	}
}

// TestAccessLogReopen: after the file is renamed (logrotate) and Reopen is called, lines go to a new file by the
// configured name; the renamed file keeps the earlier lines.
func TestAccessLogReopen(t *testing.T) {
	al, path := startAccessLog(t, relay.AccessLogConfig{})
	env := startProxy(t, listenerHost, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}),
		func(c *relay.Config) { c.AccessLog = al }, nil)
	c := newClient(t)
	readAll(t, env.do(t, c, "GET", "/before", nil))
	relaytest.Eventually(t, 30*time.Second, "first line", func() bool { return al.Written() == 1 })
	rotated := path + ".1"
	if err := os.Rename(path, rotated); err != nil {
		t.Fatal(err)
	}
	al.Reopen()
	readAll(t, env.do(t, c, "GET", "/after", nil))
	_, lines := readAccessLog(t, al, path, 2)
	if len(lines) != 1 || !strings.HasSuffix(lines[0].Path, "/after") {
		t.Fatalf("new file: %+v", lines)
	}
	old, err := os.ReadFile(rotated)
	if err != nil || !bytes.Contains(old, []byte("/before")) || bytes.Contains(old, []byte("/after")) {
		t.Fatalf("rotated file %q %v", old, err)
	}
}

// BenchmarkSmallGETAccessLog is BenchmarkSmallGET (listener host) with the access log on, writing every line to a
// file: the cost of the log per exchange.
func BenchmarkSmallGETAccessLog(b *testing.B) {
	al, err := relay.NewAccessLog(relay.AccessLogConfig{Path: filepath.Join(b.TempDir(), "access.log")})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = al.Close() })
	e := startProxy(b, listenerHost, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte("hello"))
	}), func(c *relay.Config) { c.AccessLog = al }, nil)
	c := newClient(b)
	req, err := http.NewRequest("GET", e.base+"/small?x=1", nil)
	if err != nil {
		b.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+e.token)
	b.ReportAllocs()
	for b.Loop() {
		resp, err := c.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			b.Fatalf("got %d", resp.StatusCode)
		}
	}
	b.StopTimer()
	if al.Dropped() != 0 {
		b.Logf("%d of %d lines dropped", al.Dropped(), al.Dropped()+al.Written())
	}
}
