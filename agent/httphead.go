package agent

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"strconv"
)

// The byte bridge (bridge.go) reads HTTP/1.1 heads itself: it needs a few facts from a head (framing, Host, the
// forwarding headers, Connection) and passes every other line through as bytes, so it parses no more than that.
// Both the relay (request heads on a stream) and the upstream (response heads) are bounded by maxHeadBytes.

// maxHeadBytes bounds a request or response head (net/http's default MaxHeaderBytes is the same 1 MiB).
const maxHeadBytes = 1 << 20

// maxChunkLine bounds one chunk-size line of a chunked body (net/http allows 4 KiB too).
const maxChunkLine = 4 << 10

// Head errors. errHeadTooLarge is answered 431 (request) or 502 (response); the others 400 or 502.
var (
	errHeadTooLarge = errors.New("head too large")
	errBadHead      = errors.New("malformed head")
)

// headLine is one header line of a head: name and value are offsets into head.raw (value trimmed of blanks).
type headLine struct {
	name, value [2]int32
}

// head is a parsed HTTP/1.x head. raw holds the head's bytes as read; the slices point into it.
type head struct {
	raw   []byte
	lines []headLine

	// First line: method target version (request) or version status reason (response).
	first [3][2]int32
	minor int // HTTP/1.minor

	// Framing and connection facts.
	contentLength int64 // -1 when absent
	chunked       bool
	closeConn     bool // Connection: close, or HTTP/1.0 without keep-alive
	upgrade       bool // Connection: upgrade with an Upgrade header
	expect        bool // Expect: 100-continue
	status        int  // response only
}

func (h *head) bytes(o [2]int32) []byte { return h.raw[o[0]:o[1]] }

// get returns the value of the first line named name (ASCII case-insensitive), and whether there is one.
func (h *head) get(name string) ([]byte, bool) {
	for _, l := range h.lines {
		if asciiEqualFold(h.bytes(l.name), name) {
			return h.bytes(l.value), true
		}
	}
	return nil, false
}

// readHead reads one head from br into h (reusing h's storage): the first line and header lines up to the empty
// line. It returns io.EOF when br ends before the first byte, io.ErrUnexpectedEOF when it ends inside the head.
func readHead(br *bufio.Reader, h *head, response bool) error {
	h.raw = h.raw[:0]
	h.lines = h.lines[:0]
	h.contentLength, h.chunked, h.closeConn, h.upgrade, h.expect, h.status = -1, false, false, false, false, 0
	lineStart := 0
	first := true
	for {
		frag, err := br.ReadSlice('\n')
		if len(h.raw)+len(frag) > maxHeadBytes {
			return errHeadTooLarge
		}
		h.raw = append(h.raw, frag...)
		switch {
		case err == bufio.ErrBufferFull:
			continue
		case err == io.EOF && len(h.raw) == 0:
			return io.EOF
		case err == io.EOF:
			return io.ErrUnexpectedEOF
		case err != nil:
			return err
		}
		line := h.raw[lineStart:]
		line = line[:len(line)-1] // the LF
		if n := len(line); n > 0 && line[n-1] == '\r' {
			line = line[:n-1]
		}
		start := int32(lineStart)
		lineStart = len(h.raw)
		if first {
			if len(line) == 0 && !response && len(h.raw) <= 4 {
				// RFC 9112 §2.2: a server should ignore at least one empty line before a request line.
				h.raw, lineStart = h.raw[:0], 0
				continue
			}
			if err := h.parseFirst(line, start, response); err != nil {
				return err
			}
			first = false
			continue
		}
		if len(line) == 0 {
			return h.finish(response)
		}
		if err := h.addLine(line, start); err != nil {
			return err
		}
	}
}

// parseFirst reads a request line ("GET /x HTTP/1.1") or a status line ("HTTP/1.1 200 OK").
func (h *head) parseFirst(line []byte, off int32, response bool) error {
	sp1 := bytes.IndexByte(line, ' ')
	if sp1 <= 0 {
		return fmt.Errorf("%w: first line %q", errBadHead, clip(line))
	}
	rest := line[sp1+1:]
	sp2 := bytes.IndexByte(rest, ' ')
	a := line[:sp1]
	var b, c []byte
	end := off + int32(len(line))
	h.first[0] = [2]int32{off, off + int32(sp1)}
	bStart := off + int32(sp1) + 1
	if sp2 < 0 {
		if !response {
			return fmt.Errorf("%w: request line %q", errBadHead, clip(line))
		}
		b = rest // "HTTP/1.1 200" without a reason
		h.first[1] = [2]int32{bStart, end}
		h.first[2] = [2]int32{end, end}
	} else {
		b, c = rest[:sp2], rest[sp2+1:]
		h.first[1] = [2]int32{bStart, bStart + int32(sp2)}
		h.first[2] = [2]int32{bStart + int32(sp2) + 1, end}
	}
	version := c
	if response {
		version = a
	}
	switch string(version) {
	case "HTTP/1.1":
		h.minor = 1
	case "HTTP/1.0":
		h.minor = 0
	default:
		return fmt.Errorf("%w: version %q", errBadHead, clip(version))
	}
	if response {
		if len(b) != 3 {
			return fmt.Errorf("%w: status %q", errBadHead, clip(b))
		}
		code, err := strconv.Atoi(string(b))
		if err != nil || code < 100 {
			return fmt.Errorf("%w: status %q", errBadHead, clip(b))
		}
		h.status = code
		for _, ch := range c {
			if ch < ' ' && ch != '\t' || ch == 0x7f {
				return fmt.Errorf("%w: control character in the reason", errBadHead)
			}
		}
		return nil
	}
	if !isToken(a) {
		return fmt.Errorf("%w: method %q", errBadHead, clip(a))
	}
	if len(b) == 0 || b[0] != '/' {
		return fmt.Errorf("%w: target %q is not a path", errBadHead, clip(b))
	}
	for _, ch := range b {
		if ch <= ' ' || ch == 0x7f {
			return fmt.Errorf("%w: target %q", errBadHead, clip(b))
		}
	}
	return nil
}

// addLine records one header line; it refuses obsolete line folding, a blank before the colon, a name that is not
// a token and control characters in the value (what net/http refuses too).
func (h *head) addLine(line []byte, off int32) error {
	colon := bytes.IndexByte(line, ':')
	if colon <= 0 || !isToken(line[:colon]) {
		return fmt.Errorf("%w: header line %q", errBadHead, clip(line))
	}
	vs, ve := colon+1, len(line)
	for vs < ve && (line[vs] == ' ' || line[vs] == '\t') {
		vs++
	}
	for ve > vs && (line[ve-1] == ' ' || line[ve-1] == '\t') {
		ve--
	}
	for _, ch := range line[vs:ve] {
		if ch < ' ' && ch != '\t' || ch == 0x7f {
			return fmt.Errorf("%w: control character in header %q", errBadHead, clip(line[:colon]))
		}
	}
	if len(h.lines) >= 10000 {
		return errHeadTooLarge
	}
	h.lines = append(h.lines, headLine{
		name:  [2]int32{off, off + int32(colon)},
		value: [2]int32{off + int32(vs), off + int32(ve)},
	})
	return nil
}

// finish derives the framing and connection facts from the header lines, refusing ambiguous framing (both
// Content-Length and Transfer-Encoding, differing Content-Lengths, a transfer coding other than chunked): a
// message two parsers could delimit differently is how requests get smuggled.
func (h *head) finish(response bool) error {
	var keepAlive, connUpgrade, hasUpgrade, hasTE bool
	var firstCL []byte // the first Content-Length as written
	for _, l := range h.lines {
		name, v := h.bytes(l.name), h.bytes(l.value)
		switch {
		case asciiEqualFold(name, "Content-Length"):
			n, err := parseContentLength(v)
			if err != nil {
				return err
			}
			// Repeated lines must be spelt alike, not merely equal in value ("3" and "03"): the head is passed on
			// as it is, and net/http, like other parsers, refuses repeats that differ in their text.
			if h.contentLength >= 0 && !bytes.Equal(firstCL, v) {
				return fmt.Errorf("%w: differing Content-Length values", errBadHead)
			}
			h.contentLength, firstCL = n, v
		case asciiEqualFold(name, "Transfer-Encoding"):
			if hasTE || !asciiEqualFold(v, "chunked") {
				return fmt.Errorf("%w: Transfer-Encoding %q (only a single chunked is supported)", errBadHead, clip(v))
			}
			hasTE, h.chunked = true, true
		case asciiEqualFold(name, "Connection"):
			for tok := range tokens(v) {
				switch {
				case asciiEqualFold(tok, "close"):
					h.closeConn = true
				case asciiEqualFold(tok, "keep-alive"):
					keepAlive = true
				case asciiEqualFold(tok, "upgrade"):
					connUpgrade = true
				}
			}
		case asciiEqualFold(name, "Upgrade"):
			hasUpgrade = len(v) > 0
		case asciiEqualFold(name, "Expect"):
			h.expect = asciiEqualFold(v, "100-continue")
		}
	}
	if h.chunked && h.contentLength >= 0 {
		return fmt.Errorf("%w: both Content-Length and Transfer-Encoding", errBadHead)
	}
	if h.minor == 0 && !keepAlive {
		h.closeConn = true
	}
	h.upgrade = connUpgrade && hasUpgrade
	return nil
}

// parseContentLength accepts decimal digits only (no sign, no blanks), at most 18 of them.
func parseContentLength(v []byte) (int64, error) {
	if len(v) == 0 || len(v) > 18 {
		return 0, fmt.Errorf("%w: Content-Length %q", errBadHead, clip(v))
	}
	var n int64
	for _, ch := range v {
		if ch < '0' || ch > '9' {
			return 0, fmt.Errorf("%w: Content-Length %q", errBadHead, clip(v))
		}
		n = n*10 + int64(ch-'0')
	}
	return n, nil
}

// connectionNamed reports whether name is listed by a Connection header of h (a hop-by-hop header the sender
// named; RFC 9110 §7.6.1).
func (h *head) connectionNamed(name []byte) bool {
	for _, l := range h.lines {
		if !asciiEqualFold(h.bytes(l.name), "Connection") {
			continue
		}
		for tok := range tokens(h.bytes(l.value)) {
			if asciiEqualFold(tok, string(name)) {
				return true
			}
		}
	}
	return false
}

// tokens yields the comma-separated elements of a list header value, trimmed, skipping empty ones.
func tokens(v []byte) func(yield func([]byte) bool) {
	return func(yield func([]byte) bool) {
		for len(v) > 0 {
			var tok []byte
			if i := bytes.IndexByte(v, ','); i >= 0 {
				tok, v = v[:i], v[i+1:]
			} else {
				tok, v = v, nil
			}
			tok = bytes.Trim(tok, " \t")
			if len(tok) > 0 && !yield(tok) {
				return
			}
		}
	}
}

// isToken reports whether s is a non-empty RFC 9110 token.
func isToken(s []byte) bool {
	if len(s) == 0 {
		return false
	}
	for _, c := range s {
		if c >= 0x80 || !tokenChars[c] {
			return false
		}
	}
	return true
}

var tokenChars = func() (t [128]bool) {
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for c := 'a'; c <= 'z'; c++ {
		t[c] = true
		t[c-'a'+'A'] = true
	}
	for _, c := range "!#$%&'*+-.^_`|~" {
		t[c] = true
	}
	return t
}()

// asciiEqualFold compares b with s, ASCII letters case-insensitively.
func asciiEqualFold(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := range len(b) {
		x, y := b[i], s[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}

// clip shortens what an error message quotes.
func clip(b []byte) []byte {
	if len(b) > 64 {
		return b[:64]
	}
	return b
}

// chunkScanner follows the framing of a chunked body as its bytes pass, so the bridge copies exactly one message
// (its chunks, the last chunk and the trailers) without decoding it: the bytes go through unchanged, trailers
// included.
type chunkScanner struct {
	state    int
	left     int64 // data bytes left in the current chunk (stateData)
	lineLen  int   // bytes of the current size or trailer line so far
	digits   int   // hex digits of the current size line
	inExt    bool  // past the size, in a chunk extension
	blank    bool  // past the size, after a blank
	trailers int   // trailer bytes so far
	sawCR    bool
}

const (
	chunkSize     = iota // reading a chunk-size line
	chunkData            // inside chunk data
	chunkDataCR          // expecting the CR after chunk data
	chunkDataLF          // expecting the LF after chunk data
	chunkTrailer         // reading trailer lines after the last chunk
	chunkDone            // the message has ended
	chunkTrailEnd        // inside a trailer line (not the empty one)
)

var errBadChunk = errors.New("malformed chunked body")

// feed consumes bytes of p that belong to the body and returns how many; done reports that the body ended there
// (the rest of p belongs to what follows).
func (s *chunkScanner) feed(p []byte) (n int, done bool, err error) {
	for n < len(p) {
		switch s.state {
		case chunkData:
			k := int64(len(p) - n)
			if k > s.left {
				k = s.left
			}
			n += int(k)
			s.left -= k
			if s.left == 0 {
				s.state = chunkDataCR
			}
			continue
		case chunkDataCR:
			if p[n] != '\r' {
				return n, false, fmt.Errorf("%w: no CRLF after chunk data", errBadChunk)
			}
			s.state = chunkDataLF
		case chunkDataLF:
			if p[n] != '\n' {
				return n, false, fmt.Errorf("%w: no CRLF after chunk data", errBadChunk)
			}
			s.state = chunkSize
		case chunkSize:
			c := p[n]
			s.lineLen++
			if s.lineLen > maxChunkLine {
				return n, false, fmt.Errorf("%w: chunk-size line too long", errBadChunk)
			}
			switch {
			case c == '\n':
				if !s.sawCR {
					return n, false, fmt.Errorf("%w: chunk-size line ends with a bare LF", errBadChunk)
				}
				if s.digits == 0 {
					return n, false, fmt.Errorf("%w: no chunk size", errBadChunk)
				}
				s.lineLen, s.digits, s.inExt, s.sawCR, s.blank = 0, 0, false, false, false
				if s.left == 0 {
					s.state = chunkTrailer
				} else {
					s.state = chunkData
				}
			case s.sawCR:
				return n, false, fmt.Errorf("%w: CR without LF", errBadChunk)
			case c == '\r':
				s.sawCR = true
			case s.inExt:
				if c < ' ' && c != '\t' || c == 0x7f {
					return n, false, fmt.Errorf("%w: control character in a chunk extension", errBadChunk)
				}
			case c == ';':
				if s.digits == 0 {
					return n, false, fmt.Errorf("%w: no chunk size", errBadChunk)
				}
				s.inExt = true
			case c == ' ' || c == '\t':
				if s.digits == 0 {
					return n, false, fmt.Errorf("%w: no chunk size", errBadChunk)
				}
				s.blank = true // only blanks, ';' or the line's end may follow
			case s.blank:
				return n, false, fmt.Errorf("%w: chunk size is not hex", errBadChunk)
			default:
				v, ok := unhex(c)
				if !ok {
					return n, false, fmt.Errorf("%w: chunk size is not hex", errBadChunk)
				}
				if s.digits == 15 {
					return n, false, fmt.Errorf("%w: chunk size too large", errBadChunk)
				}
				s.digits++
				s.left = s.left<<4 | int64(v)
			}
		case chunkTrailer, chunkTrailEnd:
			c := p[n]
			s.trailers++
			if s.trailers > maxHeadBytes {
				return n, false, fmt.Errorf("%w: trailers too large", errBadChunk)
			}
			switch {
			case c == '\n' && s.state == chunkTrailer:
				s.state = chunkDone
				return n + 1, true, nil
			case c == '\n':
				s.state, s.sawCR = chunkTrailer, false
			case c == '\r' && s.state == chunkTrailer:
				// the empty line's CR, or a trailer line starting with CR (refused at its next byte)
				s.sawCR = true
			case s.sawCR && s.state == chunkTrailer:
				return n, false, fmt.Errorf("%w: CR without LF in trailers", errBadChunk)
			case c < ' ' && c != '\t' && c != '\r' || c == 0x7f:
				return n, false, fmt.Errorf("%w: control character in trailers", errBadChunk)
			default:
				s.state = chunkTrailEnd
			}
		case chunkDone:
			return n, true, nil
		}
		n++
	}
	return n, s.state == chunkDone, nil
}

func unhex(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}
