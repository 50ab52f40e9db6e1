package httphead

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net/http/httptest"
	"testing"
)

// countingReader counts the bytes read from r.
type countingReader struct {
	r io.Reader
	n int
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += n
	return n, err
}

// FuzzReadResponse: whatever bytes a host or a peer sends as its answer, ReadResponse takes at most the cap from
// the stream while it reads the head; it says ErrTooLarge only when the whole cap was read without a head; and
// after a final head the body reads on without the cap.
func FuzzReadResponse(f *testing.F) {
	for _, s := range []string{
		"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\nframes",
		"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
		"HTTP/1.1 200 OK\r\nX-Big: " + string(bytes.Repeat([]byte("a"), 300)) + "\r\n\r\n",
		"HTTP/1.1 101 Switching Protocols\r\nX-Junk: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
		"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
		"garbage\r\n\r\n", "", "HTTP/1.1 200 OK\n\n", "HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200 OK\r\n\r\n",
	} {
		f.Add([]byte(s), uint16(64))
		f.Add([]byte(s), uint16(4096))
	}
	f.Fuzz(func(t *testing.T, data []byte, capBytes uint16) {
		limit := int(capBytes%4096) + 1
		src := &countingReader{r: bytes.NewReader(data)}
		hl := &Limiter{R: src}
		br := bufio.NewReaderSize(hl, 16)
		resp, err := ReadResponse(br, hl, httptest.NewRequest("GET", "/", nil), limit)
		if src.n > limit {
			t.Fatalf("read %d bytes for a head capped at %d", src.n, limit)
		}
		if errors.Is(err, ErrTooLarge) && src.n < limit {
			t.Fatalf("head too large after %d of %d bytes", src.n, limit)
		}
		if err != nil || (resp.StatusCode < 200 && resp.StatusCode != 101) {
			return // an interim head: the cap holds for the heads after it
		}
		_, _ = io.Copy(io.Discard, resp.Body) // the body is not under the head's cap: no ErrTooLarge
		if _, err := io.Copy(io.Discard, br); errors.Is(err, ErrTooLarge) {
			t.Fatalf("the cap held after the head: %v", err)
		}
	})
}
