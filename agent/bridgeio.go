package agent

import (
	"bufio"
	"errors"
	"io"
	"net/url"
	"strconv"
	"strings"
)

// The bridge's byte work: the heads it writes and the bodies it copies. A head and the body bytes already
// buffered behind it leave in one write, and buffered bytes are written before any read that may block, so a small
// exchange costs one write each way and a streamed body (SSE) is passed on as it arrives.

// coalesceBody bounds the body bytes appended behind a head in one write.
const coalesceBody = 64 << 10

// maxPooledOut bounds the capacity of a head buffer returned to its pool.
const maxPooledOut = 128 << 10

func putOut(b *[]byte) {
	if cap(*b) <= maxPooledOut {
		*b = (*b)[:0]
		outBufs.Put(b)
	}
}

// writeError is a failed write to the destination of a copy (for a response: the stream, so the client).
type writeError struct{ err error }

func (e writeError) Error() string { return "write: " + e.err.Error() }
func (e writeError) Unwrap() error { return e.err }

// header classes for the rewrite.
const (
	hdrPass = iota
	hdrDrop
	hdrHost
	hdrXFHost
	hdrXFProto
	hdrUpgrade
	hdrTE
	hdrFraming // Content-Length, Transfer-Encoding: never dropped, even when Connection names them
	hdrLocation
)

// classify sorts a header name for both rewrites.
func classify(name []byte) int {
	switch len(name) {
	case 2:
		if asciiEqualFold(name, "Te") {
			return hdrTE
		}
	case 4:
		if asciiEqualFold(name, "Host") {
			return hdrHost
		}
	case 7:
		if asciiEqualFold(name, "Upgrade") {
			return hdrUpgrade
		}
	case 8:
		if asciiEqualFold(name, "Location") {
			return hdrLocation
		}
	case 9:
		if asciiEqualFold(name, "Forwarded") {
			return hdrDrop
		}
	case 10:
		if asciiEqualFold(name, "Connection") || asciiEqualFold(name, "Keep-Alive") {
			return hdrDrop
		}
	case 14:
		if asciiEqualFold(name, "Content-Length") {
			return hdrFraming
		}
	case 16:
		if asciiEqualFold(name, "X-Forwarded-Host") || asciiEqualFold(name, "Proxy-Connection") {
			if name[0] == 'X' || name[0] == 'x' {
				return hdrXFHost
			}
			return hdrDrop
		}
	case 17:
		if asciiEqualFold(name, "X-Forwarded-Proto") {
			return hdrXFProto
		}
		if asciiEqualFold(name, "Transfer-Encoding") {
			return hdrFraming
		}
	case 18:
		if asciiEqualFold(name, "Proxy-Authenticate") {
			return hdrDrop
		}
	case 19:
		if asciiEqualFold(name, "Proxy-Authorization") {
			return hdrDrop
		}
	}
	return hdrPass
}

// appendRequestHead appends the head to send upstream for req: the target under the upstream URL's path and
// query, the Host the options choose, X-Forwarded-Host (the client's Host) unless the relay sent one, the fixed
// headers in place of any of the same name, and no hop-by-hop headers (Connection and what it names, Keep-Alive,
// Proxy-*, Te other than "trailers", Forwarded), except Upgrade on an upgrade.
func (b *Bridge) appendRequestHead(dst []byte, req *head) []byte {
	dst = append(dst, req.bytes(req.first[0])...)
	dst = append(dst, ' ')
	dst = b.appendTarget(dst, req.bytes(req.first[1]))
	dst = append(dst, " HTTP/1.1\r\nHost: "...)
	inHost, _ := req.get("Host")
	if b.hostOut != nil {
		dst = append(dst, b.hostOut...)
	} else {
		dst = append(dst, inHost...)
	}
	dst = append(dst, "\r\n"...)
	hasConn := false
	for _, l := range req.lines {
		if asciiEqualFold(req.bytes(l.name), "Connection") {
			hasConn = true
			break
		}
	}
	xfHost := false
	for _, l := range req.lines {
		name, value := req.bytes(l.name), req.bytes(l.value)
		switch classify(name) {
		case hdrHost, hdrDrop:
			continue
		case hdrUpgrade:
			if req.upgrade {
				dst = appendLine(dst, name, value)
			}
			continue
		case hdrTE:
			if hasToken(value, "trailers") {
				dst = append(dst, "Te: trailers\r\n"...)
			}
			continue
		case hdrXFHost:
			xfHost = true
		case hdrFraming:
			dst = appendLine(dst, name, value)
			continue
		}
		if hasConn && req.connectionNamed(name) || b.isFixed(name) {
			continue
		}
		dst = appendLine(dst, name, value)
	}
	if req.upgrade {
		dst = append(dst, "Connection: Upgrade\r\n"...)
	}
	if !xfHost && len(inHost) > 0 {
		dst = append(append(append(dst, "X-Forwarded-Host: "...), inHost...), "\r\n"...)
	}
	dst = append(dst, b.fixed...)
	return append(dst, "\r\n"...)
}

func appendLine(dst, name, value []byte) []byte {
	dst = append(dst, name...)
	dst = append(dst, ": "...)
	dst = append(dst, value...)
	return append(dst, "\r\n"...)
}

func (b *Bridge) isFixed(name []byte) bool {
	for k := range b.opts.Fixed {
		if asciiEqualFold(name, k) {
			return true
		}
	}
	return false
}

func hasToken(v []byte, tok string) bool {
	for t := range tokens(v) {
		if asciiEqualFold(t, tok) {
			return true
		}
	}
	return false
}

// appendTarget appends target (origin-form) under the upstream URL's path and query, as ReverseProxy's SetURL
// joins them.
func (b *Bridge) appendTarget(dst, target []byte) []byte {
	u := b.upstream
	if u.Path == "" && u.RawPath == "" && u.RawQuery == "" {
		return append(dst, target...)
	}
	path, query, hasQuery := strings.Cut(string(target), "?")
	base := u.EscapedPath()
	switch {
	case strings.HasSuffix(base, "/") && strings.HasPrefix(path, "/"):
		dst = append(append(dst, base...), path[1:]...)
	case !strings.HasSuffix(base, "/") && !strings.HasPrefix(path, "/"):
		dst = append(append(append(dst, base...), '/'), path...)
	default:
		dst = append(append(dst, base...), path...)
	}
	switch {
	case u.RawQuery != "" && query != "":
		dst = append(append(append(append(dst, '?'), u.RawQuery...), '&'), query...)
	case u.RawQuery != "":
		dst = append(append(dst, '?'), u.RawQuery...)
	case hasQuery:
		dst = append(append(dst, '?'), query...)
	}
	return dst
}

// appendResponseHead appends the head to send back for resp: HTTP/1.1, without hop-by-hop headers (Connection on
// a 101 becomes "Upgrade"), with Location turned to the public origin when it names the upstream's, and
// "Transfer-Encoding: chunked" when the bridge frames a body the upstream delimited by closing (addChunked).
func (b *Bridge) appendResponseHead(dst []byte, resp, req *head, addChunked bool) []byte {
	dst = append(dst, "HTTP/1.1 "...)
	dst = append(dst, resp.bytes(resp.first[1])...)
	dst = append(dst, ' ')
	dst = append(dst, resp.bytes(resp.first[2])...)
	dst = append(dst, "\r\n"...)
	upgrade := resp.status == 101
	for _, l := range resp.lines {
		name, value := resp.bytes(l.name), resp.bytes(l.value)
		switch classify(name) {
		case hdrDrop:
			continue
		case hdrUpgrade:
			if upgrade {
				dst = appendLine(dst, name, value)
			}
			continue
		case hdrTE:
			continue
		case hdrFraming:
			dst = appendLine(dst, name, value)
			continue
		case hdrLocation:
			dst = append(dst, name...)
			dst = append(dst, ": "...)
			dst = append(dst, b.location(value, req)...)
			dst = append(dst, "\r\n"...)
			continue
		}
		if resp.connectionNamed(name) {
			continue
		}
		dst = appendLine(dst, name, value)
	}
	if upgrade {
		dst = append(dst, "Connection: Upgrade\r\n"...)
	}
	if addChunked {
		dst = append(dst, "Transfer-Encoding: chunked\r\n"...)
	}
	return append(dst, "\r\n"...)
}

// location is publicLocation for the bridge: the public origin comes from the request's X-Forwarded-Proto and
// X-Forwarded-Host (or its Host when the relay sent no X-Forwarded-Host, as the request sent upstream has it).
func (b *Bridge) location(loc []byte, req *head) string {
	if len(loc) == 0 {
		return ""
	}
	host, ok := req.get("X-Forwarded-Host")
	if !ok {
		host, _ = req.get("Host")
	}
	proto, _ := req.get("X-Forwarded-Proto")
	return publicLocationFor(string(loc), b.upstream, string(host), string(proto))
}

// inlineBody appends req's body to *out and consumes it from br when br holds all of it (and it is small); it
// reports whether it did.
func inlineBody(req *head, br *bufio.Reader, out *[]byte) bool {
	n := br.Buffered()
	if n == 0 {
		return false
	}
	p, _ := br.Peek(min(n, coalesceBody))
	switch {
	case req.chunked:
		var sc chunkScanner
		k, done, err := sc.feed(p)
		if err != nil || !done {
			return false
		}
		p = p[:k]
	case req.contentLength <= int64(len(p)):
		p = p[:req.contentLength]
	default:
		return false
	}
	*out = append(*out, p...)
	_, _ = br.Discard(len(p))
	return true
}

// copyLength copies n body bytes from src to dst, the bytes in *pre first; bytes already buffered join *pre's
// write.
func copyLength(dst io.Writer, src *bufio.Reader, pre *[]byte, n int64) error {
	out := *pre
	defer func() { *pre = out[:0] }()
	if k := int64(src.Buffered()); k > 0 && n > 0 && len(out) < coalesceBody {
		k = min(k, n, int64(coalesceBody))
		p, _ := src.Peek(int(k))
		out = append(out, p...)
		_, _ = src.Discard(int(k))
		n -= k
	}
	if len(out) > 0 {
		if _, err := dst.Write(out); err != nil {
			return writeError{err}
		}
	}
	if n == 0 {
		return nil
	}
	buf := copyBuffers.Get().(*[]byte)
	defer copyBuffers.Put(buf)
	for n > 0 {
		m, err := src.Read((*buf)[:min(n, int64(len(*buf)))])
		if m > 0 {
			if _, werr := dst.Write((*buf)[:m]); werr != nil {
				return writeError{werr}
			}
			n -= int64(m)
		}
		if err != nil && n > 0 {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return err
		}
	}
	return nil
}

// copyChunked copies one chunked body (chunks, last chunk, trailers) from src to dst unchanged, *pre first.
func copyChunked(dst io.Writer, src *bufio.Reader, pre *[]byte) error {
	out := *pre
	defer func() { *pre = out[:0] }()
	var sc chunkScanner
	var buf *[]byte
	defer func() {
		if buf != nil {
			copyBuffers.Put(buf)
		}
	}()
	flush := func() error {
		if len(out) == 0 {
			return nil
		}
		_, err := dst.Write(out)
		out = out[:0]
		if err != nil {
			return writeError{err}
		}
		return nil
	}
	for {
		if src.Buffered() == 0 {
			if err := flush(); err != nil { // about to block: what we have goes now
				return err
			}
			if sc.state == chunkData && sc.left > 0 {
				// Chunk data: read straight into a large buffer, past the bufio.Reader's small one.
				if buf == nil {
					buf = copyBuffers.Get().(*[]byte)
				}
				m, err := src.Read((*buf)[:min(sc.left, int64(len(*buf)))])
				if m > 0 {
					_, _, _ = sc.feed((*buf)[:m])
					if _, werr := dst.Write((*buf)[:m]); werr != nil {
						return writeError{werr}
					}
				}
				if err != nil {
					if errors.Is(err, io.EOF) {
						err = io.ErrUnexpectedEOF
					}
					return err
				}
				continue
			}
			if _, err := src.Peek(1); err != nil {
				if errors.Is(err, io.EOF) {
					err = io.ErrUnexpectedEOF
				}
				return err
			}
		}
		p, _ := src.Peek(src.Buffered())
		n, done, err := sc.feed(p)
		if err != nil {
			return err
		}
		if len(out)+n > coalesceBody {
			if err := flush(); err != nil {
				return err
			}
		}
		out = append(out, p[:n]...)
		_, _ = src.Discard(n)
		if done {
			return flush()
		}
	}
}

// copyUntilClose copies a body the upstream ends by closing its connection, framed as chunks (so the stream
// stays usable), *pre first.
func copyUntilClose(dst io.Writer, src *bufio.Reader, pre *[]byte) error {
	out := *pre
	defer func() { *pre = out[:0] }()
	buf := copyBuffers.Get().(*[]byte)
	defer copyBuffers.Put(buf)
	for {
		if len(out) > 0 && src.Buffered() == 0 {
			if _, err := dst.Write(out); err != nil {
				return writeError{err}
			}
			out = out[:0]
		}
		m, err := src.Read((*buf)[:len(*buf)-32])
		if m > 0 {
			out = strconv.AppendInt(out, int64(m), 16)
			out = append(out, "\r\n"...)
			if len(out)+m+2 > coalesceBody {
				if _, werr := dst.Write(out); werr != nil {
					return writeError{werr}
				}
				out = out[:0]
				if _, werr := dst.Write((*buf)[:m]); werr != nil {
					return writeError{werr}
				}
			} else {
				out = append(out, (*buf)[:m]...)
			}
			out = append(out, "\r\n"...)
		}
		if errors.Is(err, io.EOF) {
			out = append(out, "0\r\n\r\n"...)
			if _, werr := dst.Write(out); werr != nil {
				return writeError{werr}
			}
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// publicLocationFor turns loc, an upstream's Location, to the public origin proto://host when it names the
// upstream's own origin; otherwise it returns loc.
func publicLocationFor(loc string, upstream *url.URL, host, proto string) string {
	u, err := url.Parse(loc)
	if err != nil || !u.IsAbs() || u.User != nil || !strings.EqualFold(u.Scheme, upstream.Scheme) ||
		!strings.EqualFold(u.Host, upstream.Host) {
		return loc
	}
	if host == "" || (proto != "http" && proto != "https") {
		return loc
	}
	u.Scheme, u.Host = proto, host
	return u.String()
}
