package relay

import (
	"bufio"
	"errors"
	"net/http"
	"strconv"
	"strings"

	"github.com/switchboard-relay/switchboard/internal/httphead"
)

// The response-head parser of the exchange (exchange.go). A host's answer arrives on a yamux stream as HTTP/1.1;
// the relay reads its head here rather than with http.ReadResponse because this costs two allocations per head
// (the head's bytes as one string, every value and name a substring of it, and one slab of value slices) where
// ReadResponse costs a textproto reader, a map, a string per line and a body wrapper. It is strict where a lenient
// reading would let a host smuggle or split a response: framing headers that disagree are refused, not guessed.
//
// What it accepts (RFC 9112):
//   - status line "HTTP/1.1 DDD reason" or "HTTP/1.0 DDD reason", the code 100-599, the reason optional;
//   - header lines "name: value", the name a token with no space before the colon, the value without control
//     bytes other than HTAB, optional whitespace around it dropped; lines end in CRLF or a bare LF;
//   - no obs-fold (a line starting with SP or HTAB): refused, which RFC 9112 § 5.2 allows;
//   - Content-Length: digits only, one number a line, repeated lines only spelt the same;
//   - Transfer-Encoding: exactly "chunked", once, and never with Content-Length.
//
// The whole head, interim 1xx heads before it included, is read up to a byte allowance; a longer one fails with
// httphead.ErrTooLarge and nothing past the allowance is kept.

// errMalformedHead reports a response head the relay refuses to pass on; the exchange answers 502.
var errMalformedHead = errors.New("malformed response head")

// responseHead is the framing of one parsed head; its header is in the map given to readResponseHead.
type responseHead struct {
	status        int
	http10        bool  // HTTP/1.0: the stream is not reused
	contentLength int64 // -1 when absent
	chunked       bool
	close         bool // Connection: close, or HTTP/1.0 without keep-alive
}

// headReader reads heads from br within a byte allowance shared by every head read until reset.
type headReader struct {
	br   *bufio.Reader
	max  int    // the allowance at reset
	left int    // bytes still allowed
	buf  []byte // the current head's bytes, reused
}

// reset gives r a fresh allowance of max bytes for the heads of one exchange.
func (r *headReader) reset(br *bufio.Reader, max int) {
	r.br, r.max, r.left, r.buf = br, max, max, r.buf[:0]
}

// readBlock reads lines up to and including the empty line that ends a head or a trailer section, into r.buf.
func (r *headReader) readBlock() error {
	r.buf = r.buf[:0]
	for {
		line, err := r.br.ReadSlice('\n')
		if len(line) > r.left {
			return httphead.ErrTooLarge
		}
		r.left -= len(line)
		r.buf = append(r.buf, line...)
		switch {
		case err == bufio.ErrBufferFull:
			continue // a line longer than the buffer: read on, within the allowance
		case err != nil:
			return err
		}
		if len(line) == 1 || len(line) == 2 && line[0] == '\r' { // the empty line
			return nil
		}
	}
}

// readResponseHead reads one response head into h (cleared first), returning its framing.
func (r *headReader) readResponseHead(h http.Header) (responseHead, error) {
	clear(h)
	if err := r.readBlock(); err != nil {
		return responseHead{}, err
	}
	return parseResponseHead(string(r.buf), h)
}

// readTrailers reads a chunked body's trailer section into h (cleared first).
func (r *headReader) readTrailers(h http.Header) error {
	clear(h)
	if err := r.readBlock(); err != nil {
		return err
	}
	_, err := parseFields(string(r.buf), h, nil)
	return err
}

// parseResponseHead parses head, a status line and header lines ending with the empty line, into h.
func parseResponseHead(head string, h http.Header) (responseHead, error) {
	line, rest, ok := cutLine(head)
	if !ok {
		return responseHead{}, errMalformedHead
	}
	var rh responseHead
	switch {
	case strings.HasPrefix(line, "HTTP/1.1 "):
	case strings.HasPrefix(line, "HTTP/1.0 "):
		rh.http10 = true
	default:
		return rh, errMalformedHead
	}
	code := line[len("HTTP/1.1 "):]
	if len(code) > 3 {
		if code[3] != ' ' {
			return rh, errMalformedHead
		}
		code = code[:3]
	}
	if len(code) != 3 || code[0] < '1' || code[0] > '5' || !isDigit(code[1]) || !isDigit(code[2]) {
		return rh, errMalformedHead
	}
	rh.status = int(code[0]-'0')*100 + int(code[1]-'0')*10 + int(code[2]-'0')
	if !validValue(line) {
		return rh, errMalformedHead
	}
	f, err := parseFields(rest, h, &rh)
	if err != nil {
		return rh, err
	}
	rh.contentLength = f.contentLength
	rh.chunked = f.chunked
	rh.close = f.close || rh.http10 && !f.keepAlive
	if rh.chunked && rh.contentLength >= 0 {
		return rh, errMalformedHead // RFC 9112 § 6.3: a sign of smuggling; refused rather than guessed
	}
	return rh, nil
}

// fields is what parseFields learnt of the framing headers.
type fields struct {
	contentLength     int64
	contentLengthText string // the first Content-Length line's value
	chunked           bool
	close             bool
	keepAlive         bool
	transferEncoded   bool
}

// parseFields parses header lines up to the empty line into h. With rh nil (trailers) no framing is read.
func parseFields(block string, h http.Header, rh *responseHead) (fields, error) {
	f := fields{contentLength: -1}
	// One slab for every value slice: a name seen once (the common case) takes a one-element slice of it.
	vals := make([]string, strings.Count(block, "\n"))
	used := 0
	for {
		line, rest, ok := cutLine(block)
		if !ok {
			return f, errMalformedHead // no empty line: the block was cut
		}
		block = rest
		if line == "" {
			break
		}
		if line[0] == ' ' || line[0] == '\t' {
			return f, errMalformedHead // obs-fold
		}
		name, value, ok := strings.Cut(line, ":")
		if !ok || !validName(name) || !validValue(value) {
			return f, errMalformedHead
		}
		value = strings.Trim(value, " \t")
		key := name
		if !canonical(name) {
			key = http.CanonicalHeaderKey(name)
		}
		if rh != nil {
			if err := f.framing(key, value); err != nil {
				return f, err
			}
		}
		if vs, seen := h[key]; seen {
			h[key] = append(vs, value)
			continue
		}
		vals[used] = value
		h[key] = vals[used : used+1 : used+1]
		used++
	}
	if block != "" {
		return f, errMalformedHead // bytes after the empty line: readBlock never gives any
	}
	return f, nil
}

// framing notes a framing header of a response.
func (f *fields) framing(key, value string) error {
	switch key {
	case "Content-Length":
		// One number a line, repeated lines spelt the same, as net/http reads it: a list ("2, 2") or "2" beside
		// "02", which RFC 9110 would tolerate, is refused.
		if f.contentLength >= 0 {
			if value != f.contentLengthText {
				return errMalformedHead
			}
			return nil
		}
		n, err := parseContentLength(value)
		if err != nil {
			return errMalformedHead
		}
		f.contentLength, f.contentLengthText = n, value
	case "Transfer-Encoding":
		if f.transferEncoded || !strings.EqualFold(value, "chunked") {
			return errMalformedHead // another coding, or chunked twice: the relay cannot frame it
		}
		f.transferEncoded, f.chunked = true, true
	case "Connection":
		for v := range strings.SplitSeq(value, ",") {
			switch v = strings.Trim(v, " \t"); {
			case strings.EqualFold(v, "close"):
				f.close = true
			case strings.EqualFold(v, "keep-alive"):
				f.keepAlive = true
			}
		}
	}
	return nil
}

// parseContentLength parses a Content-Length value: 1 to 18 digits.
func parseContentLength(v string) (int64, error) {
	if v == "" || len(v) > 18 {
		return 0, errMalformedHead
	}
	for i := 0; i < len(v); i++ {
		if !isDigit(v[i]) {
			return 0, errMalformedHead
		}
	}
	return strconv.ParseInt(v, 10, 64)
}

// cutLine splits s at its first LF, dropping a CR before it. ok is false when s has no LF.
func cutLine(s string) (line, rest string, ok bool) {
	i := strings.IndexByte(s, '\n')
	if i < 0 {
		return "", s, false
	}
	line, rest = s[:i], s[i+1:]
	line = strings.TrimSuffix(line, "\r")
	return line, rest, true
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

// validName reports whether name is a non-empty token (RFC 9110 § 5.6.2).
func validName(name string) bool {
	if name == "" {
		return false
	}
	for i := 0; i < len(name); i++ {
		if !isTokenByte(name[i]) {
			return false
		}
	}
	return true
}

func isTokenByte(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	return strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
}

// validValue reports whether v holds no control byte other than HTAB (obs-text, 0x80 and up, is allowed).
func validValue(v string) bool {
	for i := 0; i < len(v); i++ {
		if c := v[i]; c < ' ' && c != '\t' || c == 0x7f {
			return false
		}
	}
	return true
}

// canonical reports whether name, a token, is already in canonical form (http.CanonicalHeaderKey would return it
// unchanged), so it can be used as a key without a copy.
func canonical(name string) bool {
	upper := true
	for i := 0; i < len(name); i++ {
		c := name[i]
		if upper && 'a' <= c && c <= 'z' || !upper && 'A' <= c && c <= 'Z' {
			return false
		}
		upper = c == '-'
	}
	return true
}

// consumed reports the bytes read for heads since reset.
func (r *headReader) consumed() int { return r.max - r.left }
