package tunnel

import (
	"bytes"
	"strings"
	"testing"
)

// FuzzParseControl: any line parses or fails cleanly, never beyond the size bound, and what WriteControl writes
// parses back to the same message.
func FuzzParseControl(f *testing.F) {
	f.Add([]byte(`{"type":"ready"}`))
	f.Add([]byte(`{"type":"drain","delay_ms":1500}`))
	f.Add([]byte(`{"type":"close","code":4409,"reason":"replaced"}`))
	f.Add([]byte(`{"type":`))
	f.Add([]byte(strings.Repeat("x", MaxControlLine+1)))
	f.Fuzz(func(t *testing.T, line []byte) {
		c, err := ParseControl(line)
		if err != nil {
			return
		}
		if len(line) > MaxControlLine {
			t.Fatalf("accepted a %d-byte line", len(line))
		}
		var buf bytes.Buffer
		if err := WriteControl(&buf, c); err != nil {
			t.Fatal(err)
		}
		out := bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
		if bytes.ContainsRune(out, '\n') {
			t.Fatalf("WriteControl wrote a newline inside a message: %q", out)
		}
		back, err := ParseControl(out)
		if err != nil || back != c {
			t.Fatalf("round trip: %+v -> %q -> %+v, %v", c, out, back, err)
		}
	})
}
