package relay_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/switchboard-relay/switchboard/internal/relay"
	"github.com/switchboard-relay/switchboard/internal/relaytest"
)

// rawHost is a host that answers the relay's streams with bytes of the test's choosing, several requests per
// stream when the answer allows: what the relay's exchange code sees from a host, byte for byte.
type rawHost struct {
	streams  atomic.Int64 // streams the relay opened
	requests atomic.Int64 // requests read
	mu       sync.Mutex
	got      []*http.Request // every request read, its body read into gotBody
	gotBody  []string
}

// startRawHost registers id on relayURL; answer writes the answer to req on c and reports whether the stream may
// carry another request. The request body is read first unless answer is called with readBody false for it.
func startRawHost(t *testing.T, relayURL, id string, readBody func(*http.Request) bool,
	answer func(req *http.Request, c net.Conn) (keep bool)) *rawHost {
	t.Helper()
	h := &rawHost{}
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
				defer c.Close()
				br := bufio.NewReader(c)
				for {
					req, err := http.ReadRequest(br)
					if err != nil {
						return
					}
					h.requests.Add(1)
					body := ""
					if readBody == nil || readBody(req) {
						b, _ := io.ReadAll(req.Body)
						body = string(b)
					}
					h.mu.Lock()
					h.got = append(h.got, req)
					h.gotBody = append(h.gotBody, body)
					h.mu.Unlock()
					if !answer(req, c) {
						return
					}
				}
			})
		}
	})
	t.Cleanup(func() {
		_ = ln.Close()
		wg.Wait()
	})
	return h
}

// TestExchangeEdgeCases runs the HTTP/1.1 edge cases of a host's answer through the relay: what the client gets
// for each, including the relay's refusals (502 with a clear code) of answers it cannot pass on faithfully.
func TestExchangeEdgeCases(t *testing.T) {
	cases := []struct {
		name   string
		method string
		answer string // the host's raw answer
		// what the client sees
		status   int
		body     string
		code     string // error code of a relay answer, if any
		cut      bool   // the client's read of the body fails
		header   map[string]string
		trailer  map[string]string
		interims []int
	}{
		{name: "sized", answer: "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: 1\r\n\r\nhello",
			status: 200, body: "hello", header: map[string]string{"X-A": "1", "Content-Length": "5"}},
		{name: "bare LF line ends", answer: "HTTP/1.1 200 OK\nContent-Length: 2\nX-A: b\n\nhi",
			status: 200, body: "hi", header: map[string]string{"X-A": "b"}},
		{name: "chunked", answer: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;ext=1\r\nde\r\n0\r\n\r\n",
			status: 200, body: "abcde"},
		{name: "chunked trailers announced and not",
			answer: "HTTP/1.1 200 OK\r\nTrailer: X-Sum\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\nX-Sum: 9\r\nX-Late: l\r\nFly-Replay: elsewhere\r\n\r\n",
			status: 200, body: "ok", trailer: map[string]string{"X-Sum": "9", "X-Late": "l", "Fly-Replay": ""}},
		{name: "close-delimited", answer: "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end",
			status: 200, body: "until the end"},
		{name: "HTTP/1.0", answer: "HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\nold", status: 200, body: "old"},
		{name: "HEAD keeps Content-Length", method: "HEAD", answer: "HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\n",
			status: 200, header: map[string]string{"Content-Length": "11"}},
		{name: "204", answer: "HTTP/1.1 204 No Content\r\n\r\n", status: 204},
		{name: "304", answer: "HTTP/1.1 304 Not Modified\r\nETag: \"v\"\r\n\r\n", status: 304,
			header: map[string]string{"Etag": `"v"`}},
		{name: "no reason phrase", answer: "HTTP/1.1 201\r\nContent-Length: 0\r\n\r\n", status: 201},
		{name: "repeated equal Content-Length", answer: "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length:  2\r\n\r\nok",
			status: 200, body: "ok", header: map[string]string{"Content-Length": "2"}},
		{name: "Content-Length list", answer: "HTTP/1.1 200 OK\r\nContent-Length: 2, 2\r\n\r\nok", status: 502, code: "upstream_failed"},
		{name: "Content-Length spelt two ways", answer: "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 02\r\n\r\nok",
			status: 502, code: "upstream_failed"},
		{name: "103 early hints passed on", answer: "HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n" +
			"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx", status: 200, body: "x", interims: []int{103}},
		{name: "unasked 100 dropped", answer: "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\ny",
			status: 200, body: "y"},
		{name: "reserved answer headers stripped", answer: "HTTP/1.1 200 OK\r\nX-Accel-Redirect: /etc\r\nFly-Replay: x\r\nX-Ok: 1\r\nContent-Length: 0\r\n\r\n",
			status: 200, header: map[string]string{"X-Accel-Redirect": "", "Fly-Replay": "", "X-Ok": "1"}},
		{name: "hop-by-hop answer headers removed", answer: "HTTP/1.1 200 OK\r\nConnection: X-Private\r\nX-Private: p\r\nKeep-Alive: timeout=5\r\nContent-Length: 0\r\n\r\n",
			status: 200, header: map[string]string{"X-Private": "", "Keep-Alive": ""}},

		{name: "differing Content-Length", answer: "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nabc",
			status: 502, code: "upstream_failed"},
		{name: "Content-Length list differing", answer: "HTTP/1.1 200 OK\r\nContent-Length: 2, 3\r\n\r\nabc",
			status: 502, code: "upstream_failed"},
		{name: "signed Content-Length", answer: "HTTP/1.1 200 OK\r\nContent-Length: +2\r\n\r\nab",
			status: 502, code: "upstream_failed"},
		{name: "Transfer-Encoding and Content-Length", answer: "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
			status: 502, code: "upstream_failed"},
		{name: "unknown transfer coding", answer: "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
			status: 502, code: "upstream_failed"},
		{name: "malformed status line", answer: "HTTP/1.1 2000 OK\r\n\r\n", status: 502, code: "upstream_failed"},
		{name: "not HTTP", answer: "SSH-2.0-OpenSSH\r\n\r\n", status: 502, code: "upstream_failed"},
		{name: "status out of range", answer: "HTTP/1.1 600 Nope\r\nContent-Length: 0\r\n\r\n", status: 502, code: "upstream_failed"},
		{name: "HTTP/2 status line", answer: "HTTP/2 200\r\n\r\n", status: 502, code: "upstream_failed"},
		{name: "obs-fold", answer: "HTTP/1.1 200 OK\r\nX-A: 1\r\n folded\r\nContent-Length: 0\r\n\r\n", status: 502, code: "upstream_failed"},
		{name: "space before colon", answer: "HTTP/1.1 200 OK\r\nContent-Length : 0\r\n\r\n", status: 502, code: "upstream_failed"},
		{name: "NUL in a value", answer: "HTTP/1.1 200 OK\r\nX-A: a\x00b\r\nContent-Length: 0\r\n\r\n", status: 502, code: "upstream_failed"},
		{name: "unasked 101", answer: "HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\nConnection: Upgrade\r\n\r\n", status: 502, code: "upstream_failed"},
		{name: "interim answers without end", answer: strings.Repeat("HTTP/1.1 103 Early Hints\r\n\r\n", 10), status: 502, code: "upstream_failed"},
		{name: "head without end", answer: "HTTP/1.1 200 OK\r\nX-A: 1\r\n", status: 502, code: "upstream_failed"},
		{name: "head too large", answer: "HTTP/1.1 200 OK\r\nX-Big: " + strings.Repeat("b", 4<<10) + "\r\nContent-Length: 0\r\n\r\n",
			status: 502, code: "upstream_header_too_large"},
		{name: "body shorter than Content-Length", answer: "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",
			status: 200, cut: true},
		{name: "chunked body cut", answer: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nabc", status: 200, cut: true},
		{name: "malformed chunk", answer: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n", status: 200, cut: true},
	}
	r := relaytest.StartRelay(t, func(c *relay.Config) { c.MaxResponseHeaderBytes = 2 << 10 })
	tok := relaytest.ClientToken(t, "alice", "*")
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			id := fmt.Sprintf("edge-%d", i)
			startRawHost(t, r.URL, id, nil, func(_ *http.Request, c net.Conn) bool {
				_, _ = io.WriteString(c, tc.answer)
				return false // the stream ends with the answer: a close-delimited or cut body ends here
			})
			method := tc.method
			if method == "" {
				method = "GET"
			}
			req, _ := http.NewRequest(method, r.URL+"/hosts/"+id+"/x", nil)
			req.Header.Set("Authorization", "Bearer "+tok)
			var interims []int
			req = req.WithContext(httptrace.WithClientTrace(req.Context(), &httptrace.ClientTrace{
				Got1xxResponse: func(code int, _ textproto.MIMEHeader) error {
					interims = append(interims, code)
					return nil
				},
			}))
			resp, err := newClient(t).Do(req)
			if err != nil {
				if tc.cut {
					return // the answer was cut before its head left the relay: a failure as much as a cut body
				}
				t.Fatal(err)
			}
			if resp.StatusCode != tc.status {
				resp.Body.Close()
				t.Fatalf("status %d, want %d", resp.StatusCode, tc.status)
			}
			if tc.code != "" {
				if code := errorCode(t, resp); code != tc.code {
					t.Fatalf("code %q, want %q", code, tc.code)
				}
				return
			}
			body, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if tc.cut {
				if err == nil {
					t.Fatalf("a cut answer reached the client as a clean %q", body)
				}
				return
			}
			if err != nil {
				t.Fatalf("read body: %v", err)
			}
			if string(body) != tc.body {
				t.Errorf("body %q, want %q", body, tc.body)
			}
			for k, want := range tc.header {
				got := resp.Header.Get(k)
				if k == "Content-Length" && method == "HEAD" {
					got = fmt.Sprint(resp.ContentLength)
				}
				if got != want {
					t.Errorf("header %s = %q, want %q", k, got, want)
				}
			}
			for k, want := range tc.trailer {
				if got := resp.Trailer.Get(k); got != want {
					t.Errorf("trailer %s = %q, want %q", k, got, want)
				}
			}
			if fmt.Sprint(interims) != fmt.Sprint(tc.interims) && !(len(interims) == 0 && len(tc.interims) == 0) {
				t.Errorf("interim answers %v, want %v", interims, tc.interims)
			}
		})
	}
}

// TestExchangeKeepsStreams checks stream reuse: answers that allow it leave their stream for the next exchange;
// Connection: close, HTTP/1.0 and a body the client did not take all end theirs.
func TestExchangeKeepsStreams(t *testing.T) {
	cases := []struct {
		name    string
		answer  string
		streams int64 // streams opened for three sequential GETs
	}{
		{"keep-alive", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", 1},
		{"chunked keep-alive", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n", 1},
		{"connection close", "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok", 3},
		{"HTTP/1.0", "HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok", 3},
	}
	r := relaytest.StartRelay(t, nil)
	tok := relaytest.ClientToken(t, "alice", "*")
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			id := fmt.Sprintf("keep-%d", i)
			h := startRawHost(t, r.URL, id, nil, func(_ *http.Request, c net.Conn) bool {
				_, _ = io.WriteString(c, tc.answer)
				return true // the host would go on; the relay decides
			})
			for range 3 {
				resp := relaytest.Do(t, "GET", r.URL+"/hosts/"+id+"/x", tok)
				if got := readAll(t, resp); resp.StatusCode != 200 || got != "ok" {
					t.Fatalf("got %d %q", resp.StatusCode, got)
				}
			}
			if got := h.streams.Load(); got != tc.streams {
				t.Fatalf("streams opened for 3 exchanges: %d, want %d", got, tc.streams)
			}
		})
	}
}

// TestExchangeStaleKeptStream checks that a GET sent on a kept stream that the host had closed meanwhile is sent
// again on a fresh stream, and that a POST never takes a kept stream (it could not be sent again).
func TestExchangeStaleKeptStream(t *testing.T) {
	r := relaytest.StartRelay(t, nil)
	tok := relaytest.ClientToken(t, "alice", "*")
	var first atomic.Bool
	h := startRawHost(t, r.URL, "stale", nil, func(req *http.Request, c net.Conn) bool {
		if req.Method == "GET" && first.CompareAndSwap(false, true) {
			// Keep-alive as far as the relay can tell, but the host closes the stream right after.
			_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
			return false
		}
		_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		return true
	})
	for i := range 2 {
		resp := relaytest.Do(t, "GET", r.URL+"/hosts/stale/x", tok)
		if got := readAll(t, resp); resp.StatusCode != 200 || got != "ok" {
			t.Fatalf("GET %d: %d %q", i, resp.StatusCode, got)
		}
	}
	if got := h.requests.Load(); got != 2 {
		t.Fatalf("host read %d requests, want 2 (the retried one is not counted twice: the stale stream got nothing)", got)
	}
	before := h.streams.Load()
	req, _ := http.NewRequest("POST", r.URL+"/hosts/stale/x", strings.NewReader("data"))
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := newClient(t).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	readAll(t, resp)
	if got := h.streams.Load(); got != before+1 {
		t.Fatalf("a POST took a kept stream (streams %d → %d)", before, got)
	}
}

// TestExchangeExpectContinue checks "Expect: 100-continue": the body waits for the host's 100, which reaches the
// client; a host that answers at once with a final status never gets the body, and the client gets that answer.
func TestExchangeExpectContinue(t *testing.T) {
	r := relaytest.StartRelay(t, nil)
	tok := relaytest.ClientToken(t, "alice", "*")
	h := startRawHost(t, r.URL, "expect", func(req *http.Request) bool { return false },
		func(req *http.Request, c net.Conn) bool {
			if req.URL.Path == "/refuse" {
				_, _ = io.WriteString(c, "HTTP/1.1 413 Content Too Large\r\nContent-Length: 0\r\n\r\n")
				return false
			}
			_, _ = io.WriteString(c, "HTTP/1.1 100 Continue\r\n\r\n")
			b, _ := io.ReadAll(req.Body)
			_, _ = fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(b), b)
			return false
		})
	for _, tc := range []struct {
		path   string
		status int
		body   string
		got100 bool
	}{{"/accept", 200, "payload", true}, {"/refuse", 413, "", false}} {
		t.Run(tc.path, func(t *testing.T) {
			// A raw client: it sends the body only after a 100, so a relay that sent nothing would hang here (the
			// host's 413 must come through without it).
			nc, err := net.Dial("tcp", strings.TrimPrefix(r.URL, "http://"))
			if err != nil {
				t.Fatal(err)
			}
			defer nc.Close()
			_, _ = fmt.Fprintf(nc, "POST /hosts/expect%s HTTP/1.1\r\nHost: relay\r\nAuthorization: Bearer %s\r\n"+
				"Content-Length: 7\r\nExpect: 100-continue\r\n\r\n", tc.path, tok)
			br := bufio.NewReader(nc)
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatal(err)
			}
			got100 := resp.StatusCode == 100
			if got100 {
				_, _ = io.WriteString(nc, "payload")
				if resp, err = http.ReadResponse(br, nil); err != nil {
					t.Fatal(err)
				}
			}
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tc.status || string(body) != tc.body || got100 != tc.got100 {
				t.Fatalf("got 100: %v, then %d %q; want %v, %d %q", got100, resp.StatusCode, body, tc.got100, tc.status, tc.body)
			}
		})
	}
	_ = h
}

// TestExchangeExpectContinueLateHost: a host whose 100 comes after the relay stopped waiting for it (the server
// sent its own 100 and the body went) has it dropped, so the client sees one 100, then the final answer.
func TestExchangeExpectContinueLateHost(t *testing.T) {
	r := relaytest.StartRelay(t, nil)
	tok := relaytest.ClientToken(t, "alice", "*")
	ctx := t.Context()
	late := make(chan struct{}) // closed once the client got the relay's own 100
	startRawHost(t, r.URL, "late", func(req *http.Request) bool { return false },
		func(req *http.Request, c net.Conn) bool {
			select {
			case <-late:
			case <-ctx.Done():
				return false
			}
			_, _ = io.WriteString(c, "HTTP/1.1 100 Continue\r\n\r\n")
			b, _ := io.ReadAll(req.Body)
			_, _ = fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(b), b)
			return false
		})
	nc, err := net.Dial("tcp", strings.TrimPrefix(r.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	_, _ = fmt.Fprintf(nc, "POST /hosts/late/x HTTP/1.1\r\nHost: relay\r\nAuthorization: Bearer %s\r\n"+
		"Content-Length: 7\r\nExpect: 100-continue\r\n\r\n", tok)
	br := bufio.NewReader(nc)
	resp, err := http.ReadResponse(br, nil) // the relay's own, after its wait for the host's ran out
	if err != nil || resp.StatusCode != 100 {
		t.Fatalf("first answer: %v, %v; want 100", resp, err)
	}
	close(late)
	_, _ = io.WriteString(nc, "payload")
	if resp, err = http.ReadResponse(br, nil); err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || string(body) != "payload" {
		t.Fatalf("after the 100: %d %q; want 200 %q (the host's late 100 dropped)", resp.StatusCode, body, "payload")
	}
}
