package relay

import (
	"io"
	"net/http"
	"strings"
)

// Header policy: the one place that says which request headers the relay owns. A header the relay owns reaches a
// host only as the relay set it; whatever a client sent under that name, or under a name that merely looks like it,
// is removed first.
//
// "Looks like it": CGI, WSGI, Rack and PHP hand headers to applications as HTTP_X_SWITCHBOARD_SUBJECT, mapping '-'
// to '_' and folding case, so a client header "X_Switchboard_Subject" reads there exactly like the relay's
// "X-Switchboard-Subject". foldHeaderName maps a name onto that shared form, and every path (the local proxy, the
// WebSocket upgrade, the forward to a peer, the lean forward and the receiving end of a hop) compares folded names
// against the one list below.

// foldHeaderName returns name with '_' mapped to '-' and ASCII letters lowercased: the form in which two names a
// gateway would confuse are equal.
func foldHeaderName(name string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r == '_':
			return '-'
		case 'A' <= r && r <= 'Z':
			return r + ('a' - 'A')
		}
		return r
	}, name)
}

// reservedHeaders are the folded names the relay owns on a request to a host.
var reservedHeaders = map[string]bool{
	// Identity and credentials.
	"authorization":       true,
	"proxy-authorization": true,
	"proxy-authenticate":  true,
	// Forwarding headers: the relay sets X-Forwarded-For/-Host/-Proto by its own trust rules; the others are
	// removed so that an upstream that trusts them is not misled.
	"forwarded":      true,
	"x-real-ip":      true,
	"client-ip":      true,
	"true-client-ip": true,
	// Between replicas (internal.go).
	"switchboard-hop":         true,
	"switchboard-hop-subject": true,
}

// reservedPrefixes are folded name prefixes the relay owns: its identity headers (X-Switchboard-Subject and any it
// adds later) and the forwarding family.
var reservedPrefixes = []string{"x-switchboard-", "x-forwarded-", "switchboard-hop-"}

// hopByHopHeaders are the folded hop-by-hop names (RFC 9110 §7.6.1). The exact names are handled by the proxy
// machinery (removed, and Te: trailers or an Upgrade pair set again by the relay itself); their look-alikes are
// removed like any reserved name.
var hopByHopHeaders = map[string]bool{
	"connection": true, "proxy-connection": true, "keep-alive": true, "te": true, "trailer": true,
	"transfer-encoding": true, "upgrade": true,
}

// reservedHeader reports whether name, or a name it looks like, is owned by the relay. Hop-by-hop names count.
// It runs for every header of every exchange, so a name of usual length is folded on the stack (the map lookups
// and comparisons of a converted byte slice do not copy it).
func reservedHeader(name string) bool {
	var buf [64]byte
	if len(name) > len(buf) {
		return reservedFolded([]byte(foldHeaderName(name)))
	}
	return reservedFolded(foldInto(buf[:len(name)], name))
}

// reservedFolded is reservedHeader for a folded name.
func reservedFolded(f []byte) bool {
	if reservedHeaders[string(f)] || hopByHopHeaders[string(f)] {
		return true
	}
	for _, p := range reservedPrefixes {
		if len(f) >= len(p) && string(f[:len(p)]) == p {
			return true
		}
	}
	return false
}

// stripReserved removes from h, a request header on its way to a host or a peer, every reserved name and every
// look-alike of one. The exact hop-by-hop names are left to the proxy machinery, which removed the client's and may
// have set its own (Te: trailers, Connection/Upgrade of an upgrade); their look-alikes go.
func stripReserved(h http.Header) {
	for k := range h {
		if !reservedHeader(k) {
			continue
		}
		if hopByHopHeaders[foldHeaderName(k)] && !strings.ContainsRune(k, '_') {
			continue
		}
		delete(h, k)
	}
}

// stripReservedTrailers removes every reserved name, hop-by-hop ones included, from t, a request's trailers: no
// trailer may carry identity, credentials, forwarding or framing.
func stripReservedTrailers(t http.Header) {
	for k := range t {
		if reservedHeader(k) {
			delete(t, k)
		}
	}
}

// trailerGuard is a request body whose trailers (t, the map the server fills when the body ends and the transport
// writes after it) are cleaned of reserved names the moment the body ends, before the transport writes them: a
// trailer the client did not declare is added to the map only then.
type trailerGuard struct {
	io.ReadCloser
	t http.Header
}

func (g trailerGuard) Read(p []byte) (int, error) {
	n, err := g.ReadCloser.Read(p)
	if err != nil {
		stripReservedTrailers(g.t)
	}
	return n, err
}

// guardTrailers cleans out's declared trailers now and its actual ones when its body ends. out.Trailer must be the
// incoming request's map (see rewrite).
func guardTrailers(out *http.Request) {
	if out.Trailer == nil {
		return
	}
	stripReservedTrailers(out.Trailer)
	if out.Body != nil && out.Body != http.NoBody {
		out.Body = trailerGuard{ReadCloser: out.Body, t: out.Trailer}
	}
}

// reservedResponseHeaders are folded names a host may not put on its answer, because a proxy in front of the relay
// acts on them: Fly.io's proxy replays the client's request, credentials included, wherever fly-replay says, and
// nginx and lighttpd serve a file or an internal location named by X-Accel-Redirect or X-Sendfile. Only the relay
// itself sets fly-replay (RouteFlyReplay).
var reservedResponseHeaders = map[string]bool{
	"fly-replay": true, "x-sendfile": true, "x-lighttpd-send-file": true, "x-lighttpd-send-tempfile": true,
}

// reservedResponsePrefixes: X-Accel-Redirect, -Buffering, -Limit-Rate, … (nginx).
var reservedResponsePrefixes = []string{"x-accel-"}

// stripReservedResponse removes from h, the header of a host's answer, every name a proxy in front of the relay
// would act on, and every look-alike of one.
func stripReservedResponse(h http.Header) {
	for k := range h {
		if reservedResponseName(k) {
			delete(h, k)
		}
	}
}

// reservedResponseName reports whether name, or a name it looks like, may not be on a host's answer. A name of
// usual length is folded on the stack, as in reservedHeader: this runs for every header of every answer.
func reservedResponseName(name string) bool {
	var buf [64]byte
	var f []byte
	if len(name) > len(buf) {
		f = []byte(foldHeaderName(name))
	} else {
		f = foldInto(buf[:len(name)], name)
	}
	if reservedResponseHeaders[string(f)] {
		return true
	}
	for _, p := range reservedResponsePrefixes {
		if len(f) >= len(p) && string(f[:len(p)]) == p {
			return true
		}
	}
	return false
}

// foldInto writes name folded (foldHeaderName) into f, which has its length, and returns f.
func foldInto(f []byte, name string) []byte {
	for i := 0; i < len(name); i++ {
		switch c := name[i]; {
		case c == '_':
			f[i] = '-'
		case 'A' <= c && c <= 'Z':
			f[i] = c + ('a' - 'A')
		default:
			f[i] = c
		}
	}
	return f
}

// modifyResponse is the ReverseProxy hook that cleans a host's answer (stripReservedResponse).
func modifyResponse(resp *http.Response) error {
	stripReservedResponse(resp.Header)
	return nil
}
