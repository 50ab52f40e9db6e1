package wsframe

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// ErrProtocol reports malformed framing in the followed stream. Errors returned
// by [Follower.Write] wrap it with the detail; test with errors.Is.
var ErrProtocol = errors.New("websocket protocol error")

// Frame layout constants; see the package documentation for the byte layout.
const (
	finBit      = 0x80 // byte 0: final fragment
	opcodeMask  = 0x0F // byte 0: opcode
	maskBit     = 0x80 // byte 1: payload is masked
	lenMask     = 0x7F // byte 1: 7-bit payload length or 126/127 marker
	len16       = 126  // 7-bit length marker: 16-bit length follows
	len64       = 127  // 7-bit length marker: 64-bit length follows
	maskKeySize = 4    // masking key after the length, if maskBit is set

	opContinuation = 0x0
	opText         = 0x1
	opBinary       = 0x2
	opClose        = 0x8
	opPing         = 0x9
	opPong         = 0xA

	maxControlPayload = 125                                 // RFC 6455 §5.5
	maxHeader         = 2 + 8 + maskKeySize                 // 14 bytes
	maxControlFrame   = 2 + maskKeySize + maxControlPayload // 131 bytes
)

// Follower forwards one direction of a WebSocket byte stream to dst, tracking
// frame boundaries (RFC 6455 §5.2). Data and ping/pong payloads pass through
// without being copied; close frames are held until complete and their status
// code is mapped with [SendableCode].
//
// A Follower is not safe for concurrent use; it belongs to the goroutine that
// copies its direction of the connection.
type Follower struct {
	// Immutable after NewFollower.
	dst    io.Writer
	masked bool

	// Owned by the writer.
	err       error                 // sticky: protocol error or dst failure
	dstFailed bool                  // dst may hold a partial frame
	remaining uint64                // payload bytes of the current frame still to pass through
	nhold     int                   // bytes held in hold, from the start of a frame
	sawClose  bool                  // a close frame was fully forwarded
	hold      [maxControlFrame]byte // a header that straddles Writes, or a close frame
}

// NewFollower returns a Follower that forwards to dst. masked must be true for
// the client→server direction, whose frames must carry a masking key, and false
// for server→client, whose frames must not.
func NewFollower(dst io.Writer, masked bool) *Follower {
	return &Follower{dst: dst, masked: masked}
}

// AtBoundary reports whether everything forwarded to dst so far ends at a
// frame boundary, so that a frame such as [CloseFrame] may be written to dst
// next. Bytes held back (the start of a header that a later Write would
// complete, or an incomplete close frame) have not reached dst and do not count:
// if the source vanishes then, the destination has seen whole frames only.
// A boundary inside a fragmented message counts: RFC 6455 §5.4 lets control
// frames such as close come between fragments. After a failed write to dst it
// reports false.
func (f *Follower) AtBoundary() bool {
	return f.remaining == 0 && !f.dstFailed
}

// SawClose reports whether a close frame was fully forwarded to dst.
func (f *Follower) SawClose() bool { return f.sawClose }

// Write forwards p to dst in order, rewriting the status code of close frames
// with [SendableCode]. p may split the stream anywhere. On malformed framing it
// returns an error wrapping [ErrProtocol] after forwarding every whole frame
// before the bad one; from then on, and after a write to dst failed, Write
// forwards nothing and returns the same error.
//
// Write calls dst.Write once per call when frames are not split across calls
// and no close code needs rewriting.
func (f *Follower) Write(p []byte) (int, error) {
	if f.err != nil {
		return 0, f.err
	}
	start, i := 0, 0 // p[start:i] is checked and not yet written to dst
	closed := false  // p[start:i] holds a close frame
	for i < len(p) {
		if f.remaining > 0 {
			n := uint64(len(p) - i)
			if n > f.remaining {
				n = f.remaining
			}
			i += int(n)
			f.remaining -= n
			continue
		}
		if f.nhold > 0 {
			// A frame started in an earlier Write; complete it in hold.
			// Held bytes were never forwarded and nothing of p precedes
			// them, so start == i here.
			for {
				need, err := f.need(f.hold[:f.nhold])
				if err != nil {
					return f.fail(p, start, i, closed, err)
				}
				if f.nhold == need {
					break
				}
				n := copy(f.hold[f.nhold:need], p[i:])
				f.nhold += n
				i += n
				start = i
				if n == 0 {
					return len(p), nil // still incomplete
				}
			}
			if err := f.emitHeld(); err != nil {
				return start, err
			}
			continue
		}
		b := p[i:]
		need, err := f.need(b)
		if err != nil {
			return f.fail(p, start, i, closed, err)
		}
		if len(b) < need {
			// Hold the incomplete header or close frame.
			if err := f.flush(p[start:i], closed); err != nil {
				return start, err
			}
			closed = false
			f.nhold = copy(f.hold[:], b)
			i = len(p)
			start = i
			break
		}
		hs := headerSize(b[1])
		if b[0]&opcodeMask != opClose {
			i += hs
			f.remaining = payloadLen(b[:hs])
			continue
		}
		frame := b[:need]
		if code, ok := closeCode(frame, hs); !ok || SendableCode(code) == code {
			i += need
			closed = true
			continue
		}
		if err := f.flush(p[start:i], closed); err != nil {
			return start, err
		}
		closed = false
		f.nhold = copy(f.hold[:], frame)
		i += need
		start = i
		if err := f.emitHeld(); err != nil {
			return start - need, err
		}
	}
	if err := f.flush(p[start:i], closed); err != nil {
		return start, err
	}
	return len(p), nil
}

// need checks the start of a frame in b and returns how many bytes of it must
// be available before it can be forwarded: the header, or for a close frame the
// whole frame. With fewer than a whole header in b it returns what it knows so
// far (2, then the header size).
func (f *Follower) need(b []byte) (int, error) {
	if len(b) < 2 {
		return 2, nil
	}
	op := b[0] & opcodeMask
	switch op {
	case opContinuation, opText, opBinary:
	case opClose, opPing, opPong:
		if b[0]&finBit == 0 {
			return 0, fmt.Errorf("%w: fragmented control frame (opcode %#x)", ErrProtocol, op)
		}
		if n := b[1] & lenMask; n > maxControlPayload {
			return 0, fmt.Errorf("%w: control frame (opcode %#x) longer than 125 bytes", ErrProtocol, op)
		}
		if op == opClose && b[1]&lenMask == 1 {
			return 0, fmt.Errorf("%w: close payload of 1 byte", ErrProtocol)
		}
	default:
		return 0, fmt.Errorf("%w: reserved opcode %#x", ErrProtocol, op)
	}
	if masked := b[1]&maskBit != 0; masked != f.masked {
		if f.masked {
			return 0, fmt.Errorf("%w: unmasked frame from client", ErrProtocol)
		}
		return 0, fmt.Errorf("%w: masked frame from server", ErrProtocol)
	}
	if b[1]&lenMask == len64 && len(b) > 2 && b[2]&0x80 != 0 {
		return 0, fmt.Errorf("%w: 64-bit payload length with the top bit set", ErrProtocol)
	}
	hs := headerSize(b[1])
	if op != opClose || len(b) < hs {
		return hs, nil
	}
	return hs + int(b[1]&lenMask), nil
}

// emitHeld forwards the complete header or close frame in hold.
func (f *Follower) emitHeld() error {
	b := f.hold[:f.nhold]
	hs := headerSize(b[1])
	if b[0]&opcodeMask != opClose {
		f.remaining = payloadLen(b[:hs])
		f.nhold = 0
		return f.flush(b[:hs], false)
	}
	if code, ok := closeCode(b, hs); ok {
		putCloseCode(b, hs, SendableCode(code))
	}
	f.nhold = 0
	return f.flush(b, true)
}

// flush writes b to dst; closed means b holds a close frame.
func (f *Follower) flush(b []byte, closed bool) error {
	if len(b) == 0 {
		return nil
	}
	if _, err := f.dst.Write(b); err != nil {
		f.dstFailed = true
		f.err = fmt.Errorf("forward websocket frames: %w", err)
		return f.err
	}
	if closed {
		f.sawClose = true
	}
	return nil
}

// fail forwards the whole frames in p[start:i] and makes err sticky.
func (f *Follower) fail(p []byte, start, i int, closed bool, err error) (int, error) {
	if ferr := f.flush(p[start:i], closed); ferr != nil {
		return start, ferr
	}
	f.err = err
	return i, err
}

// headerSize returns the size of a header whose second byte is b1.
func headerSize(b1 byte) int {
	n := 2
	switch b1 & lenMask {
	case len16:
		n += 2
	case len64:
		n += 8
	}
	if b1&maskBit != 0 {
		n += maskKeySize
	}
	return n
}

// payloadLen returns the payload length of the complete header h.
func payloadLen(h []byte) uint64 {
	switch n := h[1] & lenMask; n {
	case len16:
		return uint64(binary.BigEndian.Uint16(h[2:4]))
	case len64:
		return binary.BigEndian.Uint64(h[2:10])
	default:
		return uint64(n)
	}
}

// closeCode returns the status code of the close frame b whose header is hs
// bytes long, unmasking it if needed; ok is false for an empty payload.
func closeCode(b []byte, hs int) (code uint16, ok bool) {
	if len(b) < hs+2 {
		return 0, false
	}
	c0, c1 := b[hs], b[hs+1]
	if b[1]&maskBit != 0 {
		c0 ^= b[hs-4]
		c1 ^= b[hs-3]
	}
	return uint16(c0)<<8 | uint16(c1), true
}

// putCloseCode stores code into the close frame b whose header is hs bytes
// long, masking it with the frame's key if it has one.
func putCloseCode(b []byte, hs int, code uint16) {
	c0, c1 := byte(code>>8), byte(code)
	if b[1]&maskBit != 0 {
		c0 ^= b[hs-4]
		c1 ^= b[hs-3]
	}
	b[hs], b[hs+1] = c0, c1
}
