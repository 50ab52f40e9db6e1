package presence

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
)

func TestSSEReader(t *testing.T) {
	in := "retry: 2000\n: comment\n\nid: 1\nevent: online\ndata: {\"a\":\ndata: 1}\n\r\nid:2\r\nevent: reset\r\ndata: {}\r\n\rdata: x"
	r := newSSEReader(strings.NewReader(in))
	m, err := r.next()
	if err != nil || m.id != "1" || m.event != "online" || string(m.data) != "{\"a\":\n1}" {
		t.Fatalf("first = %+v, %v", m, err)
	}
	m, err = r.next()
	if err != nil || m.id != "2" || m.event != "reset" || string(m.data) != "{}" {
		t.Fatalf("second = %+v, %v", m, err)
	}
	if _, err := r.next(); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("cut message: %v, want io.ErrUnexpectedEOF", err)
	}
	long := "data: " + strings.Repeat("x", maxMessage) + "\n\n"
	if _, err := newSSEReader(strings.NewReader(long)).next(); !errors.Is(err, errMessageTooLong) {
		t.Fatalf("long line: %v", err)
	}
	many := strings.Repeat("data: "+strings.Repeat("x", 1000)+"\n", maxMessage/1000+1)
	if _, err := newSSEReader(strings.NewReader(many)).next(); !errors.Is(err, errMessageTooLong) {
		t.Fatalf("many lines: %v", err)
	}
}

// FuzzSSEReader: any bytes from the relay end in messages and an error, never a panic, a message over the bound, or
// an event without id, type and host.
func FuzzSSEReader(f *testing.F) {
	f.Add([]byte("id: 1\nevent: online\ndata: {\"id\":\"1\",\"type\":\"online\",\"host_id\":\"h\",\"seq\":2}\n\n"))
	f.Add([]byte("id: x\nevent: reset\ndata: {\"reason\":\"gap\"}\n\n"))
	f.Add([]byte(": hb\r\n\r\n\rdata\n\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		r := newSSEReader(bytes.NewReader(b))
		for range len(b) + 1 {
			m, err := r.next()
			if err != nil {
				return
			}
			if len(m.data)+len(m.id)+len(m.event) > maxMessage+len(b) {
				t.Fatalf("message larger than its input")
			}
			e, ok, err := decodeEvent(m)
			if err == nil && ok && (e.ID == "" || e.Type == "" || (e.Type != Reset && e.HostID == "")) {
				t.Fatalf("decoded an incomplete event %+v", e)
			}
		}
		t.Fatalf("more messages than input bytes")
	})
}
