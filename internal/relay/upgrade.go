package relay

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/switchboard-relay/switchboard/internal/auth"
	"github.com/switchboard-relay/switchboard/internal/httphead"
	"github.com/switchboard-relay/switchboard/internal/tunnel"
	"github.com/switchboard-relay/switchboard/internal/wsframe"
)

// closeGrace is how long the second direction of a WebSocket may linger after the first one ended.
const closeGrace = 5 * time.Second

// proxyWebSocket carries a WebSocket upgrade to the host and, after the host's 101, passes frames both ways as
// bytes. Frame boundaries are followed so that a close code that must not be sent (1005, 1006, …) becomes 1011 and
// a side that vanishes without a close frame is reported to the other side as 1011 instead of a bare disconnect.
// kind is "websocket", or kindTCP for a raw TCP stream (tcp.go), which travels the same way, or "http" for an
// upgrade to another protocol, whose bytes are passed without following frames.
func (s *Server) proxyWebSocket(w http.ResponseWriter, r *http.Request, ex *exchange, kind string) {
	ex.kind = kind
	outcome, status := s.webSocketExchange(w, r, ex)
	s.countExchange(kind, outcome, status)
}

func (s *Server) webSocketExchange(w http.ResponseWriter, r *http.Request, ex *exchange) (outcome string, status int) {
	out := s.upgradeRequest(r, ex)
	st, err := ex.t.sess.OpenStream()
	if err != nil {
		writeError(w, http.StatusBadGateway, codeUpstreamFailed, "could not open a stream to the host")
		return "upstream_failed", http.StatusBadGateway
	}
	defer st.Close()
	_ = st.SetDeadline(time.Now().Add(s.cfg.IdleTimeout))
	if err := out.Write(st); err != nil {
		writeError(w, http.StatusBadGateway, codeUpstreamFailed, "could not send the upgrade to the host")
		return "upstream_failed", http.StatusBadGateway
	}
	// A client that goes away ends the wait for the host's answer (and a refusal's body) at once: the stream's
	// deadline is moved to the past, which wakes a blocked read.
	stop := context.AfterFunc(r.Context(), func() { _ = st.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	hl := &httphead.Limiter{R: st}
	br := bufio.NewReaderSize(hl, 16<<10)
	// Interim answers (100 Continue, 103 Early Hints) are dropped, as the lean forward does; they share the cap
	// with the final head, so a host cannot send them without end.
	var resp *http.Response
	for {
		resp, err = httphead.ReadResponse(br, hl, out, s.cfg.MaxResponseHeaderBytes)
		if err != nil || resp.StatusCode >= 200 || resp.StatusCode == http.StatusSwitchingProtocols {
			break
		}
	}
	if err != nil {
		switch {
		case r.Context().Err() != nil:
			return "client_gone", 499
		case errors.Is(err, httphead.ErrTooLarge):
			s.bounds.cuts.WithLabelValues(cutResponseHead).Inc()
			writeError(w, http.StatusBadGateway, codeUpstreamHeaderTooLarge, "the host's answer to the upgrade has a header larger than the relay accepts")
			return "upstream_header_too_large", http.StatusBadGateway
		case isTimeout(err):
			writeError(w, http.StatusGatewayTimeout, codeUpstreamTimeout, "the host did not answer the upgrade within the idle timeout")
			return "timeout", http.StatusGatewayTimeout
		default:
			writeError(w, http.StatusBadGateway, codeUpstreamFailed, "the host's answer to the upgrade was unreadable")
			return "upstream_failed", http.StatusBadGateway
		}
	}
	defer resp.Body.Close()
	s.metrics.latency.WithLabelValues(ex.kind).Observe(time.Since(ex.start).Seconds())
	if resp.StatusCode != http.StatusSwitchingProtocols {
		// The upstream refused the upgrade: pass its answer on as an ordinary response.
		removeHopHeaders(resp.Header)
		stripReservedResponse(resp.Header)
		rewriteHostResponse(resp.Header, ex)
		for k, v := range resp.Header {
			w.Header()[k] = v
		}
		w.WriteHeader(resp.StatusCode)
		// The refusal's body is an ordinary answer: it may take long but must keep moving.
		rec := &recorder{ResponseWriter: w, s: s, start: ex.start, status: resp.StatusCode}
		_ = st.SetDeadline(time.Time{}) // the idle watch takes over from the wait's deadline
		ic := &idleConn{Stream: st, idle: s.cfg.IdleTimeout}
		s.idle.add(ic)
		_, _ = io.Copy(rec, idleReader{r: resp.Body, c: ic})
		s.idle.remove(ic)
		if resp.StatusCode >= 500 && resp.Header.Get(tunnel.HeaderUpstreamError) != "" {
			return outcomeUpstreamUnreachable, resp.StatusCode // the agent could not reach the TCP service
		}
		return "refused", resp.StatusCode
	}
	if !stop() {
		return "client_gone", 499
	}
	// WebSockets idle for long; their own pings keep them honest. Only writes are bounded (StallTimeout): a side
	// that takes no bytes while the other sends is cut.
	_ = st.SetDeadline(time.Time{})

	conn, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return "hijack_failed", http.StatusInternalServerError
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Time{})
	stripReservedResponse(resp.Header)
	rewriteHostResponse(resp.Header, ex)                          // browsers keep cookies from a 101 too: the page rules apply to it
	_ = conn.SetWriteDeadline(time.Now().Add(s.cfg.StallTimeout)) // the 101 head; the pumps move it on
	if err := writeSwitching(brw.Writer, resp.Header); err != nil {
		return "client_gone", http.StatusSwitchingProtocols
	}

	// A revocation of the client's token ends the exchange: the host's side is cut, and the client's closes with
	// 4401 below. Only a revocation: a context ended because the client went must not close the stream before the
	// pump below has told the host with a 1011 close frame.
	cut := context.AfterFunc(r.Context(), func() {
		if revokedExchange(r.Context()) {
			_ = st.Close()
		}
	})
	defer cut()
	hostW := newStallWriter(st, st.SetWriteDeadline, s.cfg.StallTimeout, s.bounds.cuts.WithLabelValues(cutStalledHost))
	clientW := newStallWriter(conn, conn.SetWriteDeadline, s.cfg.StallTimeout, s.bounds.cuts.WithLabelValues(cutStalledReader))
	// A WebSocket's frames are followed; another protocol's bytes (an upgrade of kind "http") are passed as they are.
	var toHost, toClient frameSink = rawSink{hostW}, rawSink{clientW}
	if ex.kind != "http" {
		toHost, toClient = wsframe.NewFollower(hostW, true), wsframe.NewFollower(clientW, false)
	}
	var wg sync.WaitGroup
	upDone := make(chan struct{})
	downDone := make(chan struct{})
	wg.Go(func() {
		defer close(upDone)
		s.pump(toHost, brw.Reader, "to_host", ex.kind)
		if !toHost.SawClose() && toHost.AtBoundary() {
			_, _ = st.Write(wsframe.CloseFrame(1011, "client went away", true))
		}
		_ = st.Close()
	})
	wg.Go(func() {
		defer close(downDone)
		s.pump(toClient, br, "to_client", ex.kind)
		if !toClient.SawClose() && toClient.AtBoundary() {
			code, reason := uint16(1011), "host went away"
			if revokedExchange(r.Context()) {
				code, reason = uint16(tunnel.CloseTokenExpired), "token revoked"
			}
			_, _ = conn.Write(wsframe.CloseFrame(code, reason, false))
		}
		if tc, ok := conn.(interface{ CloseWrite() error }); ok { // a *net.TCPConn, or one wrapped by connlimit
			_ = tc.CloseWrite()
		}
	})
	// When one direction ends, the other gets closeGrace to finish its close handshake, then both are cut.
	var other <-chan struct{}
	select {
	case <-upDone:
		other = downDone
	case <-downDone:
		other = upDone
	}
	timer := time.NewTimer(closeGrace)
	select {
	case <-other:
	case <-timer.C:
	}
	timer.Stop()
	_ = conn.Close()
	_ = st.Close()
	wg.Wait()
	return "ok", http.StatusSwitchingProtocols
}

// frameSink is where a pump writes: a WebSocket frame follower, or a plain writer for another upgraded protocol.
type frameSink interface {
	io.Writer
	SawClose() bool   // a close frame went through
	AtBoundary() bool // the bytes so far end at a frame boundary, so a close frame may follow
}

// rawSink passes bytes of a protocol without frames the relay knows: nothing to add when a side goes.
type rawSink struct{ io.Writer }

func (rawSink) SawClose() bool   { return true }
func (rawSink) AtBoundary() bool { return false }

// pump copies src into a frame follower, counting bytes.
func (s *Server) pump(dst frameSink, src io.Reader, direction, kind string) {
	bp := copyBuffers.Get().(*[]byte)
	defer copyBuffers.Put(bp)
	n, _ := io.CopyBuffer(writerOnly{dst}, src, *bp)
	s.metrics.bytes.WithLabelValues(direction).Add(float64(n))
	if kind == kindTCP {
		s.metrics.tcpBytes.WithLabelValues(direction).Add(float64(n))
	}
}

// idleReader reads r, which reads from c's stream, noting c's progress as the bytes move.
type idleReader struct {
	r io.Reader
	c *idleConn
}

func (ir idleReader) Read(p []byte) (int, error) {
	ir.c.progress()
	n, err := ir.r.Read(p)
	if n > 0 {
		ir.c.progress()
	}
	return n, err
}

// writerOnly hides ReadFrom so io.CopyBuffer uses the given buffer.
type writerOnly struct{ io.Writer }

// upgradeRequest builds the request sent to the host for a WebSocket upgrade, with the same header hygiene as
// ordinary exchanges but keeping Connection: Upgrade and Upgrade.
func (s *Server) upgradeRequest(r *http.Request, ex *exchange) *http.Request {
	out := r.Clone(r.Context())
	out.Header = r.Header.Clone()
	upgrade := out.Header.Get("Upgrade")
	removeHopHeaders(out.Header)
	out.Header.Set("Connection", "Upgrade")
	out.Header.Set("Upgrade", upgrade)
	out.URL.Scheme = "http"
	out.URL.Host = "host"
	setPath(out.URL, ex.path)
	auth.StripQueryToken(out.URL)
	stripReserved(out.Header) // every look-alike too (headerpolicy.go); keeps the Connection/Upgrade pair set above
	if ex.subject != "" {
		out.Header.Set(HeaderSubject, ex.subject)
	}
	s.setBrowserHeaders(out.Header, r, ex)
	s.setForwarding(out.Header, r, ex.hop)
	out.Body = nil
	out.ContentLength = 0
	out.Trailer = nil // no body, no trailers
	out.RequestURI = ""
	return out
}

// setForwarding writes X-Forwarded-For, -Host and -Proto on out for the request in: as the peer replica that
// forwarded in set and signed them when signed (the hop's verification checked them), else by this relay's own trust rules.
func (s *Server) setForwarding(out http.Header, in *http.Request, signed bool) {
	if !signed {
		setForwarded(out, in, s.cfg.TrustForwardedFor, s.clientProto(in))
		return
	}
	for _, k := range forwardedHeaders {
		if v := in.Header[k]; len(v) > 0 {
			out[k] = v
		}
	}
}

// setForwarded sets X-Forwarded-For, -Host and -Proto like httputil.ProxyRequest.SetXForwarded, with proto from
// clientProto. With trust, the client's own X-Forwarded-For (read from r, every line of it) is extended.
func setForwarded(h http.Header, r *http.Request, trust bool, proto string) {
	prior := r.Header.Values("X-Forwarded-For")
	h.Del("Forwarded")
	h.Del("X-Forwarded-For")
	h.Del("X-Forwarded-Host")
	h.Del("X-Forwarded-Proto")
	if ip, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
		if trust && len(prior) > 0 {
			ip = strings.Join(prior, ", ") + ", " + ip
		}
		h.Set("X-Forwarded-For", ip)
	}
	h.Set("X-Forwarded-Host", r.Host)
	h.Set("X-Forwarded-Proto", proto)
}

// hopHeaders are removed when a message crosses the relay (RFC 9110 §7.6.1).
var hopHeaders = []string{
	"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization", "Te", "Trailer",
	"Transfer-Encoding", "Upgrade",
}

// removeHopHeaders drops hop-by-hop headers, including those named in Connection.
func removeHopHeaders(h http.Header) {
	for _, v := range h.Values("Connection") {
		for _, f := range splitComma(v) {
			h.Del(f)
		}
	}
	for _, k := range hopHeaders {
		h.Del(k)
	}
}

func splitComma(v string) []string {
	var out []string
	for len(v) > 0 {
		var f string
		f, v, _ = strings.Cut(v, ",")
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

// writeSwitching writes the 101 answer to the hijacked client connection.
func writeSwitching(w *bufio.Writer, h http.Header) error {
	if _, err := fmt.Fprintf(w, "HTTP/1.1 101 Switching Protocols\r\n"); err != nil {
		return err
	}
	if err := h.Write(w); err != nil {
		return err
	}
	if _, err := w.WriteString("\r\n"); err != nil {
		return err
	}
	return w.Flush()
}
