package relay

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"

	"github.com/switchboard-relay/switchboard/internal/tunnel"
)

// checkValidID fails t if validHostID accepted an id that breaks the host id rule: 1..128 bytes of UTF-8, no
// control characters (C0, DEL, C1), no spaces, no '/'.
func checkValidID(t *testing.T, id, from string) {
	t.Helper()
	if !validHostID(id) {
		return
	}
	if id == "" || len(id) > tunnel.MaxHostIDLen || !utf8.ValidString(id) {
		t.Fatalf("accepted host id %q (from %q): length %d or invalid UTF-8", id, from, len(id))
	}
	for _, r := range id {
		if unicode.IsControl(r) || r == '/' || r == ' ' {
			t.Fatalf("accepted host id %q (from %q) with %U", id, from, r)
		}
	}
}

// FuzzHostPath: any request path under /hosts/ splits without panicking into an id and a forwarded path that
// starts with "/"; an id that passes validation obeys the host id rule even when it came from escapes.
func FuzzHostPath(f *testing.F) {
	for _, s := range []string{
		"org:m/a", "org%3Am/x?y", "a%2Fb/c", "%00/x", "%7F", "%C2%85x", "%zz/x", "", "/", strings.Repeat("x", 129) + "/",
		"%E2%80%AE/rtl", "\xff/x", "a%20b/",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, tail string) {
		p := hostsPrefix + tail
		id, rest, err := splitHostPath(p)
		if !strings.HasPrefix(rest, "/") {
			t.Fatalf("splitHostPath(%q) rest = %q, want a leading /", p, rest)
		}
		if err != nil {
			return
		}
		if rest != "/" && !strings.HasSuffix(p, rest) {
			t.Fatalf("splitHostPath(%q) rest = %q is not the input's tail", p, rest)
		}
		checkValidID(t, id, p)
	})
}

// FuzzHandshakeInput: the host id and metadata headers of a tunnel handshake are validated and bounded, whatever
// they hold and however many labels come.
func FuzzHandshakeInput(f *testing.F) {
	f.Add("org:machine", "box", "linux", "v1", "env=dev", uint8(1))
	f.Add("a/b", strings.Repeat("n", 300), "", "", "=novalue", uint8(0))
	f.Add("\x00", "", "", "", "k=v=w", uint8(200))
	f.Add("é\u0085", "\xff\xfe", strings.Repeat("é", 40), "", " k = v ", uint8(64))
	f.Fuzz(func(t *testing.T, id, name, os, version, label string, extra uint8) {
		checkValidID(t, id, id)
		h := http.Header{}
		h.Set(tunnel.HeaderHostID, id)
		h.Set(tunnel.HeaderHostName, name)
		h.Set(tunnel.HeaderHostOS, os)
		h.Set(tunnel.HeaderAgentVersion, version)
		h.Add(tunnel.HeaderHostLabel, label)
		for i := range int(extra) { // distinct keys, so only the bound can stop them
			h.Add(tunnel.HeaderHostLabel, fmt.Sprintf("k%d=%s", i, label))
		}
		m := metadataFrom(h)
		if len(m.Name) > 256 || len(m.OS) > 64 || len(m.AgentVersion) > 64 || len(m.Labels) > 64 {
			t.Fatalf("metadata not bounded: name %d, os %d, version %d bytes, %d labels",
				len(m.Name), len(m.OS), len(m.AgentVersion), len(m.Labels))
		}
		for k, v := range m.Labels {
			if k == "" || len(k) > 128 || len(v) > 1024 {
				t.Fatalf("label %q=%q not bounded", k, v)
			}
		}
	})
}
