package relay_test

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/switchboard-relay/switchboard/internal/relaytest"
)

// BenchmarkExchange is the relay's share of a small keep-alive GET: a real relay and a real tunnel, but a client
// and a host that only write canned bytes and read heads with no allocation of their own, so that allocs/op is the
// relay's (its http.Server, the exchange, yamux on its side) plus the agent listener's yamux. BenchmarkSmallGET
// measures the same exchange with net/http at both ends.
func BenchmarkExchange(b *testing.B) {
	r := relaytest.StartRelay(b, nil)
	ln := relaytest.StartListener(b, r.URL, "h", nil)
	answer := []byte("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nDate: Wed, 02 Dec 2026 15:00:00 GMT\r\nContent-Length: 5\r\n\r\nhello")
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close()
				br := bufio.NewReader(c)
				for {
					if _, err := readHeadLen(br); err != nil {
						return
					}
					if _, err := c.Write(answer); err != nil {
						return
					}
				}
			})
		}
	})
	b.Cleanup(func() {
		_ = ln.Close()
		wg.Wait()
	})
	tok := relaytest.ClientToken(b, "alice", "h")
	nc, err := net.Dial("tcp", strings.TrimPrefix(r.URL, "http://"))
	if err != nil {
		b.Fatal(err)
	}
	defer nc.Close()
	req := []byte("GET /hosts/h/small?x=1 HTTP/1.1\r\nHost: relay\r\nUser-Agent: bench\r\nAccept: */*\r\nAuthorization: Bearer " + tok + "\r\n\r\n")
	br := bufio.NewReader(nc)
	body := make([]byte, 5)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := nc.Write(req); err != nil {
			b.Fatal(err)
		}
		n, err := readHeadLen(br)
		if err != nil {
			b.Fatal(err)
		}
		if n != 5 {
			b.Fatalf("Content-Length %d, want 5", n)
		}
		if _, err := io.ReadFull(br, body); err != nil || string(body) != "hello" {
			b.Fatalf("body %q: %v", body, err)
		}
	}
}

// readHeadLen reads a head up to its empty line and returns its Content-Length (0 if none), allocating nothing.
func readHeadLen(br *bufio.Reader) (int, error) {
	n := 0
	for {
		line, err := br.ReadSlice('\n')
		if err != nil {
			return 0, err
		}
		line = bytes.TrimRight(line, "\r\n")
		if len(line) == 0 {
			return n, nil
		}
		if v, ok := bytes.CutPrefix(line, []byte("Content-Length: ")); ok {
			if n, err = strconv.Atoi(string(v)); err != nil {
				return 0, err
			}
		}
	}
}
