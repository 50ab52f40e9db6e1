package relay

import (
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/switchboard-relay/switchboard/internal/auth"
)

// Browser sessions (docs/browsers.md). A browser presents its client token once, as ?access_token= on a
// navigation; the relay answers 303 to the same URL without the token and sets SessionCookie, whose value is the
// token itself (no new credential format: it is verified like the token, expires with it and is refused when the
// token is). The cookie is scoped to the one host: host-only on the host's own origin in host mode, Path=/hosts/{id}/
// in path mode. The relay removes it from every request before the host sees it, and only the relay may set it.

// SessionCookie is the name of the relay's browser session cookie.
const SessionCookie = "switchboard_session"

// maxSessionToken bounds the token a session cookie may carry: browsers keep cookies of about 4096 bytes, name and
// attributes included. A longer token gets no session; the page is served with the token in its URL, as without
// sessions.
const maxSessionToken = 3800

// credential is where a client exchange's token came from.
type credential int

const (
	credNone credential = iota
	credHeader
	credQuery
	credCookie
)

// exchangeToken returns the token of a client exchange: Authorization, else ?access_token=, else (for host
// exchanges only: the API does not take it) the session cookie.
func exchangeToken(r *http.Request) (string, credential) {
	tok, fromQuery := auth.FromRequest(r)
	switch {
	case tok != "" && fromQuery:
		return tok, credQuery
	case tok != "":
		return tok, credHeader
	}
	if c, err := r.Cookie(SessionCookie); err == nil && c.Value != "" {
		return c.Value, credCookie
	}
	return "", credNone
}

// navigation reports whether r is a browser loading a page: a GET that says so in Sec-Fetch-Mode or accepts HTML.
func navigation(r *http.Request) bool {
	if r.Method != http.MethodGet || websocketRequested(r) {
		return false
	}
	if m := r.Header.Get("Sec-Fetch-Mode"); m != "" {
		return m == "navigate"
	}
	return headerHasToken(r.Header, "Accept", "text/html")
}

// cookieSafe reports whether tok can be a cookie value as it is (RFC 6265 cookie-octets), within maxSessionToken.
func cookieSafe(tok string) bool {
	if tok == "" || len(tok) > maxSessionToken {
		return false
	}
	for i := 0; i < len(tok); i++ {
		c := tok[i]
		if c < 0x21 || c > 0x7e || c == '"' || c == ',' || c == ';' || c == '\\' {
			return false
		}
	}
	return true
}

// cookiePathSafe reports whether p, a path prefix taken from the request, can be a cookie's Path as it is: visible
// ASCII without ';' (which would end the attribute and let the rest of the path add attributes of its own, such as
// a Domain) or ','. Host ids may hold such characters; their pages then get no cookies rather than wrong ones.
func cookiePathSafe(p string) bool {
	for i := 0; i < len(p); i++ {
		if c := p[i]; c < 0x21 || c > 0x7e || c == ';' || c == ',' {
			return false
		}
	}
	return true
}

// startSession answers a token-bearing navigation with 303 to the same URL without the token and the session
// cookie. It returns false, having written nothing, when the token cannot be a cookie.
func (s *Server) startSession(w http.ResponseWriter, r *http.Request, tg target, tok string, expires time.Time) bool {
	if !cookieSafe(tok) || !cookiePathSafe(tg.prefix) {
		return false
	}
	u := *r.URL
	auth.StripQueryToken(&u)
	loc := u.EscapedPath()
	if strings.HasPrefix(loc, "//") || strings.HasPrefix(loc, "/\\") {
		// "//evil.example/x" (or "/\evil.example/x", which browsers read the same) as a Location leaves the relay:
		// the page is this relay's own "/evil.example/x".
		loc = "/" + strings.TrimLeft(loc, "/\\")
	}
	if u.RawQuery != "" {
		loc += "?" + u.RawQuery
	}
	c := &http.Cookie{
		Name:     SessionCookie,
		Value:    tok,
		Path:     "/",
		HttpOnly: true,
		SameSite: http.SameSiteLaxMode,
		Secure:   s.clientProto(r) == "https",
	}
	if tg.prefix != "" {
		c.Path = tg.prefix + "/"
	}
	if !expires.IsZero() {
		c.Expires = expires
		c.MaxAge = max(1, int(time.Until(expires).Seconds()))
	}
	h := w.Header()
	h.Add("Set-Cookie", c.String())
	h.Set("Location", loc)
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusSeeOther)
	return true
}

// stateChanging reports whether r may change state at the host: any method but GET, HEAD and OPTIONS, or a
// WebSocket upgrade.
func stateChanging(r *http.Request) bool {
	switch r.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions:
		return websocketRequested(r)
	}
	return true
}

// originAllowedForSession reports whether r's Origin is the origin r was sent to (its own host's) or an allowed
// CORS origin. A missing Origin is neither. The own origin is compared by host and port only: behind a front that
// terminates TLS without --trust-forwarded-for the relay sees http while the page is https, and the host part is
// what tells one host from another.
func (s *Server) originAllowedForSession(r *http.Request) bool {
	o := r.Header.Get("Origin")
	if o == "" || o == "null" {
		return false
	}
	if u, err := url.Parse(o); err == nil && (u.Scheme == "http" || u.Scheme == "https") && u.Path == "" &&
		strings.EqualFold(u.Host, r.Host) {
		return true
	}
	return s.cors.allowed(o)
}

// scrubBrowserCredentials removes from h, a request header on its way to a host, the relay's session cookie and
// any access_token in Referer: neither may reach the host.
func scrubBrowserCredentials(h http.Header) {
	if ref := h.Get("Referer"); ref != "" && (strings.Contains(ref, auth.QueryParam) || strings.Contains(ref, "%")) {
		if u, err := url.Parse(ref); err == nil {
			auth.StripQueryToken(u)
			h.Set("Referer", u.String())
		} else {
			h.Del("Referer")
		}
	}
	cs := h.Values("Cookie")
	if len(cs) == 0 {
		return
	}
	kept := make([]string, 0, len(cs))
	changed := false
	for _, line := range cs {
		var b strings.Builder
		for part := range strings.SplitSeq(line, ";") {
			name, _, _ := strings.Cut(part, "=")
			if strings.EqualFold(strings.TrimSpace(name), SessionCookie) {
				changed = true
				continue
			}
			if strings.TrimSpace(part) == "" {
				continue
			}
			if b.Len() > 0 {
				b.WriteString("; ")
			}
			b.WriteString(strings.TrimSpace(part))
		}
		if b.Len() > 0 {
			kept = append(kept, b.String())
		}
	}
	if !changed {
		return
	}
	if len(kept) == 0 {
		h.Del("Cookie")
		return
	}
	h["Cookie"] = kept
}

// setBrowserHeaders finishes h, the header of a request on its way to ex's host: the session cookie and any token
// in Referer removed (again: a peer's request may come from a relay of another release), and in path mode
// X-Forwarded-Prefix, the prefix the host's pages live under (a reserved name: a client's copy is gone).
func (s *Server) setBrowserHeaders(h http.Header, _ *http.Request, ex *exchange) {
	scrubBrowserCredentials(h)
	if ex.prefix != "" {
		h.Set("X-Forwarded-Prefix", ex.prefix)
	}
}
