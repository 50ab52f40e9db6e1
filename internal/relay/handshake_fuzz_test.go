package relay

import (
	"net/http"
	"strings"
	"testing"
	"unicode/utf8"
)

// FuzzHandshakeInput: host ids and handshake metadata from the network are validated and bounded, never panic.
func FuzzHandshakeInput(f *testing.F) {
	f.Add("org:machine", "box", "linux", "v1", "env=dev")
	f.Add("a/b", strings.Repeat("n", 300), "", "", "=novalue")
	f.Add("\x00", "", "", "", "k=v=w")
	f.Fuzz(func(t *testing.T, id, name, os, version, label string) {
		if validHostID(id) {
			if len(id) == 0 || len(id) > 128 || !utf8.ValidString(id) || strings.ContainsAny(id, "/ \t\r\n\x00\x7f") {
				t.Fatalf("accepted host id %q", id)
			}
		}
		h := http.Header{}
		h.Set("Switchboard-Host-Name", name)
		h.Set("Switchboard-Host-Os", os)
		h.Set("Switchboard-Agent-Version", version)
		for range 70 {
			h.Add("Switchboard-Host-Label", label)
		}
		m := metadataFrom(h)
		if len(m.Name) > 256 || len(m.OS) > 64 || len(m.AgentVersion) > 64 || len(m.Labels) > 64 {
			t.Fatalf("metadata not bounded: %d %d %d %d", len(m.Name), len(m.OS), len(m.AgentVersion), len(m.Labels))
		}
		for k, v := range m.Labels {
			if k == "" || len(k) > 128 || len(v) > 1024 {
				t.Fatalf("label %q=%q not bounded", k, v)
			}
		}
	})
}
