package relay

import (
	"io"
	"net/http"
	"net/http/httputil"
	"strings"
)

// The lean forward carries the commonest forwarded exchange — a GET, HEAD, OPTIONS or TRACE without a body and
// without an upgrade (page loads, API reads, SSE streams) — to the owner replica on a pooled keep-alive connection,
// on the handler's own goroutine (peering.LeanClient: the pool, the dialing, the bounded head, the sending again on
// a stale connection). httputil.ReverseProxy with http.Transport does the same with two goroutines per connection
// and a hand-off per exchange, and flushes on a timer; here the response is flushed whenever the owner has sent
// nothing more for the moment (flush-when-idle), which costs no timer and delays no byte. Requests with a body or
// an upgrade, and other methods, go through ReverseProxy: they cannot be sent again when a pooled connection turns
// out to be closed. This file keeps the relay's part: which requests go this way, the outbound request's headers,
// and the copy of the answer to the client.

// leanForwardable reports whether r can take the lean forward: a method that may be sent twice (RFC 9110 § 9.2.2:
// GET, HEAD, OPTIONS, TRACE), no body, no upgrade. A request on a pooled connection that the peer had closed is then
// sent again on a fresh one, as http.Transport does.
func leanForwardable(r *http.Request) bool {
	switch r.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace:
	default:
		return false
	}
	return (r.Body == nil || r.Body == http.NoBody || r.ContentLength == 0 && len(r.TransferEncoding) == 0) &&
		r.Header.Get("Upgrade") == "" && len(r.Trailer) == 0
}

// leanForward forwards r (see leanForwardable) to fw.peer and copies the answer to w.
func (s *Server) leanForward(w http.ResponseWriter, r *http.Request, fw *forwardEx) {
	out := leanRequest(r)
	s.rewriteForward(&httputil.ProxyRequest{In: r, Out: out})
	resp, pc, err := s.lean.RoundTrip(r.Context(), fw.peer.Host, out, fw.subject)
	if err != nil {
		s.forwardError(w, r, err)
		return
	}
	fw.status = resp.StatusCode
	if !s.copyResponse(w, resp, pc) {
		pc.Release(false)
		// As ReverseProxy does: the response is cut, so the client must not see a clean end of it.
		panic(http.ErrAbortHandler)
	}
	_ = resp.Body.Close() // at its end: reads nothing more
	pc.Release(true)
}

// leanRequest is the outbound request of a lean forward of r, before rewriteForward, which decides what the peer
// learns about the client. It is prepared as httputil.ReverseProxy prepares the other forwards before their Rewrite
// (newForwardProxy): hop-by-hop headers removed, "Te: trailers" kept if the client sent it, the client's
// Forwarded and X-Forwarded-* removed, and no default User-Agent added (ReverseProxy sets it after Rewrite;
// rewriteForward does not touch it). That preparation is private to net/http/httputil, so it is repeated here, and
// TestLeanRequestAsReverseProxy holds the two together. ReverseProxy's other steps differ:
//   - a body and an upgrade are not carried over: a lean forward has neither (leanForwardable);
//   - the query is not re-encoded: ReverseProxy drops the parts of a query it cannot parse (a ';', a bad escape,
//     too many parameters) before Rewrite, while this keeps the query as the client sent it, as an exchange served
//     over a tunnel here does (exchange.go); rewriteForward restores it on the other forwards, so all agree.
func leanRequest(r *http.Request) *http.Request {
	out := r.Clone(r.Context())
	out.Body, out.ContentLength = nil, 0
	out.Close = false
	removeHopHeaders(out.Header)
	if headerHasToken(r.Header, "Te", "trailers") {
		out.Header.Set("Te", "trailers")
	}
	for _, k := range []string{"Forwarded", "X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto"} {
		delete(out.Header, k)
	}
	if _, ok := out.Header["User-Agent"]; !ok {
		out.Header.Set("User-Agent", "")
	}
	return out
}

// copyResponse writes resp to w, flushing whenever src (the peer connection) holds nothing more that was read, and
// reports whether the body was read to its end (so the connection can be reused).
// The body is not closed: after a failure its Close would drain what is left, so the caller closes the
// connection instead.
func (s *Server) copyResponse(w http.ResponseWriter, resp *http.Response, src interface{ Buffered() int }) bool {
	removeHopHeaders(resp.Header)
	stripReservedResponse(resp.Header)
	h := w.Header()
	for k, vs := range resp.Header {
		h[k] = append(h[k], vs...)
	}
	if len(resp.Trailer) > 0 {
		names := make([]string, 0, len(resp.Trailer))
		for k := range resp.Trailer {
			names = append(names, k)
		}
		h["Trailer"] = []string{strings.Join(names, ", ")}
	}
	w.WriteHeader(resp.StatusCode)
	rc := http.NewResponseController(w)
	if src.Buffered() == 0 && resp.ContentLength != 0 {
		_ = rc.Flush() // the body is not here yet (an SSE stream, a slow answer): the head goes now
	}
	buf := bufferPool{}.Get()
	defer bufferPool{}.Put(buf)
	for {
		n, err := resp.Body.Read(buf)
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				return false
			}
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return false
		}
		if src.Buffered() == 0 {
			if rc.Flush() != nil {
				return false
			}
		}
	}
	for k, vs := range resp.Trailer {
		h[http.TrailerPrefix+k] = vs
	}
	return true
}
