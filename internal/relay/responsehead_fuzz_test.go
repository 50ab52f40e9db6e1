package relay

import (
	"bufio"
	"bytes"
	"net/http"
	"slices"
	"testing"
)

// FuzzResponseHead feeds arbitrary bytes, as a host could send them, to the exchange's response-head parser. It
// must never panic nor read past its allowance, and whatever it accepts net/http must read the same way: the same
// status, the same header values and the same body framing. (It may refuse more than net/http does.)
func FuzzResponseHead(f *testing.F) {
	for _, s := range []string{
		"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: 1\r\n\r\nhello",
		"HTTP/1.1 200 OK\nContent-Length: 2\n\nhi",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\n\r\n2\r\nok\r\n0\r\nX-Sum: 1\r\n\r\n",
		"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\n\r\n",
		"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n",
		"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2, 2\r\n\r\nok",
		"HTTP/1.0 100\nContent-Length:2,2\n\n",
		"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 02\r\n\r\nok",
		"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n",
		"HTTP/1.1 200 OK\r\nx-lower_case: v\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\n\r\n",
		"HTTP/1.1 200 OK\r\nX-A: 1\r\n folded\r\n\r\n",
		"HTTP/1.1 2000 OK\r\n\r\n",
		"HTTP/1.1 200 OK\r\nX: \xff\xfe\r\n\r\n",
	} {
		f.Add([]byte(s))
	}
	const allowance = 4 << 10
	f.Fuzz(func(t *testing.T, data []byte) {
		var hr headReader
		hr.reset(bufio.NewReaderSize(bytes.NewReader(data), 16), allowance) // a small buffer: long lines too
		h := http.Header{}
		rh, err := hr.readResponseHead(h)
		if hr.consumed() > allowance {
			t.Fatalf("read %d bytes for a head, allowance %d", hr.consumed(), allowance)
		}
		if err != nil {
			return
		}
		if rh.status < 100 || rh.status > 599 {
			t.Fatalf("accepted status %d", rh.status)
		}
		if rh.chunked && rh.contentLength >= 0 {
			t.Fatalf("accepted both chunked and a Content-Length")
		}
		resp, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(data)), nil)
		if err != nil {
			t.Fatalf("accepted a head net/http refuses (%v): %q", err, data)
		}
		if resp.StatusCode != rh.status {
			t.Fatalf("status %d, net/http %d", rh.status, resp.StatusCode)
		}
		for k, vs := range h {
			if k == "Transfer-Encoding" || k == "Content-Length" {
				continue // net/http moves these into its framing fields
			}
			if !slices.Equal(vs, resp.Header[k]) {
				t.Fatalf("header %s = %q, net/http %q", k, vs, resp.Header[k])
			}
		}
		for k := range resp.Header {
			if _, ok := h[k]; !ok {
				t.Fatalf("header %s missing (net/http %q)", k, resp.Header[k])
			}
		}
		if rh.status >= 200 && rh.status != 204 && rh.status != 304 {
			switch {
			case rh.chunked:
				if !slices.Equal(resp.TransferEncoding, []string{"chunked"}) {
					t.Fatalf("chunked; net/http reads %q", resp.TransferEncoding)
				}
			case rh.contentLength >= 0:
				if resp.ContentLength != rh.contentLength {
					t.Fatalf("Content-Length %d; net/http %d", rh.contentLength, resp.ContentLength)
				}
			}
		}
	})
}
