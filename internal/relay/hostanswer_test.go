package relay_test

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"net/url"
	"strings"
	"testing"

	"github.com/coder/websocket"

	"github.com/switchboard-relay/switchboard/internal/relay"
	"github.com/switchboard-relay/switchboard/internal/relaytest"
)

// hostileCookies are what a host tries to set: the relay's own session, and a cookie for the whole domain.
var hostileCookies = []string{
	relay.SessionCookie + "=ATTACKER; Domain=localhost; Path=/; HttpOnly",
	"tracker=1; Domain=localhost; Path=/",
}

// checkHostCookies fails if a Set-Cookie the client received is the relay's session or has a Domain or a Path
// outside prefix.
func checkHostCookies(t *testing.T, what string, h http.Header, prefix string) {
	t.Helper()
	for _, c := range (&http.Response{Header: h}).Cookies() {
		if c.Name == relay.SessionCookie || c.Domain != "" || !strings.HasPrefix(c.Path, prefix) {
			t.Fatalf("%s: a host's cookie reached the client as %q (Domain %q, Path %q)", what, c.Raw, c.Domain, c.Path)
		}
	}
}

// TestWebSocketAnswerFollowsPageRules: a host's 101 is an answer like any other: browsers keep its cookies, so it
// can neither set the relay's session cookie nor one for another host's path or the parent domain.
func TestWebSocketAnswerFollowsPageRules(t *testing.T) {
	r := relaytest.StartRelay(t, nil)
	relaytest.StartHost(t, r.URL, "h", http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		for _, c := range hostileCookies {
			w.Header().Add("Set-Cookie", c)
		}
		w.Header().Set("Access-Control-Allow-Origin", "https://evil.example")
		c, err := websocket.Accept(w, req, nil)
		if err != nil {
			return
		}
		_ = c.Close(websocket.StatusNormalClosure, "")
	}), nil)
	tok := relaytest.ClientToken(t, "c", "h")
	c, resp, err := websocket.Dial(context.Background(), "ws"+strings.TrimPrefix(r.URL, "http")+"/hosts/h/ws",
		&websocket.DialOptions{HTTPHeader: http.Header{"Authorization": {"Bearer " + tok}}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	checkHostCookies(t, "101", resp.Header, "/hosts/h/")
	if len(resp.Cookies()) != 1 {
		t.Fatalf("the host's own cookie, rewritten, should pass: %q", resp.Header.Values("Set-Cookie"))
	}
	if v := resp.Header.Get("Access-Control-Allow-Origin"); v != "" {
		t.Fatalf("the host's Access-Control-Allow-Origin passed on a 101: %q", v)
	}
}

// TestInterimAnswerFollowsPageRules: a host's 103 Early Hints reaches the client without the names a proxy in
// front acts on, and without cookies, Location or CORS, which only a final answer may carry (rewritten).
func TestInterimAnswerFollowsPageRules(t *testing.T) {
	r := relaytest.StartRelay(t, nil)
	relaytest.StartHost(t, r.URL, "h", http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		h := w.Header()
		h.Set("Link", "</style.css>; rel=preload")
		h.Set("Fly-Replay", "instance=elsewhere")
		h.Set("X-Accel-Redirect", "/internal/secret")
		h.Set("Location", "https://evil.example/")
		h.Set("Access-Control-Allow-Origin", "*")
		for _, c := range hostileCookies {
			h.Add("Set-Cookie", c)
		}
		w.WriteHeader(http.StatusEarlyHints)
		clear(h)
		_, _ = w.Write([]byte("final"))
	}), nil)
	var interim []textproto.MIMEHeader
	ctx := httptrace.WithClientTrace(context.Background(), &httptrace.ClientTrace{
		Got1xxResponse: func(code int, h textproto.MIMEHeader) error {
			interim = append(interim, h)
			return nil
		},
	})
	req, _ := http.NewRequestWithContext(ctx, "GET", r.URL+"/hosts/h/", nil)
	req.Header.Set("Authorization", "Bearer "+relaytest.ClientToken(t, "c", "h"))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || len(interim) != 1 {
		t.Fatalf("status %d, %d interim answers: want 200 after one 103", resp.StatusCode, len(interim))
	}
	h := http.Header(interim[0])
	if h.Get("Link") == "" {
		t.Fatalf("the hint itself was lost: %v", h)
	}
	for _, k := range []string{"Fly-Replay", "X-Accel-Redirect", "Location", "Access-Control-Allow-Origin", "Set-Cookie"} {
		if v := h.Values(k); len(v) > 0 {
			t.Fatalf("the host's 103 carried %s: %q", k, v)
		}
	}
}

// TestSessionRedirectStaysOnTheRelay: whatever redirect answers a token-bearing navigation (the session's 303, or a
// path-cleaning one) names a path on the relay, even for a request path that a browser would read as another site
// ("//evil.example/x", "/\\evil.example/x").
func TestSessionRedirectStaysOnTheRelay(t *testing.T) {
	r := relaytest.StartRelay(t, func(c *relay.Config) { c.HostsDomain = "localhost" })
	relaytest.StartHost(t, r.URL, "h", echoHost(nil), nil)
	tok := relaytest.ClientToken(t, "c", "h")
	addr := strings.TrimPrefix(r.URL, "http://")
	for _, path := range []string{"//evil.example/x", "/\\evil.example/x", "///evil.example/x", "/\\/evil.example/x"} {
		nc, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = fmt.Fprintf(nc, "GET %s?access_token=%s HTTP/1.1\r\nHost: h.localhost:%s\r\nSec-Fetch-Mode: navigate\r\n"+
			"Connection: close\r\n\r\n", path, tok, portOf(t, r.URL))
		resp, err := http.ReadResponse(bufio.NewReader(nc), nil)
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		resp.Body.Close()
		nc.Close()
		if resp.StatusCode/100 != 3 {
			continue // not redirected at all (e.g. refused as a bad request): nothing to follow
		}
		loc := resp.Header.Get("Location")
		u, err := url.Parse(loc)
		if err != nil || u.Host != "" || !strings.HasPrefix(loc, "/") || strings.HasPrefix(loc, "//") ||
			strings.HasPrefix(loc, "/\\") {
			t.Fatalf("%s: %d Location %q leaves the relay", path, resp.StatusCode, loc)
		}
	}
}

// TestCookiePathCannotCarryAttributes: a host id may hold ';', which in a cookie's Path would end the attribute
// and let the rest of the id add its own (a Domain). Such a page gets no session cookie and no host cookies.
func TestCookiePathCannotCarryAttributes(t *testing.T) {
	const id = "a;Domain=localhost;b"
	r := relaytest.StartRelay(t, nil)
	relaytest.StartHost(t, r.URL, id, echoHost(func(w http.ResponseWriter, _ *http.Request) bool {
		w.Header().Add("Set-Cookie", "pref=1; Path=/")
		return false
	}), nil)
	tok := relaytest.ClientToken(t, "c", id)
	req := newReq(t, "GET", r.URL+"/hosts/"+id+"/?access_token="+tok, "")
	req.Header.Set("Sec-Fetch-Mode", "navigate")
	resp, body := send(t, req)
	for _, c := range resp.Header.Values("Set-Cookie") {
		if strings.Contains(strings.ToLower(c), "domain") {
			t.Fatalf("a Set-Cookie with a Domain reached the client: %q (status %d, %s)", c, resp.StatusCode, body)
		}
	}
	if resp.StatusCode != 200 {
		t.Fatalf("the page itself: %d %s", resp.StatusCode, body)
	}
}
