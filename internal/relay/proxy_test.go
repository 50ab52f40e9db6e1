package relay_test

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"runtime"
	"runtime/metrics"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/switchboard-relay/switchboard/agent"
	"github.com/switchboard-relay/switchboard/internal/relay"
	"github.com/switchboard-relay/switchboard/internal/relaytest"
)

// hostID is the host every proxy test talks to; its colon exercises the escaped form too.
const hostID = "org:machine"

// proxyEnv is a relay with one host behind it.
type proxyEnv struct {
	relay *relaytest.Relay
	base  string // relay URL up to and including the host id, no trailing slash
	token string // client token that reaches hostID, subject "alice"
}

// hostKind is how the host serves its streams: straight from a handler on the agent's net.Listener, or through the
// agent's reverse proxy to an upstream server (what `switchboard host` runs).
type hostKind string

const (
	listenerHost hostKind = "listener"
	upstreamHost hostKind = "upstream"
)

var hostKinds = []hostKind{listenerHost, upstreamHost}

// startProxy starts a relay (adjusted by mutate, if not nil) and a host of kind serving h.
func startProxy(t testing.TB, kind hostKind, h http.Handler, mutate func(*relay.Config), fixed http.Header) proxyEnv {
	t.Helper()
	r := relaytest.StartRelay(t, mutate)
	switch kind {
	case listenerHost:
		relaytest.StartHost(t, r.URL, hostID, h, nil)
	default:
		relaytest.StartUpstreamHost(t, r.URL, hostID, h, fixed)
	}
	return proxyEnv{relay: r, base: r.URL + "/hosts/" + hostID, token: relaytest.ClientToken(t, "alice", "org:*")}
}

// newClient returns an HTTP client of its own, so idle connections do not outlive the test.
func newClient(t testing.TB) *http.Client {
	tr := &http.Transport{MaxIdleConnsPerHost: 64, DisableCompression: true}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

// do sends a request with the env's token and fails the test on a transport error.
func (e proxyEnv) do(t testing.TB, c *http.Client, method, path string, body io.Reader) *http.Response {
	t.Helper()
	req, err := http.NewRequest(method, e.base+path, body)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+e.token)
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	return resp
}

// readAll reads and closes a response body.
func readAll(t testing.TB, resp *http.Response) string {
	t.Helper()
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read body: %v", err)
	}
	return string(b)
}

// errorCode decodes the relay's JSON error shape and returns its code; the message must not be empty.
func errorCode(t testing.TB, resp *http.Response) string {
	t.Helper()
	code, err := errorCodeOf(resp)
	if err != nil {
		t.Fatal(err)
	}
	return code
}

// errorCodeOf is errorCode for a goroutine the test spawned, which must not call t.Fatal: it returns the error.
func errorCodeOf(resp *http.Response) (string, error) {
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		return "", fmt.Errorf("error Content-Type = %q, want application/json", ct)
	}
	var body struct {
		Error struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		return "", fmt.Errorf("decode error body: %w", err)
	}
	if body.Error.Message == "" {
		return "", fmt.Errorf("error %q has no message", body.Error.Code)
	}
	return body.Error.Code, nil
}

// waitChan waits for ch to close or receive, failing after d.
func waitChan[T any](t testing.TB, ch <-chan T, d time.Duration, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(d):
		t.Fatalf("timed out after %v waiting for %s", d, what)
	}
	var zero T
	return zero
}

func TestProxyConcurrentExchanges(t *testing.T) {
	for _, kind := range hostKinds {
		t.Run(string(kind), func(t *testing.T) {
			e := startProxy(t, kind, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				body, _ := io.ReadAll(r.Body)
				_, _ = fmt.Fprintf(w, "%s %s %s", r.Method, r.URL.Path, body)
			}), nil, nil)
			c := newClient(t)
			const n = 200
			var wg sync.WaitGroup
			errs := make(chan error, n)
			for i := range n {
				wg.Go(func() {
					req, _ := http.NewRequest("POST", fmt.Sprintf("%s/req/%d", e.base, i), strings.NewReader(fmt.Sprint("body-", i)))
					req.Header.Set("Authorization", "Bearer "+e.token)
					resp, err := c.Do(req)
					if err != nil {
						errs <- err
						return
					}
					b, err := io.ReadAll(resp.Body)
					resp.Body.Close()
					if want := fmt.Sprintf("POST /req/%d body-%d", i, i); err != nil || string(b) != want {
						errs <- fmt.Errorf("exchange %d: got %d %q (%v), want %q", i, resp.StatusCode, b, err, want)
					}
				})
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Error(err)
			}
		})
	}
}

// TestProxyStalledDownload checks that a download whose client stopped reading (so every buffer on its path is
// full) does not hold up other exchanges on the same tunnel.
func TestProxyStalledDownload(t *testing.T) {
	for _, kind := range hostKinds {
		t.Run(string(kind), func(t *testing.T) {
			var written atomic.Int64
			handlerDone := make(chan struct{})
			e := startProxy(t, kind, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path != "/big" {
					_, _ = io.WriteString(w, "small")
					return
				}
				defer close(handlerDone)
				buf := make([]byte, 32<<10)
				for range (1 << 30) / len(buf) { // bounded: 1 GiB, far more than every buffer on the path
					n, err := w.Write(buf)
					written.Add(int64(n))
					if err != nil {
						return
					}
				}
			}), nil, nil)
			c := newClient(t)
			big := e.do(t, c, "GET", "/big", nil)
			// Wait until the download is stalled: nothing more was written over a few polls.
			last, still := int64(-1), 0
			relaytest.Eventually(t, 20*time.Second, "the download to stall", func() bool {
				time.Sleep(40 * time.Millisecond)
				now := written.Load()
				if now == last && now > 0 {
					still++
				} else {
					still = 0
				}
				last = now
				return still >= 5
			})
			t.Logf("download stalled after %d bytes", last)

			const n = 50
			done := make(chan error, n)
			for i := range n {
				go func() {
					req, _ := http.NewRequest("GET", e.base+fmt.Sprint("/small/", i), nil)
					req.Header.Set("Authorization", "Bearer "+e.token)
					resp, err := c.Do(req)
					if err != nil {
						done <- fmt.Errorf("small exchange %d: %w", i, err)
						return
					}
					got, err := io.ReadAll(resp.Body)
					resp.Body.Close()
					if err != nil || string(got) != "small" {
						done <- fmt.Errorf("small exchange %d: got %d %q %v", i, resp.StatusCode, got, err)
						return
					}
					done <- nil
				}()
			}
			for range n {
				if err := waitChan(t, done, 10*time.Second, "small exchanges beside a stalled download"); err != nil {
					t.Error(err)
				}
			}
			big.Body.Close()
			waitChan(t, handlerDone, 10*time.Second, "the stalled download's handler to end after the client left")
		})
	}
}

// patternReader yields n deterministic pseudo-random bytes from seed, never holding them all.
func patternReader(seed uint64, n int64) io.Reader {
	var s [32]byte
	s[0] = byte(seed)
	return io.LimitReader(rand.NewChaCha8(s), n)
}

// patternSum is the SHA-256 of patternReader(seed, n).
func patternSum(t testing.TB, seed uint64, n int64) [32]byte {
	t.Helper()
	h := sha256.New()
	if _, err := io.CopyBuffer(h, patternReader(seed, n), make([]byte, 256<<10)); err != nil {
		t.Fatal(err)
	}
	return [32]byte(h.Sum(nil))
}

// heapWatch samples the live heap (bytes marked reachable by the latest GC) while a transfer runs. The live heap,
// not HeapInuse, is the sound measure: garbage awaiting collection is not retention, and every byte a relay buffered
// would be live.
type heapWatch struct {
	stop chan struct{}
	done chan struct{}
	base uint64
	peak atomic.Uint64
}

func liveHeap() uint64 {
	s := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

func startHeapWatch() *heapWatch {
	runtime.GC() // a fresh mark, so the base is what is live now
	w := &heapWatch{stop: make(chan struct{}), done: make(chan struct{}), base: liveHeap()}
	go func() {
		defer close(w.done)
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for {
			if v := liveHeap(); v > w.peak.Load() {
				w.peak.Store(v)
			}
			select {
			case <-w.stop:
				return
			case <-tick.C:
			}
		}
	}()
	return w
}

// growth stops the watch and returns how far the live heap rose above its start.
func (w *heapWatch) growth() int64 {
	close(w.stop)
	<-w.done
	return int64(w.peak.Load()) - int64(w.base)
}

// bulkSizes are the download and upload sizes: full size normally, smaller under the race detector (which slows
// every byte copy by an order of magnitude) and in -short runs.
func bulkSizes() (down, up int64) {
	if testing.Short() {
		return 64 << 20, 32 << 20
	}
	return 200 << 20, 50 << 20
}

// maxHeapGrowth bounds how much the live heap may grow during a bulk transfer: the stream windows and copy buffers
// on the path (a few MiB per stream and side), nowhere near the body size.
const maxHeapGrowth = 24 << 20

func TestProxyBulkDownload(t *testing.T) {
	down, _ := bulkSizes()
	for _, kind := range hostKinds {
		t.Run(string(kind), func(t *testing.T) {
			e := startProxy(t, kind, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "application/octet-stream")
				w.Header().Set("Content-Length", fmt.Sprint(down)) // sized: the upload below goes chunked
				_, _ = io.CopyBuffer(w, patternReader(1, down), make([]byte, 64<<10))
			}), nil, nil)
			want := patternSum(t, 1, down)
			c := newClient(t)
			hw := startHeapWatch()
			start := time.Now()
			resp := e.do(t, c, "GET", "/download", nil)
			defer resp.Body.Close()
			if resp.ContentLength != down {
				t.Fatalf("ContentLength = %d, want %d", resp.ContentLength, down)
			}
			h := sha256.New()
			n, err := io.CopyBuffer(h, resp.Body, make([]byte, 256<<10))
			grew := hw.growth()
			t.Logf("downloaded %d MiB in %v; live heap grew by %.1f MiB", n>>20, time.Since(start).Round(time.Millisecond), float64(grew)/(1<<20))
			if err != nil || n != down {
				t.Fatalf("download: %d bytes, err %v; want %d bytes", n, err, down)
			}
			if got := [32]byte(h.Sum(nil)); got != want {
				t.Fatalf("download hash mismatch")
			}
			if grew > maxHeapGrowth {
				t.Fatalf("live heap grew by %d bytes during a %d-byte download; want under %d (bodies must stream)", grew, down, maxHeapGrowth)
			}
		})
	}
}

func TestProxyBulkUpload(t *testing.T) {
	_, up := bulkSizes()
	for _, kind := range hostKinds {
		t.Run(string(kind), func(t *testing.T) {
			type result struct {
				n   int64
				sum [32]byte
				err error
			}
			got := make(chan result, 1)
			e := startProxy(t, kind, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				h := sha256.New()
				n, err := io.CopyBuffer(h, r.Body, make([]byte, 256<<10))
				got <- result{n, [32]byte(h.Sum(nil)), err}
				_, _ = fmt.Fprint(w, n)
			}), nil, nil)
			want := patternSum(t, 2, up)
			c := newClient(t)
			hw := startHeapWatch()
			// No ContentLength: the upload goes chunked, so nothing on the path can size a buffer for it.
			resp := e.do(t, c, "PUT", "/upload", io.MultiReader(patternReader(2, up)))
			body := readAll(t, resp)
			grew := hw.growth()
			t.Logf("uploaded %d MiB; live heap grew by %.1f MiB", up>>20, float64(grew)/(1<<20))
			if resp.StatusCode != 200 || body != fmt.Sprint(up) {
				t.Fatalf("upload answer: %d %q", resp.StatusCode, body)
			}
			r := waitChan(t, got, 10*time.Second, "the upstream's upload result")
			if r.err != nil || r.n != up || r.sum != want {
				t.Fatalf("upstream got %d bytes (err %v), hash match %v; want %d bytes", r.n, r.err, r.sum == want, up)
			}
			if grew > maxHeapGrowth {
				t.Fatalf("live heap grew by %d bytes during a %d-byte upload; want under %d (bodies must stream)", grew, up, maxHeapGrowth)
			}
		})
	}
}

// TestProxyFlushesAsProduced checks that chunked and SSE bodies reach the client piece by piece: the upstream writes
// its second piece only after the client has received the first.
func TestProxyFlushesAsProduced(t *testing.T) {
	cases := []struct {
		name, contentType string
	}{
		{"chunked", "text/plain"},
		{"sse", "text/event-stream"},
	}
	for _, kind := range hostKinds {
		for _, tc := range cases {
			t.Run(string(kind)+"/"+tc.name, func(t *testing.T) {
				gotFirst := make(chan struct{})
				e := startProxy(t, kind, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					w.Header().Set("Content-Type", tc.contentType)
					_, _ = io.WriteString(w, "data: one\n\n")
					http.NewResponseController(w).Flush()
					select {
					case <-gotFirst:
					case <-r.Context().Done():
						return
					case <-time.After(10 * time.Second):
						return
					}
					_, _ = io.WriteString(w, "data: two\n\n")
				}), nil, nil)
				resp := e.do(t, newClient(t), "GET", "/events", nil)
				defer resp.Body.Close()
				if resp.ContentLength != -1 {
					t.Fatalf("ContentLength = %d, want -1 (streamed)", resp.ContentLength)
				}
				br := bufio.NewReader(resp.Body)
				lines := make(chan string, 4)
				go func() {
					defer close(lines)
					for {
						l, err := br.ReadString('\n')
						if err != nil {
							return
						}
						if l != "\n" {
							lines <- l
						}
					}
				}()
				if got := waitChan(t, lines, 5*time.Second, "the first event before the second is written"); got != "data: one\n" {
					t.Fatalf("first piece = %q", got)
				}
				close(gotFirst)
				if got := waitChan(t, lines, 5*time.Second, "the second event"); got != "data: two\n" {
					t.Fatalf("second piece = %q", got)
				}
			})
		}
	}
}

func TestProxyTrailers(t *testing.T) {
	for _, kind := range hostKinds {
		t.Run(string(kind), func(t *testing.T) {
			reqTrailer := make(chan string, 1)
			e := startProxy(t, kind, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				_, _ = io.Copy(io.Discard, r.Body)
				reqTrailer <- r.Trailer.Get("X-Req-Checksum")
				w.Header().Set("Trailer", "X-Checksum")
				_, _ = io.WriteString(w, "body")
				w.Header().Set("X-Checksum", "abc123")
				w.Header().Set(http.TrailerPrefix+"X-Late", "undeclared")
			}), nil, nil)
			req, _ := http.NewRequest("POST", e.base+"/t", io.MultiReader(strings.NewReader("request body")))
			req.Header.Set("Authorization", "Bearer "+e.token)
			req.Trailer = http.Header{"X-Req-Checksum": nil}
			pr, pw := io.Pipe()
			req.Body = pr
			go func() {
				_, _ = io.WriteString(pw, "request body")
				req.Trailer.Set("X-Req-Checksum", "req456")
				_ = pw.Close()
			}()
			resp, err := newClient(t).Do(req)
			if err != nil {
				t.Fatal(err)
			}
			if got := readAll(t, resp); got != "body" {
				t.Fatalf("body = %q", got)
			}
			if got := resp.Trailer.Get("X-Checksum"); got != "abc123" {
				t.Errorf("response trailer X-Checksum = %q, want abc123", got)
			}
			if got := resp.Trailer.Get("X-Late"); got != "undeclared" {
				t.Errorf("undeclared response trailer X-Late = %q, want undeclared", got)
			}
			if got := waitChan(t, reqTrailer, 5*time.Second, "the request trailer"); got != "req456" {
				t.Errorf("request trailer at the host = %q, want req456", got)
			}
		})
	}
}

func TestProxyIdleTimeout(t *testing.T) {
	const idle = 300 * time.Millisecond
	short := func(c *relay.Config) { c.IdleTimeout = idle }
	for _, kind := range hostKinds {
		t.Run(string(kind)+"/no_answer", func(t *testing.T) {
			release := make(chan struct{})
			e := startProxy(t, kind, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				select {
				case <-release:
				case <-r.Context().Done():
				}
			}), short, nil)
			defer close(release)
			start := time.Now()
			resp := e.do(t, newClient(t), "GET", "/hang", nil)
			if resp.StatusCode != http.StatusGatewayTimeout {
				t.Fatalf("status = %d, want 504", resp.StatusCode)
			}
			if code := errorCode(t, resp); code != "upstream_timeout" {
				t.Fatalf("code = %q, want upstream_timeout", code)
			}
			if took := time.Since(start); took < idle || took > 10*time.Second {
				t.Fatalf("504 after %v; want after the %v idle timeout and within 10 s", took, idle)
			}
		})
		t.Run(string(kind)+"/stall_mid_body", func(t *testing.T) {
			release := make(chan struct{})
			e := startProxy(t, kind, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				_, _ = io.WriteString(w, "partial")
				http.NewResponseController(w).Flush()
				select {
				case <-release:
				case <-r.Context().Done():
				}
			}), short, nil)
			defer close(release)
			resp := e.do(t, newClient(t), "GET", "/stall", nil)
			defer resp.Body.Close()
			done := make(chan error, 1)
			go func() {
				_, err := io.ReadAll(resp.Body)
				done <- err
			}()
			if err := waitChan(t, done, 10*time.Second, "a stalled body to be cut"); err == nil {
				t.Fatalf("a body that stalled past the idle timeout ended cleanly; want it cut")
			}
		})
		t.Run(string(kind)+"/slow_sse_not_cut", func(t *testing.T) {
			const events = 12 // 1.2 s: four idle timeouts
			e := startProxy(t, kind, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "text/event-stream")
				tick := time.NewTicker(100 * time.Millisecond)
				defer tick.Stop()
				for i := range events {
					_, _ = fmt.Fprintf(w, "data: %d\n\n", i)
					http.NewResponseController(w).Flush()
					select {
					case <-tick.C:
					case <-r.Context().Done():
						return
					}
				}
			}), short, nil)
			resp := e.do(t, newClient(t), "GET", "/slow", nil)
			body := readAll(t, resp)
			if got := strings.Count(body, "data: "); got != events {
				t.Fatalf("got %d events, want %d: %q", got, events, body)
			}
		})
	}
}

func TestProxyClientGoneCancelsUpstream(t *testing.T) {
	for _, kind := range hostKinds {
		t.Run(string(kind), func(t *testing.T) {
			started := make(chan struct{})
			cancelled := make(chan struct{})
			e := startProxy(t, kind, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.WriteHeader(200)
				http.NewResponseController(w).Flush()
				close(started)
				select {
				case <-r.Context().Done():
					close(cancelled)
				case <-time.After(15 * time.Second):
				}
			}), nil, nil)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			req, _ := http.NewRequestWithContext(ctx, "GET", e.base+"/long", nil)
			req.Header.Set("Authorization", "Bearer "+e.token)
			resp, err := newClient(t).Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			waitChan(t, started, 5*time.Second, "the upstream handler to start")
			cancel()
			waitChan(t, cancelled, 10*time.Second, "the upstream request's context to end after the client left")
		})
	}
}

func TestProxyHeaderHygiene(t *testing.T) {
	for _, kind := range hostKinds {
		t.Run(string(kind), func(t *testing.T) {
			seen := make(chan *http.Request, 1)
			fixed := http.Header{"X-Upstream-Secret": {"s3cret"}}
			e := startProxy(t, kind, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				seen <- r.Clone(context.Background())
				w.Header().Set("Connection", "X-Resp-Hop")
				w.Header().Set("X-Resp-Hop", "1")
				w.Header().Set("Keep-Alive", "timeout=5")
				w.Header().Set("X-Resp-Kept", "yes")
				_, _ = io.WriteString(w, "ok")
			}), nil, fixed)
			const query = "b=2&access_token=%s&a=1&c=%%2F+x&d=%%41&e"
			req, _ := http.NewRequest("GET", e.base+"/h?"+fmt.Sprintf(query, e.token), nil)
			req.Header.Set("Authorization", "Bearer "+e.token)
			req.Header.Set("Connection", "X-Custom-Hop, keep-alive")
			req.Header.Set("X-Custom-Hop", "1")
			req.Header.Set("Keep-Alive", "timeout=5")
			req.Header.Set("Proxy-Authorization", "Basic Zm9vOmJhcg==")
			req.Header.Set("Proxy-Connection", "keep-alive")
			req.Header.Set("Te", "gzip")
			req.Header.Set("X-Switchboard-Subject", "mallory")
			req.Header.Set("X-Forwarded-For", "203.0.113.9")
			req.Header.Set("X-Forwarded-Host", "evil.example")
			req.Header.Set("X-Forwarded-Proto", "https")
			req.Header.Set("X-Upstream-Secret", "forged")
			req.Header.Set("X-End-To-End", "kept")
			resp, err := newClient(t).Do(req)
			if err != nil {
				t.Fatal(err)
			}
			if got := readAll(t, resp); resp.StatusCode != 200 || got != "ok" {
				t.Fatalf("got %d %q", resp.StatusCode, got)
			}
			if got := resp.Header.Get("X-Resp-Hop"); got != "" {
				t.Errorf("response header listed in Connection reached the client: %q", got)
			}
			if got := resp.Header.Get("Keep-Alive"); got != "" {
				t.Errorf("response Keep-Alive reached the client: %q", got)
			}
			if got := resp.Header.Get("X-Resp-Kept"); got != "yes" {
				t.Errorf("response X-Resp-Kept = %q, want yes", got)
			}

			r := waitChan(t, seen, 5*time.Second, "the upstream request")
			if got, want := r.URL.RawQuery, "b=2&a=1&c=%2F+x&d=%41&e"; got != want {
				t.Errorf("query at the host = %q, want %q", got, want)
			}
			absent := []string{"Authorization", "X-Custom-Hop", "Keep-Alive", "Proxy-Authorization", "Proxy-Connection", "Te"}
			for _, k := range absent {
				if v, ok := r.Header[k]; ok {
					t.Errorf("header %s reached the host: %q", k, v)
				}
			}
			if c := r.Header.Get("Connection"); c != "" && !strings.EqualFold(c, "keep-alive") {
				t.Errorf("Connection at the host = %q", c)
			}
			want := map[string]string{
				"X-Switchboard-Subject": "alice",
				"X-Forwarded-For":       "127.0.0.1",
				"X-Forwarded-Host":      strings.TrimPrefix(e.relay.URL, "http://"),
				"X-Forwarded-Proto":     "http",
				"X-End-To-End":          "kept",
			}
			if kind == upstreamHost {
				want["X-Upstream-Secret"] = "s3cret"
			}
			for k, v := range want {
				if got := r.Header.Values(k); len(got) != 1 || got[0] != v {
					t.Errorf("header %s at the host = %q, want [%q]", k, got, v)
				}
			}
		})
	}
}

// rawGet sends a request line with exactly the given request target (no client-side cleaning) and returns the
// response.
func rawGet(t testing.TB, relayURL, target, token string) *http.Response {
	t.Helper()
	conn, err := net.Dial("tcp", strings.TrimPrefix(relayURL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: relay\r\nAuthorization: Bearer %s\r\nConnection: close\r\n\r\n", target, token); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("GET %s: %v", target, err)
	}
	return resp
}

func TestProxyPathsExactlyAsSent(t *testing.T) {
	paths := []string{
		"/",
		"/a/b",
		"/a//b",
		"//lead",
		"/a/%2F/b",
		"/a%2Fb",
		"/a/../b",
		"/a/./b/.",
		"/..%2F..%2Fetc",
		"/%2e%2e/x",
		"/sp%20ace/%3A/%25",
		"/trail/",
		"/q?x=%2F&y=1",
	}
	for _, kind := range hostKinds {
		t.Run(string(kind), func(t *testing.T) {
			e := startProxy(t, kind, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				_, _ = io.WriteString(w, r.RequestURI)
			}), nil, nil)
			for _, escapedID := range []string{"org:machine", "org%3Amachine", "org%3amachine"} {
				for _, p := range paths {
					resp := rawGet(t, e.relay.URL, "/hosts/"+escapedID+p, e.token)
					if got := readAll(t, resp); resp.StatusCode != 200 || got != p {
						t.Errorf("/hosts/%s%s: host got %d %q, want %q", escapedID, p, resp.StatusCode, got, p)
					}
				}
			}
			// No path after the id is redirected to the trailing slash, the id spelled as sent (a page at
			// /hosts/{id} would resolve its relative URLs against /hosts/, another host); with it, "/" reaches the host.
			resp := rawGet(t, e.relay.URL, "/hosts/org%3Amachine?q=1", e.token)
			if _ = readAll(t, resp); resp.StatusCode != http.StatusPermanentRedirect || resp.Header.Get("Location") != "/hosts/org%3Amachine/?q=1" {
				t.Errorf("/hosts/org%%3Amachine: %d Location %q, want 308 to /hosts/org%%3Amachine/?q=1", resp.StatusCode, resp.Header.Get("Location"))
			}
			resp = rawGet(t, e.relay.URL, "/hosts/org%3Amachine/", e.token)
			if got := readAll(t, resp); resp.StatusCode != 200 || got != "/" {
				t.Errorf("/hosts/org%%3Amachine/: host got %d %q, want \"/\"", resp.StatusCode, got)
			}
		})
	}
}

func TestProxyErrors(t *testing.T) {
	r := relaytest.StartRelay(t, nil)
	// A host whose upstream is gone: its agent cannot connect.
	dead, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadURL := &url.URL{Scheme: "http", Host: dead.Addr().String()}
	_ = dead.Close()
	relaytest.StartHost(t, r.URL, "org:noupstream", agent.UpstreamHandler(deadURL, nil), nil)
	// A host that drops every stream without answering.
	relaytest.StartHost(t, r.URL, "org:broken", http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		conn, _, err := http.NewResponseController(w).Hijack()
		if err == nil {
			_ = conn.Close()
		}
	}), nil)
	tok := relaytest.ClientToken(t, "alice", "org:*")
	longID := strings.Repeat("x", 129)
	cases := []struct {
		name, path string
		status     int
		code       string
	}{
		{"offline", "/hosts/org:nobody/x", 503, "host_offline"},
		{"id_with_slash", "/hosts/org%2Fm/x", 400, "invalid_host_id"},
		{"id_too_long", "/hosts/" + longID + "/x", 400, "invalid_host_id"},
		{"id_empty", "/hosts//x", 400, "invalid_host_id"},
		{"id_control_char", "/hosts/a%01b/x", 400, "invalid_host_id"},
		{"upstream_unreachable", "/hosts/org:noupstream/x", 502, "upstream_unreachable"},
		{"host_dropped_stream", "/hosts/org:broken/x", 502, "upstream_failed"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			resp := rawGet(t, r.URL, tc.path, tok)
			if resp.StatusCode != tc.status {
				t.Fatalf("status = %d, want %d", resp.StatusCode, tc.status)
			}
			if got := errorCode(t, resp); got != tc.code {
				t.Fatalf("code = %q, want %q", got, tc.code)
			}
			if tc.status == 503 && resp.Header.Get("Retry-After") == "" {
				t.Fatalf("503 without Retry-After")
			}
		})
	}
}

// TestProxyStalledClientIsCut checks the idle timeout in the other direction: a client that stops reading a
// download makes no progress, so the relay cuts the exchange and the upstream's writes fail, instead of holding a
// stream (and its window of buffered bytes) for as long as the client stays connected.
func TestProxyStalledClientIsCut(t *testing.T) {
	handlerDone := make(chan struct{})
	e := startProxy(t, upstreamHost, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer close(handlerDone)
		buf := make([]byte, 32<<10)
		for range (1 << 30) / len(buf) {
			if _, err := w.Write(buf); err != nil {
				return
			}
		}
	}), func(c *relay.Config) { c.IdleTimeout = 300 * time.Millisecond }, nil)
	resp := e.do(t, newClient(t), "GET", "/big", nil)
	defer resp.Body.Close()
	waitChan(t, handlerDone, 10*time.Second, "the relay to cut a download its client stopped reading")
}

// TestProxyKeepAliveAfterQuietSpell checks that a client connection that stays idle longer than the idle timeout
// between exchanges still carries the next ones, bodyless answers included: no write deadline of an earlier
// exchange lingers on it.
func TestProxyKeepAliveAfterQuietSpell(t *testing.T) {
	const idle = 200 * time.Millisecond
	e := startProxy(t, listenerHost, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/empty" {
			w.WriteHeader(http.StatusNoContent)
			return
		}
		_, _ = io.WriteString(w, "body")
	}), func(c *relay.Config) { c.IdleTimeout = idle }, nil)
	c := newClient(t)
	for i, path := range []string{"/body", "/empty", "/body", "/empty"} {
		if i > 0 {
			quiet := time.NewTimer(2 * idle) // the point of the test: stay idle past the timeout
			<-quiet.C
		}
		var reused bool
		trace := &httptrace.ClientTrace{GotConn: func(info httptrace.GotConnInfo) { reused = info.Reused }}
		req, _ := http.NewRequestWithContext(httptrace.WithClientTrace(context.Background(), trace), "GET", e.base+path, nil)
		req.Header.Set("Authorization", "Bearer "+e.token)
		resp, err := c.Do(req)
		if err != nil {
			t.Fatalf("exchange %d %s: %v", i, path, err)
		}
		body := readAll(t, resp)
		if want := map[string]int{"/body": 200, "/empty": 204}[path]; resp.StatusCode != want {
			t.Fatalf("exchange %d %s: status %d, want %d", i, path, resp.StatusCode, want)
		}
		if path == "/body" && body != "body" {
			t.Fatalf("exchange %d: body %q", i, body)
		}
		if i > 0 && !reused {
			t.Fatalf("exchange %d did not reuse the keep-alive connection", i)
		}
	}
}

// TestProxyStalledUpload checks the idle timeout on request bodies, both ways a body can stop moving: the client
// stops sending it, or the host stops reading it.
func TestProxyStalledUpload(t *testing.T) {
	const idle = 300 * time.Millisecond
	short := func(c *relay.Config) { c.IdleTimeout = idle }
	for _, kind := range hostKinds {
		t.Run(string(kind)+"/client_stops_sending", func(t *testing.T) {
			bodyErr := make(chan error, 1)
			e := startProxy(t, kind, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				_, err := io.Copy(io.Discard, r.Body)
				bodyErr <- err
			}), short, nil)
			pr, pw := io.Pipe()
			defer pw.Close()
			go func() { _, _ = pw.Write(make([]byte, 1024)) }() // then nothing more, and no end
			req, _ := http.NewRequest("PUT", e.base+"/up", pr)
			req.ContentLength = 1 << 20
			req.Header.Set("Authorization", "Bearer "+e.token)
			go func() {
				if resp, err := newClient(t).Do(req); err == nil {
					resp.Body.Close()
				}
			}()
			if err := waitChan(t, bodyErr, 10*time.Second, "the host's body read to fail after the client stalled"); err == nil {
				t.Fatalf("the host read a complete body from a client that stalled")
			}
		})
		t.Run(string(kind)+"/host_stops_reading", func(t *testing.T) {
			release := make(chan struct{})
			e := startProxy(t, kind, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				select { // never reads the body, never answers
				case <-release:
				case <-r.Context().Done():
				}
			}), short, nil)
			defer close(release)
			resp := e.do(t, newClient(t), "PUT", "/up", io.MultiReader(patternReader(3, 64<<20)))
			if resp.StatusCode != http.StatusGatewayTimeout {
				t.Fatalf("status = %d, want 504", resp.StatusCode)
			}
			if code := errorCode(t, resp); code != "upstream_timeout" {
				t.Fatalf("code = %q, want upstream_timeout", code)
			}
		})
	}
}

// TestProxyBodilessAnswers checks answers that carry no body however they look: HEAD, 204 and 304.
func TestProxyBodilessAnswers(t *testing.T) {
	for _, kind := range hostKinds {
		t.Run(string(kind), func(t *testing.T) {
			e := startProxy(t, kind, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				switch r.URL.Path {
				case "/204":
					w.WriteHeader(http.StatusNoContent)
				case "/304":
					w.Header().Set("ETag", `"v1"`)
					w.WriteHeader(http.StatusNotModified)
				default:
					w.Header().Set("Content-Length", "11")
					_, _ = io.WriteString(w, "hello world")
				}
			}), nil, nil)
			c := newClient(t)
			cases := []struct {
				method, path string
				status       int
				length       int64
			}{
				{"HEAD", "/file", 200, 11},
				{"GET", "/file", 200, 11},
				{"GET", "/204", 204, 0},
				{"GET", "/304", 304, 0},
				{"HEAD", "/file", 200, 11},
			}
			for _, tc := range cases {
				resp := e.do(t, c, tc.method, tc.path, nil)
				body := readAll(t, resp)
				if resp.StatusCode != tc.status {
					t.Fatalf("%s %s: status %d, want %d", tc.method, tc.path, resp.StatusCode, tc.status)
				}
				if tc.status == 200 && resp.ContentLength != tc.length {
					t.Fatalf("%s %s: ContentLength %d, want %d", tc.method, tc.path, resp.ContentLength, tc.length)
				}
				if want := map[bool]string{true: "hello world", false: ""}[tc.method == "GET" && tc.status == 200]; body != want {
					t.Fatalf("%s %s: body %q, want %q", tc.method, tc.path, body, want)
				}
			}
		})
	}
}

// TestProxySlowUploadNotCut checks that an upload that keeps moving is not cut though the host answers only at its
// end, long after the idle timeout: progress on the request body counts as progress of the exchange.
func TestProxySlowUploadNotCut(t *testing.T) {
	// An idle timeout well above the upload's 100 ms gaps, so that a busy machine's scheduling delays do not cut
	// the exchange for real (the host answers only after the whole upload, then the answer must arrive in time).
	const idle = time.Second
	for _, kind := range hostKinds {
		t.Run(string(kind), func(t *testing.T) {
			e := startProxy(t, kind, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				n, err := io.Copy(io.Discard, r.Body)
				if err != nil {
					http.Error(w, err.Error(), http.StatusBadRequest)
					return
				}
				_, _ = fmt.Fprint(w, n)
			}), func(c *relay.Config) { c.IdleTimeout = idle }, nil)
			pr, pw := io.Pipe()
			const chunks = 30 // 3 s: three idle timeouts
			go func() {
				tick := time.NewTicker(100 * time.Millisecond)
				defer tick.Stop()
				for range chunks {
					if _, err := pw.Write(make([]byte, 1000)); err != nil {
						return
					}
					<-tick.C
				}
				_ = pw.Close()
			}()
			defer pr.Close()
			resp := e.do(t, newClient(t), "POST", "/slow-upload", pr)
			if got := readAll(t, resp); resp.StatusCode != 200 || got != fmt.Sprint(chunks*1000) {
				t.Fatalf("got %d %q, want 200 %d", resp.StatusCode, got, chunks*1000)
			}
		})
	}
}

// TestProxyHostGoneMidBody checks that a body cut short by a lost tunnel reaches the client as an error, never as
// a clean, shorter body, whether the answer was sized or chunked.
func TestProxyHostGoneMidBody(t *testing.T) {
	for _, sized := range []bool{true, false} {
		t.Run(fmt.Sprint("sized=", sized), func(t *testing.T) {
			r := relaytest.StartRelay(t, nil)
			wrote := make(chan struct{})
			ln := relaytest.StartHost(t, r.URL, hostID, http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
				if sized {
					w.Header().Set("Content-Length", "100000")
				}
				_, _ = w.Write(make([]byte, 1000))
				http.NewResponseController(w).Flush()
				close(wrote)
				<-req.Context().Done()
			}), nil)
			e := proxyEnv{relay: r, base: r.URL + "/hosts/" + hostID, token: relaytest.ClientToken(t, "alice", "org:*")}
			// The relay may hold a sized answer's first bytes (and its header) until its buffer fills, so the
			// exchange runs beside the test: either the request or the body read must fail.
			c := newClient(t)
			done := make(chan error, 1)
			go func() {
				req, _ := http.NewRequest("GET", e.base+"/partial", nil)
				req.Header.Set("Authorization", "Bearer "+e.token)
				resp, err := c.Do(req)
				if err != nil {
					done <- err
					return
				}
				defer resp.Body.Close()
				_, err = io.ReadAll(resp.Body)
				if err == nil && resp.StatusCode != http.StatusOK {
					// On a loaded machine the tunnel may die before the relay read the answer's header: then the
					// client gets a whole 502, which is as much a failure as a cut body.
					err = fmt.Errorf("status %d", resp.StatusCode)
				}
				done <- err
			}()
			waitChan(t, wrote, 5*time.Second, "the first part of the body")
			_ = ln.Close() // the tunnel goes away mid-body
			if err := waitChan(t, done, 10*time.Second, "the client's exchange to end"); err == nil {
				t.Fatalf("a body cut by a lost tunnel ended cleanly")
			}
		})
	}
}

// TestProxyTrustForwardedFor checks that behind a trusted proxy the client's X-Forwarded-For is extended, not
// replaced, for plain exchanges and WebSocket upgrades alike.
func TestProxyTrustForwardedFor(t *testing.T) {
	seen := make(chan string, 2)
	e := startProxy(t, upstreamHost, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen <- strings.Join(r.Header.Values("X-Forwarded-For"), ", ")
		if r.Header.Get("Upgrade") != "" {
			http.Error(w, "no", http.StatusForbidden)
		}
	}), func(c *relay.Config) { c.TrustForwardedFor = true }, nil)
	const want = "203.0.113.9, 127.0.0.1"
	for _, upgrade := range []bool{false, true} {
		req, _ := http.NewRequest("GET", e.base+"/xff", nil)
		req.Header.Set("Authorization", "Bearer "+e.token)
		req.Header.Set("X-Forwarded-For", "203.0.113.9")
		if upgrade {
			req.Header.Set("Connection", "Upgrade")
			req.Header.Set("Upgrade", "websocket")
		}
		resp, err := newClient(t).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		readAll(t, resp)
		if got := waitChan(t, seen, 5*time.Second, "the upstream request"); got != want {
			t.Errorf("upgrade=%v: X-Forwarded-For at the upstream = %q, want %q", upgrade, got, want)
		}
	}
}
