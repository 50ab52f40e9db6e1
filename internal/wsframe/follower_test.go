package wsframe

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

var (
	key1 = [4]byte{0x37, 0xfa, 0x21, 0x3d}
	key2 = [4]byte{0xff, 0x00, 0x80, 0x01}
)

func TestFollowerFrames(t *testing.T) {
	big := bytes.Repeat([]byte("0123456789abcdef"), 4096) // 64 KiB: 64-bit length
	mid := bytes.Repeat([]byte{0xA5}, 300)                // 16-bit length
	tests := []struct {
		name     string
		masked   bool
		frames   []testFrame
		rewrites bool // a close code is rewritten
	}{
		{name: "text", frames: []testFrame{{fin: true, op: opText, payload: []byte("hello")}}},
		{name: "text masked", masked: true, frames: []testFrame{{fin: true, op: opText, payload: []byte("hello"), mask: true, key: key1}}},
		{name: "empty binary", frames: []testFrame{{fin: true, op: opBinary}}},
		{name: "binary 16-bit", frames: []testFrame{{fin: true, op: opBinary, payload: mid}}},
		{name: "binary 64-bit masked", masked: true, frames: []testFrame{{fin: true, op: opBinary, payload: big, mask: true, key: key2}}},
		{name: "non-minimal lengths", frames: []testFrame{
			{fin: true, op: opBinary, payload: []byte("x"), lenBits: 16},
			{fin: true, op: opBinary, payload: []byte("y"), lenBits: 64},
		}},
		{name: "rsv bits pass", frames: []testFrame{{fin: true, rsv: 0x40, op: opText, payload: []byte("deflated")}}},
		{name: "fragmented with ping inside", frames: []testFrame{
			{op: opText, payload: []byte("hel")},
			{fin: false, op: opContinuation, payload: []byte("l")},
			{fin: true, op: opPing, payload: []byte("are you there")},
			{fin: true, op: opContinuation, payload: []byte("o")},
			{fin: true, op: opPong, payload: bytes.Repeat([]byte{1}, 125)},
		}},
		{name: "close empty", frames: []testFrame{{fin: true, op: opClose}}},
		{name: "close empty masked", masked: true, frames: []testFrame{{fin: true, op: opClose, mask: true, key: key1}}},
		{name: "close 1000", frames: []testFrame{{fin: true, op: opClose, payload: closePayload(1000, "bye")}}},
		{name: "close 1001 masked", masked: true, frames: []testFrame{{fin: true, op: opClose, payload: closePayload(1001, ""), mask: true, key: key1}}},
		{name: "close 4409", frames: []testFrame{{fin: true, op: opClose, payload: closePayload(4409, "replaced")}}},
		{name: "close 1014", frames: []testFrame{{fin: true, op: opClose, payload: closePayload(1014, "")}}},
		{name: "close 1005 rewritten", rewrites: true, frames: []testFrame{
			{fin: true, op: opText, payload: []byte("last words")},
			{fin: true, op: opClose, payload: closePayload(1005, "")},
		}},
		{name: "close 1006 masked rewritten", masked: true, rewrites: true, frames: []testFrame{
			{fin: true, op: opClose, payload: closePayload(1006, "gone"), mask: true, key: key1},
		}},
		{name: "close 1015 masked key2 rewritten", masked: true, rewrites: true, frames: []testFrame{
			{fin: true, op: opClose, payload: closePayload(1015, "tls"), mask: true, key: key2},
		}},
		{name: "close 999 rewritten", rewrites: true, frames: []testFrame{{fin: true, op: opClose, payload: closePayload(999, "")}}},
		{name: "close 1004 rewritten", rewrites: true, frames: []testFrame{{fin: true, op: opClose, payload: closePayload(1004, "")}}},
		{name: "close 2000 rewritten", rewrites: true, frames: []testFrame{{fin: true, op: opClose, payload: closePayload(2000, "")}}},
		{name: "close 5000 rewritten", rewrites: true, frames: []testFrame{
			{fin: true, op: opClose, payload: closePayload(5000, strings.Repeat("r", 123))},
		}},
		{name: "close 0 rewritten then data", rewrites: true, frames: []testFrame{
			{fin: true, op: opClose, payload: closePayload(0, "")},
			{fin: true, op: opBinary, payload: []byte("after close")},
		}},
		{name: "invalid utf8 reason passes", frames: []testFrame{{fin: true, op: opClose, payload: closePayload(1000, "\xff\xfe")}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := encodeAll(tt.frames)
			want := encodeAll(mapCodes(tt.frames))
			if !tt.rewrites && !bytes.Equal(in, want) {
				t.Fatalf("test case rewrites a code but is not marked so")
			}
			wantClose := false
			for _, fr := range tt.frames {
				wantClose = wantClose || fr.op == opClose
			}

			rec, f, err := feed(in, tt.masked, nil)
			if err != nil {
				t.Fatalf("whole write: %v", err)
			}
			if got := rec.Bytes(); !bytes.Equal(got, want) {
				t.Fatalf("whole write: output differs from the input with codes mapped\n got %x\nwant %x", head(got), head(want))
			}
			if !tt.rewrites && rec.writes != 1 {
				t.Fatalf("whole write: %d dst writes, want 1", rec.writes)
			}
			if got := f.SawClose(); got != wantClose {
				t.Fatalf("SawClose = %v, want %v", got, wantClose)
			}
			if !f.AtBoundary() {
				t.Fatalf("AtBoundary = false after whole frames")
			}
			frames, err := decodeAll(rec.Bytes())
			if err != nil {
				t.Fatalf("decode output: %v", err)
			}
			if got, want := len(frames), len(tt.frames); got != want {
				t.Fatalf("got %d frames, want %d", got, want)
			}

			rec1, f1, err := feed(in, tt.masked, byteSplits(len(in)))
			if err != nil {
				t.Fatalf("byte at a time: %v", err)
			}
			if !bytes.Equal(rec1.Bytes(), want) {
				t.Fatalf("byte at a time: output differs")
			}
			if f1.SawClose() != wantClose || !f1.AtBoundary() {
				t.Fatalf("byte at a time: SawClose=%v AtBoundary=%v", f1.SawClose(), f1.AtBoundary())
			}

			if len(in) > 2048 {
				return // every two-way split of the big frames is slow and adds nothing
			}
			for s := range len(in) + 1 {
				rec2, _, err := feed(in, tt.masked, []int{s})
				if err != nil {
					t.Fatalf("split at %d: %v", s, err)
				}
				if !bytes.Equal(rec2.Bytes(), want) {
					t.Fatalf("split at %d: output differs", s)
				}
			}
		})
	}
}

func head(b []byte) []byte {
	if len(b) > 64 {
		return b[:64]
	}
	return b
}

func TestFollowerMalformed(t *testing.T) {
	good := testFrame{fin: true, op: opText, payload: []byte("ok")}.encode()
	goodMasked := testFrame{fin: true, op: opText, payload: []byte("ok"), mask: true, key: key1}.encode()
	tests := []struct {
		name   string
		masked bool
		bad    []byte
	}{
		{name: "reserved opcode 3", bad: []byte{0x83, 0x00}},
		{name: "reserved opcode 7", bad: []byte{0x87, 0x00}},
		{name: "reserved opcode 0xB", bad: []byte{0x8B, 0x00}},
		{name: "reserved opcode 0xF", bad: []byte{0x8F, 0x00}},
		{name: "fragmented ping", bad: []byte{0x09, 0x00}},
		{name: "fragmented close", bad: []byte{0x08, 0x00}},
		{name: "ping of 126 bytes", bad: append([]byte{0x89, 126, 0, 126}, make([]byte, 126)...)},
		{name: "close with 16-bit length", bad: []byte{0x88, 127, 0, 0, 0, 0, 0, 0, 0, 2, 0x03, 0xe8}},
		{name: "close payload of 1 byte", bad: []byte{0x88, 0x01, 0x03}},
		{name: "close payload of 1 byte masked", masked: true, bad: []byte{0x88, 0x81, 1, 2, 3, 4, 0x03}},
		{name: "64-bit length top bit", bad: []byte{0x82, 127, 0x80, 0, 0, 0, 0, 0, 0, 1}},
		{name: "masked frame from server", bad: testFrame{fin: true, op: opText, payload: []byte("x"), mask: true, key: key1}.encode()},
		{name: "unmasked frame from client", masked: true, bad: testFrame{fin: true, op: opText, payload: []byte("x")}.encode()},
		{name: "unmasked close from client", masked: true, bad: testFrame{fin: true, op: opClose}.encode()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			prefix := good
			if tt.masked {
				prefix = goodMasked
			}
			in := append(append(bytes.Clone(prefix), tt.bad...), prefix...)
			for _, splits := range [][]int{nil, byteSplits(len(in))} {
				rec, f, err := feed(in, tt.masked, splits)
				if !errors.Is(err, ErrProtocol) {
					t.Fatalf("err = %v, want ErrProtocol", err)
				}
				if !bytes.Equal(rec.Bytes(), prefix) {
					t.Fatalf("output %x, want only the good frame %x", rec.Bytes(), prefix)
				}
				n, err2 := f.Write(prefix)
				if n != 0 || !errors.Is(err2, ErrProtocol) {
					t.Fatalf("Write after error = %d, %v; want 0, ErrProtocol", n, err2)
				}
				if !bytes.Equal(rec.Bytes(), prefix) {
					t.Fatalf("Write after error forwarded bytes")
				}
				if !f.AtBoundary() {
					t.Fatalf("AtBoundary = false; the bad frame was never forwarded")
				}
			}
		})
	}
}

func TestFollowerWriteCount(t *testing.T) {
	in := testFrame{fin: true, op: opBinary, payload: []byte("hello")}.encode()
	rec, _, err := feed(in, false, []int{1})
	if err != nil {
		t.Fatal(err)
	}
	// The first byte is held; then the header comes from hold and the payload from p.
	if rec.writes != 2 {
		t.Fatalf("writes = %d, want 2", rec.writes)
	}
	rec, _, err = feed(in, false, []int{4})
	if err != nil {
		t.Fatal(err)
	}
	if rec.writes != 2 {
		t.Fatalf("writes = %d, want 2", rec.writes)
	}
}

func TestFollowerState(t *testing.T) {
	data := testFrame{fin: true, op: opBinary, payload: []byte("0123456789")}.encode()
	cl := testFrame{fin: true, op: opClose, payload: closePayload(1005, "why")}.encode()
	steps := []struct {
		in           []byte
		atBoundary   bool
		sawClose     bool
		forwardedLen int
	}{
		{in: data[:1], atBoundary: true, forwardedLen: 0},         // header byte held
		{in: data[1:5], atBoundary: false, forwardedLen: 5},       // header and 3 payload bytes forwarded
		{in: data[5:], atBoundary: true, forwardedLen: len(data)}, // frame complete
		{in: cl[:4], atBoundary: true, forwardedLen: len(data)},   // close frame held
		{in: cl[4:], atBoundary: true, sawClose: true, forwardedLen: len(data) + len(cl)},
	}
	rec := &recorder{}
	f := NewFollower(rec, false)
	for i, s := range steps {
		n, err := f.Write(s.in)
		if err != nil || n != len(s.in) {
			t.Fatalf("step %d: Write = %d, %v", i, n, err)
		}
		if got := f.AtBoundary(); got != s.atBoundary {
			t.Fatalf("step %d: AtBoundary = %v, want %v", i, got, s.atBoundary)
		}
		if got := f.SawClose(); got != s.sawClose {
			t.Fatalf("step %d: SawClose = %v, want %v", i, got, s.sawClose)
		}
		if got := rec.Len(); got != s.forwardedLen {
			t.Fatalf("step %d: forwarded %d bytes, want %d", i, got, s.forwardedLen)
		}
	}
	frames, err := decodeAll(rec.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	if got := string(frames[1].payload); got != string(closePayload(1011, "why")) {
		t.Fatalf("close payload %q, want code 1011 and reason", got)
	}
}

// errWriter fails every write.
type errWriter struct{ err error }

func (w errWriter) Write([]byte) (int, error) { return 0, w.err }

func TestFollowerDstError(t *testing.T) {
	boom := errors.New("boom")
	f := NewFollower(errWriter{boom}, false)
	in := testFrame{fin: true, op: opBinary, payload: []byte("x")}.encode()
	if _, err := f.Write(in); !errors.Is(err, boom) {
		t.Fatalf("err = %v, want boom", err)
	}
	if _, err := f.Write(in); !errors.Is(err, boom) {
		t.Fatalf("second Write err = %v, want boom", err)
	}
	if f.AtBoundary() {
		t.Fatalf("AtBoundary = true after a failed dst write")
	}
}

func TestSendableCode(t *testing.T) {
	tests := []struct{ code, want uint16 }{
		{0, 1011}, {999, 1011},
		{1000, 1000}, {1001, 1001}, {1002, 1002}, {1003, 1003},
		{1004, 1011}, {1005, 1011}, {1006, 1011},
		{1007, 1007}, {1008, 1008}, {1009, 1009}, {1010, 1010}, {1011, 1011},
		{1012, 1012}, {1013, 1013}, {1014, 1014},
		{1015, 1011}, {1016, 1011}, {2999, 1011},
		{3000, 3000}, {4001, 4001}, {4999, 4999},
		{5000, 1011}, {65535, 1011},
	}
	for _, tt := range tests {
		if got := SendableCode(tt.code); got != tt.want {
			t.Fatalf("SendableCode(%d) = %d, want %d", tt.code, got, tt.want)
		}
	}
}

func TestCloseFrame(t *testing.T) {
	long := strings.Repeat("a", 122) + "é" // 124 bytes: é would straddle byte 123
	tests := []struct {
		name       string
		code       uint16
		reason     string
		wantReason string
		wantEmpty  bool
	}{
		{name: "plain", code: 1011, reason: "tunnel gone", wantReason: "tunnel gone"},
		{name: "app code", code: 4409, reason: "", wantReason: ""},
		{name: "exactly 123", code: 1000, reason: strings.Repeat("b", 123), wantReason: strings.Repeat("b", 123)},
		{name: "ascii cut", code: 1000, reason: strings.Repeat("b", 200), wantReason: strings.Repeat("b", 123)},
		{name: "utf8 cut", code: 1001, reason: long, wantReason: strings.Repeat("a", 122)},
		{name: "4-byte rune cut", code: 1001, reason: strings.Repeat("a", 121) + "😀", wantReason: strings.Repeat("a", 121)},
		{name: "invalid utf8 cut", code: 1001, reason: strings.Repeat("\x80", 130), wantReason: strings.Repeat("\x80", 123)},
		{name: "no status", code: CodeNoStatus, reason: "ignored", wantEmpty: true},
	}
	for _, tt := range tests {
		for _, mask := range []bool{false, true} {
			b := CloseFrame(tt.code, tt.reason, mask)
			frames, err := decodeAll(b)
			if err != nil || len(frames) != 1 {
				t.Fatalf("%s mask=%v: decode: %d frames, %v", tt.name, mask, len(frames), err)
			}
			fr := frames[0]
			if !fr.fin || fr.op != opClose || fr.mask != mask || fr.rsv != 0 {
				t.Fatalf("%s mask=%v: header %+v", tt.name, mask, fr)
			}
			want := closePayload(tt.code, tt.wantReason)
			if tt.wantEmpty {
				want = nil
			}
			if !bytes.Equal(fr.payload, want) {
				t.Fatalf("%s mask=%v: payload %q, want %q", tt.name, mask, fr.payload, want)
			}
			// A Follower accepts it and forwards it unchanged.
			rec, f, err := feed(b, mask, nil)
			if err != nil || !bytes.Equal(rec.Bytes(), b) || !f.SawClose() {
				t.Fatalf("%s mask=%v: follower: %v", tt.name, mask, err)
			}
		}
	}
}

func TestCloseFrameMaskVaries(t *testing.T) {
	first := CloseFrame(1011, "x", true)
	for range 20 {
		if b := CloseFrame(1011, "x", true); !bytes.Equal(b[2:6], first[2:6]) {
			return
		}
	}
	t.Fatalf("20 close frames share the mask key %x", first[2:6])
}

func BenchmarkFollowerData(b *testing.B) {
	fr := testFrame{fin: true, op: opBinary, payload: bytes.Repeat([]byte{0x5A}, 4096)}.encode()
	f := NewFollower(io.Discard, false)
	b.SetBytes(int64(len(fr)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := f.Write(fr); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkFollowerDataMaskedSplit(b *testing.B) {
	// A client stream read in 1500-byte chunks: headers straddle reads.
	frames := bytes.Repeat(testFrame{fin: true, op: opBinary, payload: bytes.Repeat([]byte{0x5A}, 4096), mask: true, key: key1}.encode(), 8)
	f := NewFollower(io.Discard, true)
	b.SetBytes(int64(len(frames)))
	b.ReportAllocs()
	for b.Loop() {
		for p := frames; len(p) > 0; {
			n := min(1500, len(p))
			if _, err := f.Write(p[:n]); err != nil {
				b.Fatal(err)
			}
			p = p[n:]
		}
	}
}
