package agent

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/coder/websocket"
)

// bridgeEnv is a bridge serving the agent side of a loopback yamux tunnel, and an HTTP client on the relay side
// whose connections are streams (as the relay's are).
type bridgeEnv struct {
	client *http.Client
	logs   *syncBuffer
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func startBridgeEnv(t *testing.T, upstream string, opts UpstreamOptions) *bridgeEnv {
	t.Helper()
	u, err := url.Parse(upstream)
	if err != nil {
		t.Fatal(err)
	}
	logs := &syncBuffer{}
	opts.Logger = slog.New(slog.NewTextHandler(logs, nil))
	br, err := NewBridge(u, opts)
	if err != nil {
		t.Fatal(err)
	}
	tun := startBenchTunnel(t, br.Serve)
	t.Cleanup(func() { _ = br.Close() })
	tr := &http.Transport{
		DialContext: func(context.Context, string, string) (net.Conn, error) { return tun.relay.OpenStream() },
	}
	t.Cleanup(tr.CloseIdleConnections)
	return &bridgeEnv{client: &http.Client{Transport: tr, CheckRedirect: func(*http.Request, []*http.Request) error {
		return http.ErrUseLastResponse
	}}, logs: logs}
}

func (e *bridgeEnv) do(t *testing.T, req *http.Request) (*http.Response, string) {
	t.Helper()
	resp, err := e.client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read body: %v", err)
	}
	return resp, string(b)
}

func newReq(t *testing.T, method, target string, body io.Reader) *http.Request {
	t.Helper()
	req, err := http.NewRequest(method, "http://public.example"+target, body)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("X-Forwarded-Proto", "https")
	return req
}

// TestBridgeHeaders: what the upstream sees of a request, per option.
func TestBridgeHeaders(t *testing.T) {
	var mu sync.Mutex
	var seen *http.Request
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = r.Clone(context.Background())
		mu.Unlock()
		_, _ = io.WriteString(w, "ok")
	}))
	defer up.Close()
	upHost := strings.TrimPrefix(up.URL, "http://")
	for _, tc := range []struct {
		name, upstream string
		opts           UpstreamOptions
		target         string
		header         http.Header
		wantHost       string
		wantURI        string
		want           http.Header // values that must be there ("" = absent)
	}{
		{name: "upstream host", upstream: up.URL, target: "/a/b?x=1", wantHost: upHost, wantURI: "/a/b?x=1",
			want: http.Header{"X-Forwarded-Host": {"public.example"}, "X-Forwarded-Proto": {"https"}}},
		{name: "preserve", upstream: up.URL, opts: UpstreamOptions{HostHeader: HostHeaderPreserve}, target: "/",
			wantHost: "public.example", wantURI: "/"},
		{name: "fixed host", upstream: up.URL, opts: UpstreamOptions{HostHeader: "app.internal:8080"}, target: "/",
			wantHost: "app.internal:8080", wantURI: "/"},
		{name: "relay's X-Forwarded-Host kept", upstream: up.URL, target: "/",
			header: http.Header{"X-Forwarded-Host": {"other.example"}}, wantHost: upHost, wantURI: "/",
			want: http.Header{"X-Forwarded-Host": {"other.example"}}},
		{name: "fixed headers replace", upstream: up.URL,
			opts:   UpstreamOptions{Fixed: http.Header{"X-Secret": {"s3"}}},
			header: http.Header{"X-Secret": {"forged"}}, target: "/", wantHost: upHost, wantURI: "/",
			want: http.Header{"X-Secret": {"s3"}}},
		{name: "hop-by-hop dropped", upstream: up.URL, target: "/",
			header: http.Header{"Connection": {"X-Hop"}, "X-Hop": {"1"}, "Keep-Alive": {"timeout=5"},
				"Proxy-Authorization": {"Basic x"}, "Forwarded": {"for=1.2.3.4"}, "Te": {"trailers, deflate"}},
			wantHost: upHost, wantURI: "/",
			want: http.Header{"X-Hop": {""}, "Keep-Alive": {""}, "Proxy-Authorization": {""}, "Forwarded": {""},
				"Te": {"trailers"}}},
		{name: "upstream base path and query", upstream: up.URL + "/base/?k=v", target: "/p?q=1",
			wantHost: upHost, wantURI: "/base/p?k=v&q=1"},
		{name: "upstream base path without slash", upstream: up.URL + "/base", target: "/p",
			wantHost: upHost, wantURI: "/base/p"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := startBridgeEnv(t, tc.upstream, tc.opts)
			req := newReq(t, "GET", tc.target, nil)
			for k, v := range tc.header {
				req.Header[k] = v
			}
			resp, body := e.do(t, req)
			if resp.StatusCode != 200 || body != "ok" {
				t.Fatalf("got %d %q", resp.StatusCode, body)
			}
			mu.Lock()
			r := seen
			mu.Unlock()
			if r.Host != tc.wantHost || r.RequestURI != tc.wantURI {
				t.Fatalf("upstream saw Host %q URI %q, want %q %q", r.Host, r.RequestURI, tc.wantHost, tc.wantURI)
			}
			for k, v := range tc.want {
				if got := r.Header.Get(k); got != v[0] {
					t.Fatalf("upstream saw %s %q, want %q", k, got, v[0])
				}
			}
		})
	}
}

// TestBridgeBodies: bodies both ways in every framing, trailers, HEAD, 100-continue, Location.
func TestBridgeBodies(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/echo":
			b, _ := io.ReadAll(r.Body)
			w.Header().Set("Trailer", "X-Sum")
			w.Header().Set("X-Len", itoa(len(b)))
			_, _ = w.Write(b)
			w.(http.Flusher).Flush() // chunked from here
			w.Header().Set("X-Sum", r.Trailer.Get("X-Req")+"!")
		case "/redirect":
			http.Redirect(w, r, "http://"+r.Host+"/next?a=b", http.StatusFound)
		case "/elsewhere":
			http.Redirect(w, r, "http://elsewhere.example/x", http.StatusFound)
		case "/big":
			w.Header().Set("Content-Length", itoa(3<<20))
			_, _ = w.Write(bytes.Repeat([]byte("z"), 3<<20))
		default:
			w.Header().Set("Content-Length", "5")
			_, _ = io.WriteString(w, "hello")
		}
	}))
	defer up.Close()
	e := startBridgeEnv(t, up.URL, UpstreamOptions{})

	t.Run("sized request body", func(t *testing.T) {
		big := strings.Repeat("abcdefgh", 100_000)
		resp, body := e.do(t, newReq(t, "POST", "/echo", strings.NewReader(big)))
		if resp.StatusCode != 200 || body != big || resp.Header.Get("X-Len") != itoa(len(big)) {
			t.Fatalf("got %d, %d bytes, X-Len %s", resp.StatusCode, len(body), resp.Header.Get("X-Len"))
		}
	})
	t.Run("chunked request with trailers", func(t *testing.T) {
		pr, pw := io.Pipe()
		req := newReq(t, "POST", "/echo", pr)
		req.Trailer = http.Header{"X-Req": nil}
		go func() {
			_, _ = io.WriteString(pw, "part one;")
			req.Trailer.Set("X-Req", "t1")
			_, _ = io.WriteString(pw, "part two")
			_ = pw.Close()
		}()
		resp, body := e.do(t, req)
		if body != "part one;part two" || resp.Trailer.Get("X-Sum") != "t1!" {
			t.Fatalf("got %q, trailer %q", body, resp.Trailer.Get("X-Sum"))
		}
	})
	t.Run("head", func(t *testing.T) {
		resp, body := e.do(t, newReq(t, "HEAD", "/", nil))
		if resp.StatusCode != 200 || body != "" || resp.ContentLength != 5 {
			t.Fatalf("got %d %q length %d", resp.StatusCode, body, resp.ContentLength)
		}
		// The stream carries on after a bodiless response.
		if _, body := e.do(t, newReq(t, "GET", "/", nil)); body != "hello" {
			t.Fatalf("after HEAD: %q", body)
		}
	})
	t.Run("100-continue", func(t *testing.T) {
		req := newReq(t, "PUT", "/echo", strings.NewReader("expected"))
		req.Header.Set("Expect", "100-continue")
		resp, body := e.do(t, req)
		if resp.StatusCode != 200 || body != "expected" {
			t.Fatalf("got %d %q", resp.StatusCode, body)
		}
	})
	t.Run("large response", func(t *testing.T) {
		_, body := e.do(t, newReq(t, "GET", "/big", nil))
		if len(body) != 3<<20 || strings.Trim(body, "z") != "" {
			t.Fatalf("got %d bytes", len(body))
		}
	})
	t.Run("location to the public origin", func(t *testing.T) {
		resp, _ := e.do(t, newReq(t, "GET", "/redirect", nil))
		if got := resp.Header.Get("Location"); got != "https://public.example/next?a=b" {
			t.Fatalf("Location %q", got)
		}
		resp, _ = e.do(t, newReq(t, "GET", "/elsewhere", nil))
		if got := resp.Header.Get("Location"); got != "http://elsewhere.example/x" {
			t.Fatalf("Location %q", got)
		}
	})
}

func itoa(n int) string { return strconv.Itoa(n) }

// rawUpstream answers every connection with script(conn's reader, conn).
func rawUpstream(t *testing.T, script func(br *bufio.Reader, c net.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { _ = ln.Close(); wg.Wait() })
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close()
				script(bufio.NewReader(c), c)
			})
		}
	})
	return "http://" + ln.Addr().String()
}

// TestBridgeCloseDelimited: a body the upstream ends by closing reaches the client whole, and the stream is
// reused after it.
func TestBridgeCloseDelimited(t *testing.T) {
	up := rawUpstream(t, func(br *bufio.Reader, c net.Conn) {
		if _, err := http.ReadRequest(br); err != nil {
			return
		}
		_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the end")
	})
	e := startBridgeEnv(t, up, UpstreamOptions{})
	for range 3 {
		resp, body := e.do(t, newReq(t, "GET", "/", nil))
		if resp.StatusCode != 200 || body != "until the end" {
			t.Fatalf("got %d %q", resp.StatusCode, body)
		}
	}
}

// TestBridgeStalePooledConnection: an upstream that closes a keep-alive connection after each answer (without
// saying so) costs no failed request: a bodiless one is sent again on a new connection, one with a body is sent on
// a connection checked first (a request that may not be sent twice, like this POST, gets a 502 only if the close
// comes while it is on its way; the test waits for each close, so here it never does).
func TestBridgeStalePooledConnection(t *testing.T) {
	closed := make(chan struct{}, 8)
	up := rawUpstream(t, func(br *bufio.Reader, c net.Conn) {
		defer func() { closed <- struct{}{} }()
		defer c.Close()
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		_, _ = io.Copy(io.Discard, req.Body)
		_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
	})
	e := startBridgeEnv(t, up, UpstreamOptions{})
	for i := range 6 {
		method, body := "GET", io.Reader(nil)
		if i%2 == 1 {
			method, body = "POST", strings.NewReader("data")
		}
		resp, got := e.do(t, newReq(t, method, "/", body))
		if resp.StatusCode != 200 || got != "ok" {
			t.Fatalf("request %d (%s): %d %q", i, method, resp.StatusCode, got)
		}
		<-closed
	}
}

// TestBridgeUpstreamDown: 502 in the relay's error shape, one WARN line, and the stream stays usable.
func TestBridgeUpstreamDown(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	defer ln.Close()
	// Held open but never accepting would hang; a closed port refuses. Close it and keep nothing on it: the
	// address is only dialled, never listened on again by this test.
	_ = ln.Close()
	e := startBridgeEnv(t, "http://"+addr, UpstreamOptions{})
	resp, body := e.do(t, newReq(t, "GET", "/x", nil))
	if resp.StatusCode != http.StatusBadGateway || !strings.Contains(body, `"upstream_unreachable"`) ||
		resp.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("got %d %q", resp.StatusCode, body)
	}
	if n := strings.Count(e.logs.String(), "upstream failed"); n != 1 {
		t.Fatalf("%d WARN lines: %s", n, e.logs.String())
	}
}

// TestBridgeClientGoneCancelsUpstream: the relay giving up on a stream aborts the upstream call.
func TestBridgeClientGoneCancelsUpstream(t *testing.T) {
	started, cancelled := make(chan struct{}), make(chan struct{})
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(started)
		<-r.Context().Done()
		close(cancelled)
	}))
	defer up.Close()
	e := startBridgeEnv(t, up.URL, UpstreamOptions{})
	ctx, cancel := context.WithCancel(context.Background())
	req := newReq(t, "GET", "/slow", nil).WithContext(ctx)
	errc := make(chan error, 1)
	go func() {
		resp, err := e.client.Do(req)
		if err == nil {
			resp.Body.Close()
		}
		errc <- err
	}()
	<-started
	cancel()
	<-cancelled
	if err := <-errc; err == nil {
		t.Fatal("the cancelled request succeeded")
	}
}

// TestBridgeSSE: each event of a streamed response reaches the client before the upstream sends the next.
func TestBridgeSSE(t *testing.T) {
	next := make(chan struct{})
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		for i := range 3 {
			_, _ = io.WriteString(w, "data: "+itoa(i)+"\n\n")
			w.(http.Flusher).Flush()
			<-next
		}
	}))
	defer up.Close()
	e := startBridgeEnv(t, up.URL, UpstreamOptions{})
	resp, err := e.client.Do(newReq(t, "GET", "/events", nil))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	br := bufio.NewReader(resp.Body)
	for i := range 3 {
		line, err := br.ReadString('\n')
		if err != nil || line != "data: "+itoa(i)+"\n" {
			t.Fatalf("event %d: %q %v", i, line, err)
		}
		_, _ = br.ReadString('\n')
		next <- struct{}{}
	}
}

// TestBridgeWebSocket: an upgrade becomes a two-way byte copy.
func TestBridgeWebSocket(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ws, err := websocket.Accept(w, r, &websocket.AcceptOptions{InsecureSkipVerify: true})
		if err != nil {
			return
		}
		defer ws.CloseNow()
		for {
			typ, b, err := ws.Read(r.Context())
			if err != nil {
				return
			}
			if err := ws.Write(r.Context(), typ, b); err != nil {
				return
			}
		}
	}))
	defer up.Close()
	e := startBridgeEnv(t, up.URL, UpstreamOptions{})
	ctx := context.Background()
	ws, _, err := websocket.Dial(ctx, "ws://public.example/ws", &websocket.DialOptions{HTTPClient: e.client})
	if err != nil {
		t.Fatal(err)
	}
	defer ws.CloseNow()
	for _, msg := range []string{"one", strings.Repeat("x", 30_000)} {
		if err := ws.Write(ctx, websocket.MessageText, []byte(msg)); err != nil {
			t.Fatal(err)
		}
		_, b, err := ws.Read(ctx)
		if err != nil || string(b) != msg {
			t.Fatalf("echo of %d bytes: %d bytes, %v", len(msg), len(b), err)
		}
	}
	_ = ws.Close(websocket.StatusNormalClosure, "")
}

// TestBridgeConcurrentExchanges: many exchanges at once on one tunnel, each answered by its own.
func TestBridgeConcurrentExchanges(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		_, _ = io.WriteString(w, r.Method+" "+r.URL.Path+" "+string(body))
	}))
	defer up.Close()
	e := startBridgeEnv(t, up.URL, UpstreamOptions{})
	const n = 200
	var wg sync.WaitGroup
	errs := make(chan string, n)
	for i := range n {
		wg.Go(func() {
			req := newReq(t, "POST", "/req/"+itoa(i), strings.NewReader("body-"+itoa(i)))
			resp, err := e.client.Do(req)
			if err != nil {
				errs <- err.Error()
				return
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if want := "POST /req/" + itoa(i) + " body-" + itoa(i); string(b) != want {
				errs <- "got " + string(b) + ", want " + want
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if t.Failed() {
		t.Log(e.logs.String())
	}
}

// TestBridgeBadRequests: a head the bridge cannot read gets a clear answer, and never reaches the upstream.
func TestBridgeBadRequests(t *testing.T) {
	var reached sync.Mutex
	hits := 0
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		reached.Lock()
		hits++
		reached.Unlock()
	}))
	defer up.Close()
	u, _ := url.Parse(up.URL)
	br, err := NewBridge(u, UpstreamOptions{})
	if err != nil {
		t.Fatal(err)
	}
	tun := startBenchTunnel(t, br.Serve)
	t.Cleanup(func() { _ = br.Close() })
	for _, tc := range []struct {
		name, req string
		status    int
	}{
		{"both framings", "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", 400},
		{"differing lengths", "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n", 400},
		{"lengths spelt differently", "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 03\r\nContent-Length: 3\r\n\r\nabc", 400},
		{"unknown coding", "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip\r\n\r\n", 400},
		{"obsolete folding", "GET / HTTP/1.1\r\nHost: h\r\nX-A: 1\r\n folded\r\n\r\n", 400},
		{"absolute target", "GET http://evil.example/ HTTP/1.1\r\nHost: h\r\n\r\n", 400},
		{"HTTP/2 preface", "PRI * HTTP/2.0\r\n\r\n", 400},
		{"head too large", "GET / HTTP/1.1\r\nHost: h\r\nX-Big: " + strings.Repeat("a", maxHeadBytes) + "\r\n\r\n", 431},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st, err := tun.relay.OpenStream()
			if err != nil {
				t.Fatal(err)
			}
			defer st.Close()
			go func() { _, _ = io.WriteString(st, tc.req) }()
			resp, err := http.ReadResponse(bufio.NewReader(st), nil)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tc.status || !strings.Contains(string(body), `"error"`) || !resp.Close {
				t.Fatalf("got %d (close %v) %q, want %d with a JSON error and the stream closed", resp.StatusCode, resp.Close, body, tc.status)
			}
		})
	}
	reached.Lock()
	defer reached.Unlock()
	if hits != 0 {
		t.Fatalf("%d bad requests reached the upstream", hits)
	}
}
