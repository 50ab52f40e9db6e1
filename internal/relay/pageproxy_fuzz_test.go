package relay

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
)

// FuzzRewriteLocation: whatever a host sends as Location, the rewrite never points the browser at another origin
// than the host's value did, and an absolute path always lands under the prefix.
func FuzzRewriteLocation(f *testing.F) {
	for _, s := range []string{"/x", "x", "//evil/x", "/\\evil", "http://relay:1/a?b#c", "HTTP://RELAY:1", "http://relay:1",
		"https://other/x", "/hosts/h/x", "/hosts/hx", "http://u@relay:1/x", "javascript:alert(1)", "http://relay:1?x", "\x00/"} {
		f.Add(s)
	}
	const prefix, public = "/hosts/h", "relay:1"
	f.Fuzz(func(t *testing.T, loc string) {
		got := rewriteLocation(loc, prefix, public)
		if got == loc {
			return
		}
		if strings.HasPrefix(loc, "/") && !strings.HasPrefix(loc, "//") {
			if !strings.HasPrefix(got, prefix+"/") {
				t.Fatalf("rewriteLocation(%q) = %q: an absolute path must land under the prefix", loc, got)
			}
			return
		}
		u, err := url.Parse(got)
		if err != nil || !strings.EqualFold(u.Host, public) || !strings.HasPrefix(u.EscapedPath(), prefix+"/") {
			t.Fatalf("rewriteLocation(%q) = %q: a rewritten URL must name the public origin under the prefix", loc, got)
		}
	})
}

// FuzzRewriteSetCookie: a host's cookie never keeps a Domain, never takes the session cookie's name, and in path
// mode always has a Path under the prefix (or none, whose default lies under it).
func FuzzRewriteSetCookie(f *testing.F) {
	for _, s := range []string{"a=1; Path=/; Domain=example.com", "b=2", "c=3; path=/app; Secure", "switchboard_session=x",
		" SWITCHBOARD_SESSION =x", "d=4; Path", "e=5; Path=rel", "f=6;;; domain ; Path=/hosts/h/x", "g=7; Path=/hosts/hx"} {
		f.Add(s, true)
		f.Add(s, false)
	}
	f.Fuzz(func(t *testing.T, v string, pathMode bool) {
		prefix := ""
		if pathMode {
			prefix = "/hosts/h"
		}
		got, ok := rewriteSetCookie(v, prefix)
		if !ok {
			return
		}
		h := http.Header{"Set-Cookie": {got}}
		resp := http.Response{Header: h}
		for _, c := range resp.Cookies() {
			if strings.EqualFold(c.Name, SessionCookie) {
				t.Fatalf("rewriteSetCookie(%q) = %q: the session cookie's name passed", v, got)
			}
			if c.Domain != "" {
				t.Fatalf("rewriteSetCookie(%q) = %q: Domain %q kept", v, got, c.Domain)
			}
			if pathMode && c.Path != "" && !strings.HasPrefix(c.Path, prefix+"/") {
				t.Fatalf("rewriteSetCookie(%q) = %q: Path %q outside the prefix", v, got, c.Path)
			}
		}
	})
}

// FuzzHostIDFromName: a name is accepted only for a valid id whose canonical name it is.
func FuzzHostIDFromName(f *testing.F) {
	for _, s := range []string{"laptop", "x--dtp6eejcc5o78rrg", "x--84", "x--85", "c--00", "a--b", "X--DTP6EEJCC5O78RRG"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		id, ok := HostIDFromName(name)
		if !ok {
			return
		}
		if !validHostID(id) || HostName(id) != strings.ToLower(name) {
			t.Fatalf("HostIDFromName(%q) = %q; HostName of it is %q", name, id, HostName(id))
		}
	})
}
