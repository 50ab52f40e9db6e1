// Package httphead reads HTTP/1.1 response heads within a byte allowance. The relay reads them so from a host's
// stream (an upgrade's answer) and from a peer replica's connection (the lean forward, package peering):
// http.ReadResponse alone grows a header line without bound (textproto), so a head that never ends would cost
// whatever the sender chose to send.
package httphead

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net/http"
)

// ErrTooLarge reports a response head longer than the reader accepts.
var ErrTooLarge = errors.New("response head too large")

// Limiter reads R, failing with ErrTooLarge once more than the allowed bytes were read, between Limit and Lift;
// its zero value (with R) has no limit. It sits under the bufio.Reader that a head is read from, so a head that
// never ends costs at most the allowance.
type Limiter struct {
	R    io.Reader
	on   bool  // a limit is set
	left int64 // bytes still allowed while on
}

func (l *Limiter) Read(p []byte) (int, error) {
	if !l.on {
		return l.R.Read(p)
	}
	if l.left <= 0 {
		return 0, ErrTooLarge
	}
	if int64(len(p)) > l.left {
		p = p[:l.left]
	}
	n, err := l.R.Read(p)
	l.left -= int64(n)
	return n, err
}

// Limit allows n more bytes; Lift removes the limit (the head was read; the body follows).
func (l *Limiter) Limit(n int) { l.on, l.left = true, int64(n) }
func (l *Limiter) Lift()       { l.on = false }

// ReadResponse reads a response head from br, which reads through l, allowing max bytes for it, and lifts the
// limit once a final head is in (a 101 is final too). A longer head fails with ErrTooLarge. A limit already set (by
// the caller, before it peeked, or by an interim 1xx head read before) is kept, not renewed: interim heads and the
// final one share it.
func ReadResponse(br *bufio.Reader, l *Limiter, req *http.Request, max int) (*http.Response, error) {
	if !l.on {
		l.Limit(max)
	}
	resp, err := http.ReadResponse(br, req)
	if err != nil {
		if l.left <= 0 && !errors.Is(err, ErrTooLarge) {
			err = fmt.Errorf("%w: %w", ErrTooLarge, err)
		}
		return nil, err
	}
	if resp.StatusCode >= 200 || resp.StatusCode == http.StatusSwitchingProtocols {
		l.Lift()
	}
	return resp, nil
}
