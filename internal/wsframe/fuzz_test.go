package wsframe

import (
	"bytes"
	"errors"
	"testing"
)

// FuzzFollower feeds arbitrary bytes in arbitrary pieces (chunks: each byte is
// the size of the next piece, minus one) and checks the Follower against the
// whole-buffer reference model. It then uses data as entropy to generate a
// well-formed frame sequence and checks that the frames come out equal, with
// close codes mapped by SendableCode.
func FuzzFollower(f *testing.F) {
	seeds := [][]byte{
		testFrame{fin: true, op: opText, payload: []byte("hello")}.encode(),
		testFrame{fin: true, op: opClose, payload: closePayload(1005, "x")}.encode(),
		testFrame{fin: true, op: opClose, payload: closePayload(1006, "x"), mask: true, key: key1}.encode(),
		testFrame{fin: true, op: opBinary, payload: make([]byte, 300)}.encode(),
		testFrame{fin: true, op: opBinary, payload: []byte("z"), lenBits: 64}.encode(),
		testFrame{fin: true, op: opPing, payload: []byte("p"), mask: true, key: key2}.encode(),
		{0x82, 127, 0x80, 0, 0, 0, 0, 0, 0, 1},
		{0x88, 0x01, 0x03},
		{0x83, 0x00},
	}
	for _, s := range seeds {
		for _, masked := range []bool{false, true} {
			f.Add(s, []byte{}, masked)
			f.Add(s, []byte{0}, masked)
			f.Add(s, []byte{2, 0, 5}, masked)
		}
	}
	f.Fuzz(func(t *testing.T, data, chunks []byte, masked bool) {
		checkRaw(t, data, chunks, masked)
		checkGenerated(t, data, chunks, masked)
	})
}

// splitsFrom turns chunk sizes into increasing split offsets within n bytes.
func splitsFrom(chunks []byte, n int) []int {
	if len(chunks) == 0 {
		return nil
	}
	var s []int
	for pos, i := 0, 0; pos < n; i++ {
		pos += int(chunks[i%len(chunks)]) + 1
		s = append(s, min(pos, n))
	}
	return s
}

func checkRaw(t *testing.T, data, chunks []byte, masked bool) {
	want := reference(data, masked)
	rec, f, err := feed(data, masked, splitsFrom(chunks, len(data)))
	if (err != nil) != want.err || (err != nil && !errors.Is(err, ErrProtocol)) {
		t.Fatalf("raw: err = %v, want error %v", err, want.err)
	}
	out := rec.Bytes()
	if !bytes.Equal(out, want.out) {
		t.Fatalf("raw: output differs from the reference\n got %x\nwant %x", head(out), head(want.out))
	}
	if len(out) > len(data) {
		t.Fatalf("raw: %d bytes out of %d in", len(out), len(data))
	}
	// Independent of the reference: out is a copy of a prefix of data except
	// for the status code bytes of close frames.
	codes := codePositions(out)
	for i := range out {
		if out[i] != data[i] && !codes[i] {
			t.Fatalf("raw: byte %d changed from %#x to %#x outside a close code", i, data[i], out[i])
		}
	}
	if got := f.SawClose(); got != want.sawClose {
		t.Fatalf("raw: SawClose = %v, want %v", got, want.sawClose)
	}
	if got := f.AtBoundary(); got != want.atBoundary {
		t.Fatalf("raw: AtBoundary = %v, want %v", got, want.atBoundary)
	}
}

// codePositions returns the offsets of close status code bytes in the frames
// of b, which may end inside a frame.
func codePositions(b []byte) map[int]bool {
	pos := map[int]bool{}
	for off := 0; len(b)-off >= 2; {
		hs := headerSize(b[off+1])
		if len(b)-off < hs {
			break
		}
		n := payloadLen(b[off : off+hs])
		if b[off]&opcodeMask == opClose && n >= 2 {
			pos[off+hs], pos[off+hs+1] = true, true
		}
		if uint64(len(b)-off-hs) < n {
			break
		}
		off += hs + int(n)
	}
	return pos
}

// entropy hands out bytes of data, then zeros.
type entropy struct{ b []byte }

func (e *entropy) byte() byte {
	if len(e.b) == 0 {
		return 0
	}
	c := e.b[0]
	e.b = e.b[1:]
	return c
}

func (e *entropy) empty() bool { return len(e.b) == 0 }

var fuzzCodes = []uint16{0, 999, 1000, 1001, 1002, 1003, 1004, 1005, 1006, 1007, 1011, 1014, 1015, 1016, 2999, 3000, 4000, 4999, 5000, 65535}

// generate builds a well-formed frame sequence from e.
func generate(e *entropy, masked bool) []testFrame {
	var frames []testFrame
	for len(frames) < 32 && !e.empty() {
		c := e.byte()
		fr := testFrame{fin: c&1 != 0, rsv: (c >> 1 & 7) << 4, mask: masked}
		if masked {
			fr.key = [4]byte{e.byte(), e.byte(), e.byte(), e.byte()}
		}
		switch kind := c >> 4; {
		case kind < 6: // data
			fr.op = []byte{opContinuation, opText, opBinary}[kind%3]
			n := int(e.byte())
			if kind >= 3 {
				n = n*4 + int(e.byte()) // up to ~1 KiB: 16-bit lengths
			}
			fr.payload = bytes.Repeat([]byte{e.byte()}, n)
			fr.lenBits = []int{0, 0, 16, 64}[e.byte()%4]
			if fr.lenBits == 16 && n > 0xFFFF {
				fr.lenBits = 0
			}
		case kind < 10: // ping or pong
			fr.fin = true
			fr.op = opPing + kind%2
			fr.payload = bytes.Repeat([]byte{e.byte()}, int(e.byte()%126))
		default: // close
			fr.fin = true
			fr.op = opClose
			switch m := e.byte(); {
			case m < 32:
				// empty payload
			case m < 128:
				fr.payload = closePayload(fuzzCodes[int(m)%len(fuzzCodes)], string(bytes.Repeat([]byte{'r'}, int(e.byte()%124))))
			default:
				fr.payload = closePayload(uint16(e.byte())<<8|uint16(e.byte()), "")
			}
		}
		frames = append(frames, fr)
	}
	return frames
}

func checkGenerated(t *testing.T, data, chunks []byte, masked bool) {
	frames := generate(&entropy{data}, masked)
	in := encodeAll(frames)
	rec, f, err := feed(in, masked, splitsFrom(chunks, len(in)))
	if err != nil {
		t.Fatalf("generated: %v", err)
	}
	got, err := decodeAll(rec.Bytes())
	if err != nil {
		t.Fatalf("generated: decode output: %v", err)
	}
	want := mapCodes(frames)
	if len(got) != len(want) {
		t.Fatalf("generated: %d frames out, want %d", len(got), len(want))
	}
	for i := range got {
		g, w := got[i], want[i]
		if w.lenBits == 0 {
			w.lenBits = g.lenBits // decodeAll reports the encoding used
		}
		if g.fin != w.fin || g.rsv != w.rsv || g.op != w.op || g.mask != w.mask || g.key != w.key ||
			g.lenBits != w.lenBits || !bytes.Equal(g.payload, w.payload) {
			t.Fatalf("generated: frame %d = %+v, want %+v", i, g, w)
		}
	}
	sawClose := false
	for _, fr := range frames {
		sawClose = sawClose || fr.op == opClose
	}
	if f.SawClose() != sawClose || !f.AtBoundary() {
		t.Fatalf("generated: SawClose = %v (want %v), AtBoundary = %v", f.SawClose(), sawClose, f.AtBoundary())
	}
	if len(rec.Bytes()) != len(in) {
		t.Fatalf("generated: %d bytes out, %d in", len(rec.Bytes()), len(in))
	}
}
