package relay

import (
	"fmt"
	"net/http"
	"net/url"
	"sort"
	"strings"
)

// CORS (docs/browsers.md). The relay answers cross-origin browsers itself, for /v1/… and for hosts in both modes,
// and only for the exact origins configured (Config.CORSOrigins): a preflight is answered 204 without a token,
// real answers get Access-Control-Allow-Origin for the caller's origin, and whatever Access-Control-* headers a
// host sent are removed (rewriteHostResponse), so a browser never sees two.

// corsPolicy is the set of allowed origins. Immutable after New.
type corsPolicy struct {
	origins map[string]bool // canonical "scheme://host[:port]", lowercase
}

// corsMaxAge is how long, in seconds, a browser may cache a preflight answer.
const corsMaxAge = "600"

// corsAllowMethods are the methods a preflight may ask for.
const corsAllowMethods = "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"

// corsBaseHeaders are always allowed in requests; a preflight may ask for more (see preflight).
var corsBaseHeaders = []string{"Authorization", "Content-Type", "Last-Event-ID"}

// maxPreflightHeaders bounds the request header names one preflight may ask for.
const maxPreflightHeaders = 64

// newCORSPolicy checks and canonicalizes the configured origins.
func newCORSPolicy(origins []string) (corsPolicy, error) {
	p := corsPolicy{origins: make(map[string]bool, len(origins))}
	for _, o := range origins {
		c, err := canonicalOrigin(o)
		if err != nil {
			return corsPolicy{}, fmt.Errorf("relay: Config.CORSOrigins %q: %w", o, err)
		}
		p.origins[c] = true
	}
	return p, nil
}

// canonicalOrigin returns o as browsers send it in Origin: scheme://host[:port], lowercase, no default port.
func canonicalOrigin(o string) (string, error) {
	if o == "*" || o == "null" {
		return "", fmt.Errorf("want an exact origin such as https://app.example.com, not %q", o)
	}
	u, err := url.Parse(o)
	if err != nil {
		return "", err
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil ||
		(u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" || strings.Contains(u.Host, "*") {
		return "", fmt.Errorf("want scheme://host[:port] with no path, such as https://app.example.com")
	}
	host := strings.ToLower(u.Host)
	if (u.Scheme == "http" && strings.HasSuffix(host, ":80")) || (u.Scheme == "https" && strings.HasSuffix(host, ":443")) {
		host = host[:strings.LastIndexByte(host, ':')]
	}
	return u.Scheme + "://" + host, nil
}

// allowed reports whether origin, as a browser sent it, is configured.
func (p corsPolicy) allowed(origin string) bool {
	if len(p.origins) == 0 || origin == "" {
		return false
	}
	return p.origins[strings.ToLower(origin)]
}

// isPreflight reports whether r is a CORS preflight.
func isPreflight(r *http.Request) bool {
	return r.Method == http.MethodOptions && r.Header.Get("Origin") != "" &&
		r.Header.Get("Access-Control-Request-Method") != ""
}

// preflight answers a CORS preflight: 204 with the allowances for an allowed origin, 403 otherwise (never 401: a
// preflight carries no credentials).
func (s *Server) preflight(w http.ResponseWriter, r *http.Request) {
	origin := r.Header.Get("Origin")
	h := w.Header()
	h.Set("Vary", "Origin, Access-Control-Request-Method, Access-Control-Request-Headers")
	if !s.cors.allowed(origin) {
		writeError(w, http.StatusForbidden, codeCORSOriginNotAllowed,
			"origin "+quoteOrigin(origin)+" may not call this relay from a browser; the operator allows origins with --cors-origin")
		return
	}
	allow := append([]string(nil), corsBaseHeaders...)
	seen := map[string]bool{}
	for _, a := range allow {
		seen[strings.ToLower(a)] = true
	}
	for _, v := range r.Header.Values("Access-Control-Request-Headers") {
		for _, name := range splitComma(v) {
			if len(seen) >= maxPreflightHeaders+len(corsBaseHeaders) || !validToken(name) || seen[strings.ToLower(name)] {
				continue
			}
			seen[strings.ToLower(name)] = true
			allow = append(allow, name)
		}
	}
	h.Set("Access-Control-Allow-Origin", origin)
	h.Set("Access-Control-Allow-Credentials", "true")
	h.Set("Access-Control-Allow-Methods", corsAllowMethods)
	h.Set("Access-Control-Allow-Headers", strings.Join(allow, ", "))
	h.Set("Access-Control-Max-Age", corsMaxAge)
	w.WriteHeader(http.StatusNoContent)
}

// quoteOrigin shows a client-sent origin in an error message, bounded.
func quoteOrigin(o string) string {
	if len(o) > 100 {
		o = o[:100] + "…"
	}
	return fmt.Sprintf("%q", o)
}

// validToken reports whether name is an RFC 9110 token.
func validToken(name string) bool {
	if name == "" || len(name) > 100 {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0) {
			return false
		}
	}
	return true
}

// corsWriter adds the CORS headers for an allowed origin to a real (not preflight) answer, just before its header
// is written, after removing any that are already there.
type corsWriter struct {
	http.ResponseWriter
	origin  string // "" when the origin is not allowed: Access-Control-* are only removed
	written bool
}

func (c *corsWriter) fix() {
	if c.written {
		return
	}
	c.written = true
	h := c.ResponseWriter.Header()
	var expose []string
	for k := range h {
		if len(k) > len("Access-Control-") && strings.EqualFold(k[:len("Access-Control-")], "Access-Control-") {
			delete(h, k)
			continue
		}
		switch http.CanonicalHeaderKey(k) {
		case "Set-Cookie", "Set-Cookie2":
		default:
			expose = append(expose, k)
		}
	}
	h.Add("Vary", "Origin")
	if c.origin == "" {
		return
	}
	sort.Strings(expose)
	h.Set("Access-Control-Allow-Origin", c.origin)
	h.Set("Access-Control-Allow-Credentials", "true")
	if len(expose) > 0 {
		h.Set("Access-Control-Expose-Headers", strings.Join(expose, ", "))
	}
}

func (c *corsWriter) WriteHeader(code int) {
	if code >= 200 || code == http.StatusSwitchingProtocols {
		c.fix()
	}
	c.ResponseWriter.WriteHeader(code)
}

func (c *corsWriter) Write(p []byte) (int, error) {
	c.fix()
	return c.ResponseWriter.Write(p)
}

// Flush lets ReverseProxy and the event stream flush through the wrapper.
func (c *corsWriter) Flush() {
	c.fix()
	_ = http.NewResponseController(c.ResponseWriter).Flush()
}

// Unwrap lets http.ResponseController reach deadlines and Hijack.
func (c *corsWriter) Unwrap() http.ResponseWriter { return c.ResponseWriter }

// CheckCORSOrigin reports whether o can be one of Config.CORSOrigins: an exact origin, scheme://host[:port].
func CheckCORSOrigin(o string) error {
	_, err := canonicalOrigin(o)
	return err
}
