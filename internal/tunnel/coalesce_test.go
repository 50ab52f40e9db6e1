package tunnel

import (
	"bytes"
	"encoding/binary"
	"net"
	"testing"
)

// recordConn records every Write as one message.
type recordConn struct {
	net.Conn
	writes [][]byte
}

func (c *recordConn) Write(p []byte) (int, error) {
	c.writes = append(c.writes, append([]byte(nil), p...))
	return len(p), nil
}

func header(typ byte, length uint32) []byte {
	h := make([]byte, yamuxHeaderSize)
	h[1] = typ
	binary.BigEndian.PutUint32(h[8:], length)
	return h
}

func TestCoalesce(t *testing.T) {
	big := bytes.Repeat([]byte{7}, coalesceMax+1)
	tests := []struct {
		name   string
		writes [][]byte
		want   [][]byte
	}{
		{"data header and body become one write",
			[][]byte{header(0, 5), []byte("hello")},
			[][]byte{append(header(0, 5), "hello"...)}},
		{"window update passes alone",
			[][]byte{header(1, 0), header(0, 2), []byte("hi")},
			[][]byte{header(1, 0), append(header(0, 2), "hi"...)}},
		{"empty data frame (FIN) passes alone",
			[][]byte{header(0, 0)},
			[][]byte{header(0, 0)}},
		{"ping passes alone",
			[][]byte{header(2, 1)},
			[][]byte{header(2, 1)}},
		{"large body goes as its own write",
			[][]byte{header(0, uint32(len(big))), big},
			[][]byte{header(0, uint32(len(big))), big}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rc := &recordConn{}
			c := Coalesce(rc)
			for _, w := range tt.writes {
				n, err := c.Write(w)
				if err != nil || n != len(w) {
					t.Fatalf("Write = %d, %v; want %d, nil", n, err, len(w))
				}
			}
			if len(rc.writes) != len(tt.want) {
				t.Fatalf("got %d writes, want %d", len(rc.writes), len(tt.want))
			}
			for i := range tt.want {
				if !bytes.Equal(rc.writes[i], tt.want[i]) {
					t.Fatalf("write %d differs: got %d bytes, want %d", i, len(rc.writes[i]), len(tt.want[i]))
				}
			}
		})
	}
}

func BenchmarkCoalesceSmallFrame(b *testing.B) {
	c := Coalesce(&discardConn{})
	h := header(0, 100)
	body := make([]byte, 100)
	b.ReportAllocs()
	for b.Loop() {
		_, _ = c.Write(h)
		_, _ = c.Write(body)
	}
}

type discardConn struct{ net.Conn }

func (discardConn) Write(p []byte) (int, error) { return len(p), nil }
