package agent

import (
	"bufio"
	"bytes"
	"io"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strconv"
	"testing"
)

// FuzzBridgeRequestHead: whatever head arrives on a stream, the bridge either refuses it or sends upstream a head
// that net/http reads with the same method and the same body framing (what a request smuggler would try to make
// differ), with the Host the options choose.
func FuzzBridgeRequestHead(f *testing.F) {
	f.Add([]byte("GET /a?b=c HTTP/1.1\r\nHost: h.example\r\nX-Forwarded-Proto: https\r\n\r\n"))
	f.Add([]byte("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc"))
	f.Add([]byte("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nConnection: Transfer-Encoding\r\n\r\n"))
	f.Add([]byte("GET /ws HTTP/1.1\r\nHost: h\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n\r\n"))
	f.Add([]byte("GET / HTTP/1.0\nHost: h\nConnection: X-A, Content-Length\nX-A: 1\n\n"))
	f.Add([]byte("\r\nPUT / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 10\r\n\r\n"))
	up, _ := url.Parse("http://127.0.0.1:3000/base?k=v")
	b, err := NewBridge(up, UpstreamOptions{Fixed: http.Header{"X-Secret": {"s"}}})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		var h head
		if err := readHead(bufio.NewReader(bytes.NewReader(in)), &h, false); err != nil {
			return
		}
		if h.chunked && h.contentLength >= 0 {
			t.Fatal("accepted both framings")
		}
		out := b.appendRequestHead(nil, &h)
		r, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(out)))
		if err != nil {
			t.Fatalf("net/http refuses what the bridge sends: %v\n%q", err, out)
		}
		if r.Method != string(h.bytes(h.first[0])) || r.Host != "127.0.0.1:3000" {
			t.Fatalf("method %q host %q from %q", r.Method, r.Host, out)
		}
		chunked := len(r.TransferEncoding) > 0
		if chunked != h.chunked {
			t.Fatalf("chunked %v upstream, %v here: %q", chunked, h.chunked, out)
		}
		if !h.chunked {
			want := max(h.contentLength, 0)
			if r.ContentLength != want {
				t.Fatalf("Content-Length %d upstream, %d here: %q", r.ContentLength, want, out)
			}
		}
		if r.Header.Get("X-Secret") != "s" || len(r.Header["X-Secret"]) != 1 {
			t.Fatalf("fixed header %q", r.Header["X-Secret"])
		}
	})
}

// FuzzBridgeResponseHead: whatever head an upstream answers, the bridge either refuses it (502) or passes back a
// head net/http reads with the same status and the same body framing.
func FuzzBridgeResponseHead(f *testing.F) {
	f.Add([]byte("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n"), false)
	f.Add([]byte("HTTP/1.1 302 Found\r\nLocation: http://127.0.0.1:3000/x\r\nContent-Length: 0\r\n\r\n"), false)
	f.Add([]byte("HTTP/1.0 200\r\nConnection: keep-alive, X-A\r\nX-A: 1\r\nTransfer-Encoding: chunked\r\n\r\n"), true)
	f.Add([]byte("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"), false)
	f.Add([]byte("HTTP/1.1 204 No Content\r\n\r\n"), true)
	up, _ := url.Parse("http://127.0.0.1:3000")
	b, err := NewBridge(up, UpstreamOptions{})
	if err != nil {
		f.Fatal(err)
	}
	var req head
	if err := readHead(bufio.NewReader(bytes.NewReader([]byte(
		"GET / HTTP/1.1\r\nHost: pub.example\r\nX-Forwarded-Proto: https\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"))),
		&req, false); err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, in []byte, isHead bool) {
		var h head
		if err := readHead(bufio.NewReader(bytes.NewReader(in)), &h, true); err != nil {
			return
		}
		untilClose := !h.chunked && h.contentLength < 0 && h.status != 204 && h.status != 304 && h.status >= 200
		out := b.appendResponseHead(nil, &h, &req, untilClose)
		method := "GET"
		if isHead {
			method = "HEAD"
		}
		r, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(out)), &http.Request{Method: method})
		if err != nil {
			t.Fatalf("net/http refuses what the bridge sends: %v\n%q", err, out)
		}
		if r.StatusCode != h.status {
			t.Fatalf("status %d, want %d: %q", r.StatusCode, h.status, out)
		}
		if (len(r.TransferEncoding) > 0) != (h.chunked || untilClose) && !isHead && h.status >= 200 && h.status != 204 && h.status != 304 {
			t.Fatalf("chunked upstream %v, here %v: %q", r.TransferEncoding, h.chunked || untilClose, out)
		}
		if h.contentLength >= 0 && !isHead && h.status >= 200 && h.status != 204 && h.status != 304 &&
			r.Header.Get("Content-Length") != strconv.FormatInt(h.contentLength, 10) {
			t.Fatalf("Content-Length %q, want %d: %q", r.Header.Get("Content-Length"), h.contentLength, out)
		}
	})
}

// FuzzChunkScanner: the scanner finds the same end of a chunked body however the bytes are split, and where it
// finds one, net/http's chunked reader reads the same body to its end.
func FuzzChunkScanner(f *testing.F) {
	f.Add([]byte("5\r\nhello\r\n0\r\n\r\n"), 3)
	f.Add([]byte("5;ext=1\r\nhello\r\n0\r\nX-T: v\r\n\r\nNEXT"), 9)
	f.Add([]byte("ffffffffffffffff\r\n"), 1)
	f.Add([]byte("0\n\n"), 0)
	f.Fuzz(func(t *testing.T, in []byte, split int) {
		var whole chunkScanner
		n1, done1, err1 := whole.feed(in)
		var parts chunkScanner
		if split < 0 || split > len(in) {
			split = len(in) / 2
		}
		a, doneA, errA := parts.feed(in[:split])
		n2, done2, err2 := a, doneA, errA
		if !doneA && errA == nil {
			b, doneB, errB := parts.feed(in[split:])
			n2, done2, err2 = a+b, doneB, errB
		}
		if (err1 == nil) != (err2 == nil) || (err1 == nil && (n1 != n2 || done1 != done2)) {
			t.Fatalf("whole: %d %v %v; split at %d: %d %v %v", n1, done1, err1, split, n2, done2, err2)
		}
		if err1 != nil || !done1 {
			return
		}
		if _, err := io.Copy(io.Discard, httputil.NewChunkedReader(bytes.NewReader(in[:n1]))); err != nil {
			t.Fatalf("net/http's chunked reader: %v on %q", err, in[:n1])
		}
	})
}
