package relay_test

import (
	"bytes"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/switchboard-relay/switchboard/agent"
	"github.com/switchboard-relay/switchboard/internal/auth"
	"github.com/switchboard-relay/switchboard/internal/directory"
	"github.com/switchboard-relay/switchboard/internal/relay"
	"github.com/switchboard-relay/switchboard/internal/relaytest"
)

// seen is what an echo host received.
type seen struct {
	Method string      `json:"method"`
	URI    string      `json:"uri"`
	Host   string      `json:"host"`
	Header http.Header `json:"header"`
}

// echoHost answers every request with what it received, as JSON; its handler can be adjusted per path by extra.
func echoHost(extra func(w http.ResponseWriter, r *http.Request) bool) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if extra != nil && extra(w, r) {
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(seen{Method: r.Method, URI: r.RequestURI, Host: r.Host, Header: r.Header})
	})
}

// noFollow is a client that returns redirects instead of following them.
var noFollow = &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

// send sends req with host as its Host (host mode) when host is not empty, and returns the answer and its body.
func send(t *testing.T, req *http.Request) (*http.Response, []byte) {
	t.Helper()
	resp, err := noFollow.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp, body
}

func newReq(t *testing.T, method, u, host string) *http.Request {
	t.Helper()
	req, err := http.NewRequest(method, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	if host != "" {
		req.Host = host
	}
	return req
}

func decodeSeen(t *testing.T, body []byte) seen {
	t.Helper()
	var s seen
	if err := json.Unmarshal(body, &s); err != nil {
		t.Fatalf("host answer %q: %v", body, err)
	}
	return s
}

func bodyCode(t *testing.T, body []byte) string {
	t.Helper()
	var e struct {
		Error struct{ Code, Message string } `json:"error"`
	}
	if err := json.Unmarshal(body, &e); err != nil {
		t.Fatalf("error body %q: %v", body, err)
	}
	return e.Error.Code
}

func portOf(t *testing.T, rawURL string) string {
	u, err := url.Parse(rawURL)
	if err != nil {
		t.Fatal(err)
	}
	return u.Port()
}

func TestHostNameMapping(t *testing.T) {
	long := strings.Repeat("é:Z", 31) + "ab" // 126 bytes, not plain: four labels
	for _, id := range []string{"laptop", "laptop-1", "org:laptop", "Laptop", "a--b", "x--abc", "c--abc", "-a", "a-",
		strings.Repeat("a", 63), strings.Repeat("a", 64), "a.b", "ü", long, "*"} {
		name := relay.HostName(id)
		for _, label := range strings.Split(name, ".") {
			if len(label) == 0 || len(label) > 63 || strings.Trim(label, "abcdefghijklmnopqrstuvwxyz0123456789-") != "" {
				t.Fatalf("HostName(%q) = %q: label %q is not a DNS label", id, name, label)
			}
		}
		got, ok := relay.HostIDFromName(name)
		if !ok || got != id {
			t.Fatalf("HostIDFromName(HostName(%q) = %q) = %q, %v", id, name, got, ok)
		}
		if got, ok := relay.HostIDFromName(strings.ToUpper(name)); !ok || got != id {
			t.Fatalf("HostIDFromName(%q) = %q, %v: names are case-insensitive", strings.ToUpper(name), got, ok)
		}
	}
	if got := relay.HostName("org:laptop"); got != "x--dtp6eejcc5o78rrg" {
		t.Fatalf("HostName(org:laptop) = %q; docs/protocol.md and docs/browsers.md show x--dtp6eejcc5o78rrg", got)
	}
	// Names that are not the canonical form of any id.
	for _, name := range []string{"", "x--", "c--dtp6eehcc5q6ar3e", "x--dtp6eejcc5o78rrg.x--aa", "a..b", "x--!!", "a_b",
		"x--" + strings.Repeat("0", 61), "x--c5h6", /* "ab": plain, so its encoded form is refused */
		relay.HostName(long) + ".c--00", "x--85" /* "A" is x--84: trailing bits must be zero */} {
		if id, ok := relay.HostIDFromName(name); ok {
			t.Fatalf("HostIDFromName(%q) = %q, true; want refused", name, id)
		}
	}
}

func TestHostModeRoutesByName(t *testing.T) {
	r := relaytest.StartRelay(t, func(c *relay.Config) { c.HostsDomain = "localhost" })
	relaytest.StartHost(t, r.URL, "org:laptop", echoHost(nil), nil)
	relaytest.StartHost(t, r.URL, "box", echoHost(nil), nil)
	tok := relaytest.ClientToken(t, "u", "org:laptop", "box")
	port := portOf(t, r.URL)

	name := relay.HostName("org:laptop") + ".localhost:" + port
	req := newReq(t, "GET", r.URL+"/a/b%2Fc?q=1&r=%20", name)
	req.Header.Set("Authorization", "Bearer "+tok)
	req.Header.Set("X-Forwarded-Prefix", "/forged")
	resp, body := send(t, req)
	if resp.StatusCode != 200 {
		t.Fatalf("host mode: %d %s", resp.StatusCode, body)
	}
	s := decodeSeen(t, body)
	if s.URI != "/a/b%2Fc?q=1&r=%20" {
		t.Fatalf("host saw %q; want the path and query unchanged", s.URI)
	}
	if got := s.Header.Get("X-Forwarded-Host"); got != name {
		t.Fatalf("X-Forwarded-Host %q, want %q", got, name)
	}
	if got := s.Header.Values("X-Forwarded-Prefix"); len(got) != 0 {
		t.Fatalf("host mode: X-Forwarded-Prefix %q reached the host; a client's copy must go and host mode has none", got)
	}

	// A plain id, Host in upper case; the relay's own API beside it on the bare domain.
	req = newReq(t, "GET", r.URL+"/", "BOX.localhost:"+port)
	req.Header.Set("Authorization", "Bearer "+tok)
	if resp, body := send(t, req); resp.StatusCode != 200 || decodeSeen(t, body).URI != "/" {
		t.Fatalf("BOX.localhost: %d %s", resp.StatusCode, body)
	}
	req = newReq(t, "GET", r.URL+"/v1/hosts/box", "localhost:"+port)
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, body = send(t, req)
	var view struct{ URL, PathURL string }
	if resp.StatusCode != 200 || json.Unmarshal(body, &struct {
		URL     *string `json:"url"`
		PathURL *string `json:"path_url"`
	}{&view.URL, &view.PathURL}) != nil {
		t.Fatalf("GET /v1/hosts/box: %d %s", resp.StatusCode, body)
	}
	if view.URL != "http://box.localhost:"+port+"/" || view.PathURL != "http://localhost:"+port+"/hosts/box/" {
		t.Fatalf("url %q, path_url %q", view.URL, view.PathURL)
	}

	// A name that decodes to no id is 404; one that the token may not reach is 403; no token is 401.
	req = newReq(t, "GET", r.URL+"/", "x--zz.localhost:"+port)
	req.Header.Set("Authorization", "Bearer "+tok)
	if resp, body := send(t, req); resp.StatusCode != 404 || bodyCode(t, body) != "not_found" {
		t.Fatalf("bad name: %d %s", resp.StatusCode, body)
	}
	req = newReq(t, "GET", r.URL+"/", "other.localhost:"+port)
	req.Header.Set("Authorization", "Bearer "+tok)
	if resp, body := send(t, req); resp.StatusCode != 403 {
		t.Fatalf("unreachable host: %d %s", resp.StatusCode, body)
	}
	if resp, body := send(t, newReq(t, "GET", r.URL+"/", "box.localhost:"+port)); resp.StatusCode != 401 {
		t.Fatalf("no token: %d %s", resp.StatusCode, body)
	}
}

func TestPathModeTrailingSlashAndPrefix(t *testing.T) {
	r := relaytest.StartRelay(t, nil)
	relaytest.StartHost(t, r.URL, "org:laptop", echoHost(nil), nil)
	tok := relaytest.ClientToken(t, "u", "org:laptop")

	resp, body := send(t, newReq(t, "GET", r.URL+"/hosts/org:laptop?x=1&access_token="+tok, ""))
	if resp.StatusCode != http.StatusPermanentRedirect || resp.Header.Get("Location") != "/hosts/org:laptop/?x=1&access_token="+tok {
		t.Fatalf("slashless: %d Location %q %s", resp.StatusCode, resp.Header.Get("Location"), body)
	}
	req := newReq(t, "GET", r.URL+"/hosts/org:laptop/p?q", "")
	req.Header.Set("Authorization", "Bearer "+tok)
	req.Header.Set("X-Forwarded-Prefix", "/evil")
	req.Header.Set("X_Forwarded_Prefix", "/evil")
	resp, body = send(t, req)
	s := decodeSeen(t, body)
	if resp.StatusCode != 200 || s.URI != "/p?q" {
		t.Fatalf("%d %s", resp.StatusCode, body)
	}
	if got := s.Header.Values("X-Forwarded-Prefix"); len(got) != 1 || got[0] != "/hosts/org:laptop" {
		t.Fatalf("X-Forwarded-Prefix %q, want [/hosts/org:laptop]", got)
	}
	if got := s.Header.Values("X_Forwarded_Prefix"); len(got) != 0 {
		t.Fatalf("look-alike X_Forwarded_Prefix %q reached the host", got)
	}
}

func TestPathModeRewritesRedirectsAndCookies(t *testing.T) {
	r := relaytest.StartRelay(t, nil)
	relayHost := strings.TrimPrefix(r.URL, "http://")
	var upstreamURL string
	var mu sync.Mutex
	handler := http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		mu.Lock()
		up := upstreamURL
		mu.Unlock()
		loc := map[string]string{
			"/abs":      "/next?a=1",
			"/rel":      "next",
			"/public":   "http://" + relayHost + "/next",
			"/upstream": up + "/next",
			"/other":    "https://example.com/next",
			"/already":  "/hosts/h/next",
			"/netpath":  "//example.com/x",
		}[req.URL.Path]
		if loc != "" {
			w.Header().Set("Location", loc)
			w.WriteHeader(http.StatusFound)
			return
		}
		w.Header().Add("Set-Cookie", "a=1; Path=/; Domain=example.com; HttpOnly")
		w.Header().Add("Set-Cookie", "b=2")
		w.Header().Add("Set-Cookie", "c=3; path=/app; Secure; SameSite=Strict; Partitioned")
		w.Header().Add("Set-Cookie", "switchboard_session=forged; Path=/")
		w.Header().Set("Access-Control-Allow-Origin", "*")
		_, _ = io.WriteString(w, "ok")
	})
	up := relaytest.StartUpstreamHost(t, r.URL, "h", handler, nil)
	mu.Lock()
	upstreamURL = up.URL
	mu.Unlock()
	tok := relaytest.ClientToken(t, "u", "h")

	for path, want := range map[string]string{
		"/abs":      "/hosts/h/next?a=1",
		"/rel":      "next",
		"/public":   "http://" + relayHost + "/hosts/h/next",
		"/upstream": "http://" + relayHost + "/hosts/h/next",
		"/other":    "https://example.com/next",
		"/already":  "/hosts/h/next",
		"/netpath":  "//example.com/x",
	} {
		req := newReq(t, "GET", r.URL+"/hosts/h"+path, "")
		req.Header.Set("Authorization", "Bearer "+tok)
		resp, _ := send(t, req)
		if got := resp.Header.Get("Location"); resp.StatusCode != http.StatusFound || got != want {
			t.Fatalf("%s: %d Location %q, want %q", path, resp.StatusCode, got, want)
		}
	}
	resp := relaytest.Do(t, "GET", r.URL+"/hosts/h/page", tok)
	resp.Body.Close()
	got := resp.Header.Values("Set-Cookie")
	want := []string{"a=1; Path=/hosts/h/; HttpOnly", "b=2", "c=3; Path=/hosts/h/app; Secure; SameSite=Strict; Partitioned"}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("Set-Cookie\n%q\nwant\n%q", got, want)
	}
	if v := resp.Header.Values("Access-Control-Allow-Origin"); len(v) != 0 {
		t.Fatalf("the host's Access-Control-Allow-Origin %q passed; the relay owns CORS", v)
	}
}

func TestBrowserSession(t *testing.T) {
	for _, mode := range []string{"path", "host"} {
		t.Run(mode, func(t *testing.T) {
			r := relaytest.StartRelay(t, func(c *relay.Config) {
				c.HostsDomain = "localhost"
				c.TrustForwardedProto = true
				c.CORSOrigins = []string{"http://app.example"}
			})
			relaytest.StartHost(t, r.URL, "h", echoHost(func(w http.ResponseWriter, r *http.Request) bool {
				if r.Header.Get("Upgrade") != "" {
					w.WriteHeader(http.StatusTeapot) // proves the upgrade reached the host
					return true
				}
				return false
			}), nil)
			tok := relaytest.ClientToken(t, "u", "h")
			port := portOf(t, r.URL)
			base, host, own := r.URL+"/hosts/h", "", r.URL
			if mode == "host" {
				base, host, own = r.URL, "h.localhost:"+port, "http://h.localhost:"+port
			}

			// The navigation trades its token for a cookie.
			req := newReq(t, "GET", base+"/page?x=1&access_token="+tok+"&y=2", host)
			req.Header.Set("Sec-Fetch-Mode", "navigate")
			req.Header.Set("X-Forwarded-Proto", "https") // a trusted front terminated TLS
			resp, body := send(t, req)
			if resp.StatusCode != http.StatusSeeOther {
				t.Fatalf("navigation: %d %s", resp.StatusCode, body)
			}
			wantLoc := "/hosts/h/page?x=1&y=2"
			if mode == "host" {
				wantLoc = "/page?x=1&y=2"
			}
			if got := resp.Header.Get("Location"); got != wantLoc {
				t.Fatalf("Location %q, want %q", got, wantLoc)
			}
			if got := resp.Header.Get("Referrer-Policy"); got != "no-referrer" {
				t.Fatalf("Referrer-Policy %q", got)
			}
			cookies := resp.Cookies()
			if len(cookies) != 1 {
				t.Fatalf("cookies %v", resp.Header.Values("Set-Cookie"))
			}
			c := cookies[0]
			wantPath := "/hosts/h/"
			if mode == "host" {
				wantPath = "/"
			}
			if c.Name != relay.SessionCookie || c.Value != tok || !c.HttpOnly || !c.Secure || c.SameSite != http.SameSiteLaxMode ||
				c.Path != wantPath || c.Domain != "" {
				t.Fatalf("session cookie %q", resp.Header.Get("Set-Cookie"))
			}
			if d := time.Until(c.Expires); d < 50*time.Minute || d > 61*time.Minute {
				t.Fatalf("cookie expires in %v; the token expires in an hour", d)
			}

			// The cookie authenticates later requests; the host sees neither it nor the token, nor the token in
			// Referer; other cookies pass.
			req = newReq(t, "GET", base+"/sub.js", host)
			req.Header.Set("Cookie", "theirs=1; "+relay.SessionCookie+"="+tok+"; more=2")
			req.Header.Set("Referer", own+"/hosts/h/page?x=1&access_token="+tok)
			resp, body = send(t, req)
			if resp.StatusCode != 200 {
				t.Fatalf("cookie request: %d %s", resp.StatusCode, body)
			}
			s := decodeSeen(t, body)
			if strings.Contains(string(body), tok) {
				t.Fatalf("the token reached the host: %s", body)
			}
			if got := s.Header.Get("Cookie"); got != "theirs=1; more=2" {
				t.Fatalf("host saw Cookie %q", got)
			}
			if got := s.Header.Get("Referer"); got != own+"/hosts/h/page?x=1" {
				t.Fatalf("host saw Referer %q", got)
			}
			if s.Header.Get("X-Switchboard-Subject") != "u" {
				t.Fatalf("subject %q", s.Header.Get("X-Switchboard-Subject"))
			}

			// Not a navigation (fetch, script): the query token still works as before, no redirect.
			req = newReq(t, "GET", base+"/api?access_token="+tok, host)
			req.Header.Set("Sec-Fetch-Mode", "cors")
			req.Header.Set("Accept", "text/html")
			if resp, body := send(t, req); resp.StatusCode != 200 {
				t.Fatalf("fetch with access_token: %d %s", resp.StatusCode, body)
			}

			// CSRF: a cookie-authenticated POST or WebSocket needs the host's own origin or an allowed one.
			for _, tc := range []struct {
				origin string
				ws     bool
				want   int
			}{
				{"", false, 403}, {"http://evil.example", false, 403}, {"null", false, 403},
				{own, false, 200}, {"http://app.example", false, 200},
				// the page is https behind a front that terminates TLS: the host part decides
				{"https://" + strings.TrimPrefix(own, "http://"), false, 200},
				{own + "0", false, 403}, {"http://h.localhost.evil.example", false, 403},
				{"http://evil.example", true, 403}, {own, true, http.StatusTeapot},
			} {
				method := "POST"
				if tc.ws {
					method = "GET"
				}
				req = newReq(t, method, base+"/do", host)
				req.Header.Set("Cookie", relay.SessionCookie+"="+tok)
				if tc.origin != "" {
					req.Header.Set("Origin", tc.origin)
				}
				if tc.ws {
					req.Header.Set("Connection", "Upgrade")
					req.Header.Set("Upgrade", "websocket")
					req.Header.Set("Sec-WebSocket-Version", "13")
					req.Header.Set("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
				}
				resp, body := send(t, req)
				if resp.StatusCode != tc.want {
					t.Fatalf("%s ws=%v Origin %q: %d %s; want %d", method, tc.ws, tc.origin, resp.StatusCode, body, tc.want)
				}
				if tc.want == 403 && bodyCode(t, body) != "cross_origin_refused" {
					t.Fatalf("refusal %s", body)
				}
			}
			// Programs are unaffected: a bearer POST without Origin passes.
			req = newReq(t, "POST", base+"/do", host)
			req.Header.Set("Authorization", "Bearer "+tok)
			if resp, body := send(t, req); resp.StatusCode != 200 {
				t.Fatalf("bearer POST: %d %s", resp.StatusCode, body)
			}
			// A cookie of a token that may not reach the host is refused like the token.
			other := relaytest.ClientToken(t, "u", "other")
			req = newReq(t, "GET", base+"/", host)
			req.Header.Set("Cookie", relay.SessionCookie+"="+other)
			if resp, body := send(t, req); resp.StatusCode != 403 {
				t.Fatalf("cookie for another host: %d %s", resp.StatusCode, body)
			}
		})
	}
}

func TestSessionNotSecureOverPlainHTTP(t *testing.T) {
	r := relaytest.StartRelay(t, nil) // no trusted front: a client-sent X-Forwarded-Proto is not believed
	relaytest.StartHost(t, r.URL, "h", echoHost(nil), nil)
	tok := relaytest.ClientToken(t, "u", "h")
	req := newReq(t, "GET", r.URL+"/hosts/h/?access_token="+tok, "")
	req.Header.Set("Accept", "text/html,application/xhtml+xml")
	req.Header.Set("X-Forwarded-Proto", "https")
	resp, body := send(t, req)
	if resp.StatusCode != http.StatusSeeOther || len(resp.Cookies()) != 1 || resp.Cookies()[0].Secure {
		t.Fatalf("%d %q %s", resp.StatusCode, resp.Header.Values("Set-Cookie"), body)
	}
	// And the host is told http.
	req = newReq(t, "GET", r.URL+"/hosts/h/", "")
	req.Header.Set("Authorization", "Bearer "+tok)
	req.Header.Set("X-Forwarded-Proto", "https")
	_, body = send(t, req)
	if got := decodeSeen(t, body).Header.Get("X-Forwarded-Proto"); got != "http" {
		t.Fatalf("X-Forwarded-Proto %q from an untrusted client", got)
	}
}

func TestCORS(t *testing.T) {
	r := relaytest.StartRelay(t, func(c *relay.Config) { c.CORSOrigins = []string{"http://app.example:3000"} })
	relaytest.StartHost(t, r.URL, "h", echoHost(func(w http.ResponseWriter, r *http.Request) bool {
		w.Header().Set("Access-Control-Allow-Origin", "*")
		w.Header().Set("Access-Control-Allow-Credentials", "true")
		w.Header().Set("X-App", "1")
		return false
	}), nil)
	tok := relaytest.ClientToken(t, "u", "h")

	for _, path := range []string{"/hosts/h/api", "/v1/hosts/h", "/v1/presence/events"} {
		req := newReq(t, "OPTIONS", r.URL+path, "")
		req.Header.Set("Origin", "http://app.example:3000")
		req.Header.Set("Access-Control-Request-Method", "POST")
		req.Header.Set("Access-Control-Request-Headers", "authorization, content-type, x-trpc-source")
		resp, body := send(t, req)
		h := resp.Header
		if resp.StatusCode != http.StatusNoContent || h.Get("Access-Control-Allow-Origin") != "http://app.example:3000" ||
			!strings.Contains(h.Get("Access-Control-Allow-Methods"), "POST") || h.Get("Access-Control-Max-Age") == "" {
			t.Fatalf("preflight %s: %d %v %s", path, resp.StatusCode, h, body)
		}
		for _, want := range []string{"Authorization", "Content-Type", "Last-Event-ID", "x-trpc-source"} {
			if !strings.Contains(h.Get("Access-Control-Allow-Headers"), want) {
				t.Fatalf("preflight %s: Allow-Headers %q lacks %s", path, h.Get("Access-Control-Allow-Headers"), want)
			}
		}
		req.Header.Set("Origin", "http://evil.example")
		resp, body = send(t, req)
		if resp.StatusCode != 403 || bodyCode(t, body) != "cors_origin_not_allowed" || !bytes.Contains(body, []byte("--cors-origin")) ||
			resp.Header.Get("Access-Control-Allow-Origin") != "" {
			t.Fatalf("preflight from another origin %s: %d %s", path, resp.StatusCode, body)
		}
	}

	req := newReq(t, "GET", r.URL+"/hosts/h/api", "")
	req.Header.Set("Origin", "http://app.example:3000")
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, body := send(t, req)
	if resp.StatusCode != 200 {
		t.Fatalf("%d %s", resp.StatusCode, body)
	}
	if got := resp.Header.Values("Access-Control-Allow-Origin"); len(got) != 1 || got[0] != "http://app.example:3000" {
		t.Fatalf("Access-Control-Allow-Origin %q; want exactly the caller's origin, the host's '*' replaced", got)
	}
	if !strings.Contains(strings.Join(resp.Header.Values("Vary"), ","), "Origin") ||
		!strings.Contains(resp.Header.Get("Access-Control-Expose-Headers"), "X-App") {
		t.Fatalf("Vary %q Expose %q", resp.Header.Values("Vary"), resp.Header.Get("Access-Control-Expose-Headers"))
	}
	// Errors are readable by the app too, and another origin gets no allowance (and none of the host's).
	req = newReq(t, "GET", r.URL+"/hosts/h/api", "")
	req.Header.Set("Origin", "http://app.example:3000")
	if resp, _ := send(t, req); resp.StatusCode != 401 || resp.Header.Get("Access-Control-Allow-Origin") == "" {
		t.Fatalf("401 without CORS headers: %d %v", resp.StatusCode, resp.Header)
	}
	req = newReq(t, "GET", r.URL+"/hosts/h/api", "")
	req.Header.Set("Origin", "http://evil.example")
	req.Header.Set("Authorization", "Bearer "+tok)
	if resp, _ := send(t, req); resp.StatusCode != 200 || len(resp.Header.Values("Access-Control-Allow-Origin")) != 0 {
		t.Fatalf("other origin: %d %v", resp.StatusCode, resp.Header)
	}
}

func TestCORSOriginsChecked(t *testing.T) {
	for _, o := range []string{"*", "null", "app.example", "http://app.example/path", "ftp://x", "https://*.example"} {
		_, err := relay.New(relay.Config{Verifier: auth.AllowAll(), CORSOrigins: []string{o}})
		if err == nil {
			t.Fatalf("CORSOrigins %q accepted", o)
		}
	}
	if _, err := relay.New(relay.Config{Verifier: auth.AllowAll(), HostsDomain: "bad_domain"}); err == nil {
		t.Fatal("HostsDomain bad_domain accepted")
	}
}

// TestAgentHostHeaderAndUpstreamErrors: --host-header, X-Forwarded-Host, the WARN on an upstream failure and
// --upstream-ca, through a real agent reverse proxy.
func TestAgentHostHeaderAndUpstreamErrors(t *testing.T) {
	r := relaytest.StartRelay(t, func(c *relay.Config) { c.HostsDomain = "localhost" })
	port := portOf(t, r.URL)
	tok := relaytest.ClientToken(t, "u", "*")
	up := httptest.NewTLSServer(echoHost(nil))
	t.Cleanup(up.Close)
	upURL, _ := url.Parse(up.URL)
	pool := up.Client().Transport.(*http.Transport).TLSClientConfig.RootCAs

	var logs syncBuffer
	log := slog.New(slog.NewJSONHandler(&logs, nil))
	for id, opts := range map[string]agent.UpstreamOptions{
		"default":  {TLS: up.Client().Transport.(*http.Transport).TLSClientConfig},
		"preserve": {TLS: up.Client().Transport.(*http.Transport).TLSClientConfig, HostHeader: agent.HostHeaderPreserve},
		"fixed":    {TLS: up.Client().Transport.(*http.Transport).TLSClientConfig, HostHeader: "app.internal:8443"},
		"noca":     {Logger: log.With("host_id", "noca")},
	} {
		relaytest.StartHost(t, r.URL, id, agent.UpstreamHandlerWith(upURL, opts), nil)
	}
	_ = pool
	for id, wantHost := range map[string]string{"default": upURL.Host, "preserve": id2host("preserve", port), "fixed": "app.internal:8443"} {
		req := newReq(t, "GET", r.URL+"/x", id2host(id, port))
		req.Header.Set("Authorization", "Bearer "+tok)
		resp, body := send(t, req)
		if resp.StatusCode != 200 {
			t.Fatalf("%s: %d %s", id, resp.StatusCode, body)
		}
		s := decodeSeen(t, body)
		if s.Host != wantHost || s.Header.Get("X-Forwarded-Host") != id2host(id, port) {
			t.Fatalf("%s: upstream saw Host %q, X-Forwarded-Host %q; want %q, %q", id, s.Host, s.Header.Get("X-Forwarded-Host"), wantHost, id2host(id, port))
		}
	}
	// Without the upstream's CA the agent cannot reach it: 502 upstream_unreachable, and a WARN for the operator
	// naming the host, method and path, without the query.
	req := newReq(t, "POST", r.URL+"/secret/path?k=v", id2host("noca", port))
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, body := send(t, req)
	if resp.StatusCode != 502 || bodyCode(t, body) != "upstream_unreachable" {
		t.Fatalf("noca: %d %s", resp.StatusCode, body)
	}
	line := logs.String()
	for _, want := range []string{`"level":"WARN"`, `"msg":"upstream failed"`, `"host_id":"noca"`, `"method":"POST"`, `"path":"/secret/path"`, `certificate`} {
		if !strings.Contains(line, want) {
			t.Fatalf("agent log %q lacks %s", line, want)
		}
	}
	if strings.Contains(line, "k=v") {
		t.Fatalf("agent log %q has the query", line)
	}
}

func id2host(id, port string) string { return id + ".localhost:" + port }

// TestBrowserRulesAcrossReplicas: a request that reaches a replica without the host's tunnel is forwarded as the
// client sent it; the owner finds the host by name in host mode, and the page rules apply exactly once.
func TestBrowserRulesAcrossReplicas(t *testing.T) {
	dir := directory.NewMemory()
	t.Cleanup(func() { _ = dir.Close() })
	mut := func(c *relay.Config) { c.HostsDomain = "localhost" }
	a := relaytest.StartRelayOn(t, dir, mut)
	b := relaytest.StartRelayOn(t, dir, mut)
	relaytest.StartHost(t, a.URL, "org:laptop", echoHost(func(w http.ResponseWriter, r *http.Request) bool {
		if r.URL.Path == "/go" {
			w.Header().Add("Set-Cookie", "k=v; Path=/; Domain=localhost")
			http.Redirect(w, r, "/there", http.StatusFound)
			return true
		}
		return false
	}), nil)
	tok := relaytest.ClientToken(t, "u", "org:laptop")
	port := portOf(t, b.URL)

	req := newReq(t, "GET", b.URL+"/p?q=1", relay.HostName("org:laptop")+".localhost:"+port)
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, body := send(t, req)
	if resp.StatusCode != 200 {
		t.Fatalf("host mode via a peer: %d %s", resp.StatusCode, body)
	}
	if s := decodeSeen(t, body); s.URI != "/p?q=1" || s.Header.Get("X-Forwarded-Prefix") != "" {
		t.Fatalf("host saw %q, prefix %q", s.URI, s.Header.Get("X-Forwarded-Prefix"))
	}
	req = newReq(t, "GET", b.URL+"/hosts/org:laptop/go", "")
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, body = send(t, req)
	if resp.StatusCode != http.StatusFound || resp.Header.Get("Location") != "/hosts/org:laptop/there" ||
		resp.Header.Get("Set-Cookie") != "k=v; Path=/hosts/org:laptop/" {
		t.Fatalf("path mode via a peer: %d Location %q Set-Cookie %q %s", resp.StatusCode, resp.Header.Get("Location"), resp.Header.Get("Set-Cookie"), body)
	}
}
