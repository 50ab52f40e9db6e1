package relay

import (
	"net/http"
	"net/url"
	"strings"
)

// What a path-prefix proxy owes the pages it serves (path mode, /hosts/{id}/…): the host believes it lives at "/",
// so the absolute paths in its redirects and the paths of its cookies are moved under the prefix, and no cookie of
// one host may reach another (Domain is removed). In host mode the host owns its origin: paths stay, but Domain is
// still removed, since a Domain of the hosts domain would reach every other host.

// rewriteLocation returns loc, a host's Location, with an absolute path or an absolute URL naming the public origin
// (scheme and host as the client used them) moved under prefix. Anything else (relative references, other origins,
// a path already under the prefix, unparsable values) is returned as it is.
func rewriteLocation(loc, prefix, publicHost string) string {
	if prefix == "" || loc == "" {
		return loc
	}
	if strings.HasPrefix(loc, "/") && !strings.HasPrefix(loc, "//") && !strings.HasPrefix(loc, "/\\") {
		if underPrefix(loc, prefix) {
			return loc
		}
		return prefix + loc
	}
	u, err := url.Parse(loc)
	if err != nil || !u.IsAbs() || u.Opaque != "" || (u.Scheme != "http" && u.Scheme != "https") ||
		u.User != nil || !strings.EqualFold(u.Host, publicHost) {
		return loc
	}
	p := u.EscapedPath()
	if p == "" {
		p = "/"
	}
	if underPrefix(p, prefix) {
		return loc
	}
	rest := strings.TrimPrefix(loc, u.Scheme+"://"+u.Host)
	if len(rest) == len(loc) { // the scheme or host was spelled differently from how url.Parse keeps them
		return u.Scheme + "://" + u.Host + prefix + p + query(u)
	}
	if !strings.HasPrefix(rest, "/") {
		rest = "/" + rest
	}
	return u.Scheme + "://" + u.Host + prefix + rest
}

// query returns u's query and fragment as they were written.
func query(u *url.URL) string {
	s := ""
	if u.RawQuery != "" || u.ForceQuery {
		s += "?" + u.RawQuery
	}
	if u.Fragment != "" {
		s += "#" + u.EscapedFragment()
	}
	return s
}

// underPrefix reports whether the path p (which may carry a query) is prefix itself or lies below it.
func underPrefix(p, prefix string) bool {
	rest, ok := strings.CutPrefix(p, prefix)
	return ok && (rest == "" || rest[0] == '/' || rest[0] == '?' || rest[0] == '#')
}

// rewriteSetCookie returns a host's Set-Cookie value with its Domain attribute removed and, in path mode (prefix
// set), its Path moved under prefix. A cookie named like the relay's session cookie is refused (ok false): only the
// relay sets it. Attributes it does not know (Partitioned, Priority, …) are kept as they are.
func rewriteSetCookie(v, prefix string) (string, bool) {
	parts := strings.Split(v, ";")
	name, _, _ := strings.Cut(parts[0], "=")
	if strings.EqualFold(strings.TrimSpace(name), SessionCookie) || !cookiePathSafe(prefix) {
		return "", false // the session is the relay's; a prefix that cannot be a cookie Path gets no cookie
	}
	var b strings.Builder
	b.Grow(len(v) + len(prefix))
	b.WriteString(strings.TrimSpace(parts[0]))
	for _, attr := range parts[1:] {
		attr = strings.TrimSpace(attr)
		k, val, _ := strings.Cut(attr, "=")
		switch strings.ToLower(strings.TrimSpace(k)) {
		case "domain":
			continue
		case "path":
			if prefix == "" {
				break
			}
			val = strings.TrimSpace(val)
			switch {
			case val == prefix: // the host's root: the same cookies, said the way every other path under it is
				val = prefix + "/"
			case underPrefix(val, prefix) && !strings.ContainsAny(val, "?#"):
			case strings.HasPrefix(val, "/"):
				val = prefix + val
			default: // not a path: the browser would use the default path, which lies under the prefix
				val = prefix + "/"
			}
			attr = "Path=" + val
		}
		if attr == "" {
			continue
		}
		b.WriteString("; ")
		b.WriteString(attr)
	}
	return b.String(), true
}

// rewriteHostResponse applies the page rules above, and the relay's ownership of CORS, to h, the header of a
// host's answer to ex.
func rewriteHostResponse(h http.Header, ex *exchange) {
	for k := range h {
		if len(k) > len("Access-Control-") && strings.EqualFold(k[:len("Access-Control-")], "Access-Control-") {
			delete(h, k) // the relay answers CORS itself (cors.go): a browser must never see two
		}
	}
	if loc := h.Get("Location"); loc != "" && ex.prefix != "" {
		h.Set("Location", rewriteLocation(loc, ex.prefix, ex.publicHost))
	}
	if cs := h["Set-Cookie"]; len(cs) > 0 {
		out := cs[:0]
		for _, c := range cs {
			if v, ok := rewriteSetCookie(c, ex.prefix); ok {
				out = append(out, v)
			}
		}
		if len(out) == 0 {
			delete(h, "Set-Cookie")
		} else {
			h["Set-Cookie"] = out
		}
	}
}
