package wsframe

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
)

// testFrame describes one frame for tests.
type testFrame struct {
	fin     bool
	rsv     byte // RSV bits, already shifted (0x40, 0x20, 0x10)
	op      byte
	payload []byte // unmasked
	mask    bool
	key     [4]byte
	lenBits int // 0: minimal; 7, 16 or 64 force that length encoding
}

// encode returns the wire bytes of fr.
func (fr testFrame) encode() []byte {
	var b []byte
	b0 := fr.rsv | fr.op
	if fr.fin {
		b0 |= finBit
	}
	b = append(b, b0)
	var mb byte
	if fr.mask {
		mb = maskBit
	}
	n := len(fr.payload)
	bits := fr.lenBits
	if bits == 0 {
		switch {
		case n <= 125:
			bits = 7
		case n <= 0xFFFF:
			bits = 16
		default:
			bits = 64
		}
	}
	switch bits {
	case 7:
		b = append(b, mb|byte(n))
	case 16:
		b = append(b, mb|len16)
		b = binary.BigEndian.AppendUint16(b, uint16(n))
	case 64:
		b = append(b, mb|len64)
		b = binary.BigEndian.AppendUint64(b, uint64(n))
	default:
		panic(fmt.Sprintf("bad lenBits %d", bits))
	}
	if fr.mask {
		b = append(b, fr.key[:]...)
	}
	for i, c := range fr.payload {
		if fr.mask {
			c ^= fr.key[i%4]
		}
		b = append(b, c)
	}
	return b
}

// closePayload returns a close payload with code and reason.
func closePayload(code uint16, reason string) []byte {
	return append(binary.BigEndian.AppendUint16(nil, code), reason...)
}

// encodeAll concatenates the wire bytes of frames.
func encodeAll(frames []testFrame) []byte {
	var b []byte
	for _, fr := range frames {
		b = append(b, fr.encode()...)
	}
	return b
}

// mapCodes returns frames with close codes mapped by SendableCode.
func mapCodes(frames []testFrame) []testFrame {
	out := make([]testFrame, len(frames))
	for i, fr := range frames {
		if fr.op == opClose && len(fr.payload) >= 2 {
			p := bytes.Clone(fr.payload)
			binary.BigEndian.PutUint16(p, SendableCode(binary.BigEndian.Uint16(p)))
			fr.payload = p
		}
		out[i] = fr
	}
	return out
}

// decodeAll parses b as a sequence of whole frames, unmasking payloads.
func decodeAll(b []byte) ([]testFrame, error) {
	var frames []testFrame
	for len(b) > 0 {
		if len(b) < 2 {
			return frames, errors.New("short header")
		}
		fr := testFrame{fin: b[0]&finBit != 0, rsv: b[0] & 0x70, op: b[0] & opcodeMask, mask: b[1]&maskBit != 0}
		hs := headerSize(b[1])
		if len(b) < hs {
			return frames, errors.New("short header")
		}
		switch b[1] & lenMask {
		case len16:
			fr.lenBits = 16
		case len64:
			fr.lenBits = 64
		default:
			fr.lenBits = 7
		}
		n := payloadLen(b[:hs])
		if uint64(len(b)-hs) < n {
			return frames, errors.New("short payload")
		}
		if fr.mask {
			copy(fr.key[:], b[hs-4:hs])
		}
		fr.payload = bytes.Clone(b[hs : hs+int(n)])
		if fr.mask {
			for i := range fr.payload {
				fr.payload[i] ^= fr.key[i%4]
			}
		}
		frames = append(frames, fr)
		b = b[hs+int(n):]
	}
	return frames, nil
}

// refResult is what the reference model expects of a Follower fed a stream.
type refResult struct {
	out        []byte
	sawClose   bool
	atBoundary bool
	err        bool
}

// reference is a whole-buffer model of a Follower fed in: written without
// streaming so that it is easy to check by eye.
func reference(in []byte, masked bool) refResult {
	var r refResult
	r.atBoundary = true
	for pos := 0; pos < len(in); {
		b := in[pos:]
		if len(b) < 2 {
			return r // header held back
		}
		op := b[0] & opcodeMask
		control := op >= 0x8
		n7 := int(b[1] & lenMask)
		switch {
		case op > opBinary && op != opClose && op != opPing && op != opPong,
			control && b[0]&finBit == 0,
			control && n7 > 125,
			op == opClose && n7 == 1,
			(b[1]&maskBit != 0) != masked,
			n7 == 127 && len(b) > 2 && b[2]&0x80 != 0:
			r.err = true
			return r
		}
		hs := headerSize(b[1])
		if len(b) < hs {
			return r
		}
		n := payloadLen(b[:hs])
		if op == opClose {
			if len(b) < hs+int(n) {
				return r // close frame held back
			}
			fr := bytes.Clone(b[:hs+int(n)])
			if code, ok := closeCode(fr, hs); ok {
				putCloseCode(fr, hs, SendableCode(code))
			}
			r.out = append(r.out, fr...)
			r.sawClose = true
			pos += len(fr)
			continue
		}
		if uint64(len(b)-hs) < n {
			r.out = append(r.out, b...)
			r.atBoundary = false
			return r
		}
		r.out = append(r.out, b[:hs+int(n)]...)
		pos += hs + int(n)
	}
	return r
}

// recorder is a dst that records what was written and how often.
type recorder struct {
	bytes.Buffer
	writes int
}

func (r *recorder) Write(p []byte) (int, error) {
	r.writes++
	return r.Buffer.Write(p)
}

// feed writes in to a new Follower in pieces cut at splits (increasing
// offsets) and returns the recorder and the first error.
func feed(in []byte, masked bool, splits []int) (*recorder, *Follower, error) {
	rec := &recorder{}
	f := NewFollower(rec, masked)
	prev := 0
	for _, s := range append(splits, len(in)) {
		if s < prev || s > len(in) {
			continue
		}
		if _, err := f.Write(in[prev:s]); err != nil {
			return rec, f, err
		}
		prev = s
	}
	return rec, f, nil
}

// byteSplits returns the splits that feed a stream of n bytes one at a time.
func byteSplits(n int) []int {
	s := make([]int, n)
	for i := range s {
		s[i] = i + 1
	}
	return s
}
