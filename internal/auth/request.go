package auth

import (
	"net/http"
	"net/url"
	"strings"
)

// QueryParam is the query parameter that carries a token when a header cannot (RFC 6750 section 2.3).
const QueryParam = "access_token"

// redacted replaces token values in RedactURL.
const redacted = "REDACTED"

// FromRequest returns the request's bearer token: from "Authorization: Bearer <token>" (the scheme in any case),
// else from the first "access_token" query parameter, with fromQuery true. It returns "" when there is neither.
// Query parameters are split on "&" only, as net/url does; the name is compared after unescaping.
func FromRequest(r *http.Request) (token string, fromQuery bool) {
	if tok, ok := bearer(r.Header.Get("Authorization")); ok {
		return tok, false
	}
	if r.URL == nil {
		return "", false
	}
	for part := range strings.SplitSeq(r.URL.RawQuery, "&") {
		if val, ok := tokenParam(part); ok {
			v, err := url.QueryUnescape(val)
			if err != nil {
				return "", false // an unreadable token is no token; the relay answers 401
			}
			return v, v != ""
		}
	}
	return "", false
}

// bearer parses an Authorization header value "Bearer <token>".
func bearer(h string) (string, bool) {
	scheme, rest, ok := strings.Cut(strings.TrimLeft(h, " \t"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	tok := strings.Trim(rest, " \t")
	return tok, tok != ""
}

// tokenParam reports whether the query segment part ("name=value" or "name") is access_token, and its raw value.
func tokenParam(part string) (rawValue string, ok bool) {
	name, val, _ := strings.Cut(part, "=")
	if name != QueryParam {
		if !strings.Contains(name, "%") {
			return "", false
		}
		n, err := url.QueryUnescape(name)
		if err != nil || n != QueryParam {
			return "", false
		}
	}
	return val, true
}

// StripQueryToken removes every access_token parameter from u.RawQuery (segments end at '&' or ';', see
// rewriteQuery), leaving the other segments byte for byte and in order. A query left empty is removed along with its "?".
func StripQueryToken(u *url.URL) {
	if u == nil || u.RawQuery == "" {
		return
	}
	u.RawQuery = rewriteQuery(u.RawQuery, func(string) (string, bool) { return "", false })
	if u.RawQuery == "" {
		u.ForceQuery = false
	}
}

// RedactURL returns u as a string for logs, with every access_token value (and any userinfo password) replaced.
func RedactURL(u *url.URL) string {
	if u == nil {
		return ""
	}
	c := *u
	c.RawQuery = rewriteQuery(u.RawQuery, func(string) (string, bool) { return QueryParam + "=" + redacted, true })
	return c.Redacted()
}

// rewriteQuery passes every access_token segment of raw through f, which returns its replacement or false to drop
// it (with the separator before it, or after it for the first). Segments end at '&' and also at ';': this relay
// reads parameters split at '&' only, but a host's framework may split at ';' too, and must not find a token
// there. Other segments, empty ones included, and their separators are kept as they are.
func rewriteQuery(raw string, f func(seg string) (string, bool)) string {
	if !strings.Contains(raw, QueryParam) && !strings.Contains(raw, "%") {
		return raw
	}
	var b strings.Builder
	first := true
	changed := false
	sep := byte(0) // the separator before the segment at raw[start:]
	for start := 0; start <= len(raw); {
		end := start + strings.IndexAny(raw[start:], "&;")
		if end < start {
			end = len(raw)
		}
		part := raw[start:end]
		keep := true
		if _, ok := tokenParam(part); ok {
			changed = true
			part, keep = f(part)
		}
		if keep {
			if !first {
				b.WriteByte(sep)
			}
			first = false
			b.WriteString(part)
		}
		if end == len(raw) {
			break
		}
		sep, start = raw[end], end+1
	}
	if !changed {
		return raw
	}
	return b.String()
}
