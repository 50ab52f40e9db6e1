package relay_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/switchboard-relay/switchboard/internal/directory"
	"github.com/switchboard-relay/switchboard/internal/relay"
	"github.com/switchboard-relay/switchboard/internal/relaytest"
)

// recordingHost is a host that records every request it receives, body and trailers read to the end, and answers
// 200 "ok" (426 to a WebSocket upgrade, which the relay passes back as a refusal).
type recordingHost struct {
	mu   sync.Mutex
	seen []seenRequest
}

type seenRequest struct {
	path    string
	header  http.Header
	trailer http.Header
	body    string
}

func (h *recordingHost) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	h.mu.Lock()
	h.seen = append(h.seen, seenRequest{path: r.URL.Path, header: r.Header.Clone(), trailer: r.Trailer.Clone(), body: string(body)})
	h.mu.Unlock()
	if strings.EqualFold(r.Header.Get("Upgrade"), "websocket") {
		w.WriteHeader(http.StatusUpgradeRequired)
		return
	}
	_, _ = io.WriteString(w, "ok")
}

// take returns the requests recorded since the last take.
func (h *recordingHost) take() []seenRequest {
	h.mu.Lock()
	defer h.mu.Unlock()
	s := h.seen
	h.seen = nil
	return s
}

// fold maps a header name the way CGI/WSGI gateways read it ('_' as '-', any case). It is written here again, not
// taken from the relay, so that the test checks the relay against an independent reading.
func fold(k string) string { return strings.ToLower(strings.ReplaceAll(k, "_", "-")) }

// forbiddenAtHost reports whether a header (or trailer) of folded name f may reach a host only as the relay set it.
func forbiddenAtHost(f string) bool {
	for _, p := range []string{"x-switchboard-", "x-forwarded-", "switchboard-hop"} {
		if strings.HasPrefix(f, p) {
			return true
		}
	}
	switch f {
	case "authorization", "proxy-authorization", "proxy-authenticate", "forwarded", "x-real-ip", "client-ip",
		"true-client-ip", "connection", "proxy-connection", "keep-alive", "te", "trailer", "transfer-encoding",
		"upgrade":
		return true
	}
	return false
}

// assertClean fails unless req carries the relay's own identity and forwarding headers, exactly (subject, the
// client's IP as seen by the relay it called, the Host it used there, plain http), and nothing else the relay owns
// under any spelling, in its headers or its trailers.
func assertClean(t *testing.T, req seenRequest, subject, clientHost string) {
	t.Helper()
	want := map[string][]string{
		relay.HeaderSubject: {subject},
		"X-Forwarded-For":   {"127.0.0.1"},
		"X-Forwarded-Host":  {clientHost},
		"X-Forwarded-Proto": {"http"},
		// Path mode: the relay's own prefix, whatever the client sent under that name.
		"X-Forwarded-Prefix": {"/hosts/h1"},
	}
	for k, w := range want {
		if got := req.header[k]; !slices.Equal(got, w) {
			t.Errorf("%s: host saw %s %q, want %q", req.path, k, got, w)
		}
	}
	for k, vs := range req.header {
		if _, ok := want[k]; ok || !forbiddenAtHost(fold(k)) {
			continue
		}
		// The relay's own hop-by-hop headers: an upgrade's pair.
		if (k == "Connection" && slices.Equal(vs, []string{"Upgrade"})) || (k == "Upgrade" && slices.Equal(vs, []string{"websocket"})) {
			continue
		}
		t.Errorf("%s: host saw reserved header %s: %q", req.path, k, vs)
	}
	for k, vs := range req.trailer {
		if forbiddenAtHost(fold(k)) {
			t.Errorf("%s: host saw reserved trailer %s: %q", req.path, k, vs)
		}
	}
}

// rawExchange writes raw to the relay at addr, then a well-formed probe for probePath with Connection: close, and
// returns the status lines of every answer read until the relay closed the connection.
func rawExchange(t *testing.T, addr, raw, probePath, token string) []string {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	probe := fmt.Sprintf("GET %s HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\nConnection: close\r\n\r\n", probePath, addr, token)
	if _, err := io.WriteString(c, raw+probe); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(30 * time.Second)) // a safety net only: the relay closes first
	br := bufio.NewReader(c)
	var statuses []string
	for {
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			return statuses
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		statuses = append(statuses, resp.Status)
	}
}

// smuggledPath is the path of the request hidden in the attacks' bodies; it must never reach the host.
const smuggledPath = "/hosts/h1/smuggled"

// hostileRequests are raw client requests that try to get a reserved header to the host, by look-alike names,
// trailers, forged forwarding headers, request smuggling (CL+TE, TE obfuscations, duplicate Content-Length) and
// obs-fold, for the relay at addr (host:port) and a client token of "alice".
func hostileRequests(addr, tok string) []struct{ name, raw string } {
	inner := "GET " + smuggledPath + " HTTP/1.1\r\nHost: " + addr + "\r\nX-Switchboard-Subject: admin\r\nX-Forwarded-For: 6.6.6.6\r\n\r\n"
	chunkedInner := "0\r\n\r\n" + inner
	head := func(path string) string {
		return "POST " + path + " HTTP/1.1\r\nHost: {H}\r\nAuthorization: Bearer {T}\r\n"
	}
	reqs := []struct{ name, raw string }{
		{"look-alikes and forged forwarding", "GET /hosts/h1/look HTTP/1.1\r\nHost: {H}\r\nAuthorization: Bearer {T}\r\n" +
			"X_Switchboard_Subject: admin\r\nx_switchboard_subject: admin2\r\nX-SWITCHBOARD-SUBJECT: admin3\r\n" +
			"X-Switchboard-Role: admin\r\nX_SWITCHBOARD_ROLE: admin\r\n" +
			"X-Forwarded-For: 6.6.6.6\r\nX_Forwarded_For: 6.6.6.6\r\nX-Forwarded-Host: evil.example\r\n" +
			"x_forwarded_host: evil.example\r\nX-Forwarded-Proto: https\r\nX_Forwarded_Proto: https\r\nX-Forwarded-Port: 443\r\n" +
			"Forwarded: for=6.6.6.6;proto=https\r\nX-Real-IP: 6.6.6.6\r\nX_Real_Ip: 6.6.6.6\r\nClient-IP: 6.6.6.6\r\n" +
			"True-Client-IP: 6.6.6.6\r\nSwitchboard-Hop: B,1,2,3\r\nSwitchboard_Hop: B,1,2,3\r\n" +
			"Switchboard-Hop-Subject: root\r\nSWITCHBOARD_HOP_SUBJECT: root\r\nProxy-Authorization: Basic eA==\r\n" +
			"Proxy_Authorization: Basic eA==\r\nTransfer_Encoding: chunked\r\nKeep_Alive: 1\r\nProxy_Connection: x\r\n" +
			"Authorization_: x\r\n\r\n"},
		{"websocket upgrade with look-alikes", "GET /hosts/h1/ws HTTP/1.1\r\nHost: {H}\r\nAuthorization: Bearer {T}\r\n" +
			"Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n" +
			"X_Switchboard_Subject: admin\r\nX-Switchboard-Subject: admin\r\nX_Forwarded_For: 6.6.6.6\r\n" +
			"X-Forwarded-For: 6.6.6.6\r\nForwarded: for=6.6.6.6\r\nX_Real_IP: 6.6.6.6\r\nSwitchboard_Hop_Subject: root\r\n\r\n"},
		{"reserved trailers", head("/hosts/h1/trailers") + "Transfer-Encoding: chunked\r\n" +
			"Trailer: Authorization, X-Switchboard-Subject, X_Switchboard_Subject, X-Forwarded-For, Switchboard-Hop, Forwarded, X-Ok\r\n\r\n" +
			"5\r\nhello\r\n0\r\nAuthorization: Bearer stolen\r\nX-Switchboard-Subject: admin\r\nX_Switchboard_Subject: admin\r\n" +
			"X-Forwarded-For: 6.6.6.6\r\nSwitchboard-Hop: x\r\nForwarded: for=x\r\nX-Ok: yes\r\n" +
			"X-Real-Ip: 6.6.6.6\r\nX_Forwarded_Proto: https\r\nTe: trailers\r\nKeep-Alive: 1\r\n\r\n"},
		{"reserved trailers on a GET", "GET /hosts/h1/gettrailers HTTP/1.1\r\nHost: {H}\r\nAuthorization: Bearer {T}\r\n" +
			"Transfer-Encoding: chunked\r\nTrailer: X-Switchboard-Subject, X-Ok\r\n\r\n" +
			"5\r\nhello\r\n0\r\nX-Switchboard-Subject: admin\r\nX_Forwarded_For: 6.6.6.6\r\nAuthorization: x\r\nX-Ok: yes\r\n\r\n"},
		{"CL.TE", head("/hosts/h1/clte") + fmt.Sprintf("Content-Length: %d\r\nTransfer-Encoding: chunked\r\n\r\n", len(chunkedInner)) + chunkedInner},
		{"TE.CL", head("/hosts/h1/tecl") + "Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n" +
			fmt.Sprintf("%x\r\n%s\r\n0\r\n\r\n", len(inner), inner)},
		{"TE chunked, identity", head("/hosts/h1/te1") + fmt.Sprintf("Content-Length: %d\r\nTransfer-Encoding: chunked, identity\r\n\r\n", len(chunkedInner)) + chunkedInner},
		{"TE xchunked", head("/hosts/h1/te2") + fmt.Sprintf("Content-Length: %d\r\nTransfer-Encoding: xchunked\r\n\r\n", len(chunkedInner)) + chunkedInner},
		{"TE space before colon", head("/hosts/h1/te3") + fmt.Sprintf("Content-Length: %d\r\nTransfer-Encoding : chunked\r\n\r\n", len(chunkedInner)) + chunkedInner},
		{"TE twice", head("/hosts/h1/te4") + fmt.Sprintf("Content-Length: %d\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n", len(chunkedInner)) + chunkedInner},
		{"TE vertical tab", head("/hosts/h1/te5") + fmt.Sprintf("Content-Length: %d\r\nTransfer-Encoding:\x0bchunked\r\n\r\n", len(chunkedInner)) + chunkedInner},
		{"TE look-alike", head("/hosts/h1/te6") + fmt.Sprintf("Content-Length: %d\r\nTransfer_Encoding: chunked\r\n\r\n", len(chunkedInner)) + chunkedInner},
		{"TE obs-folded", head("/hosts/h1/te7") + fmt.Sprintf("Content-Length: %d\r\nTransfer-Encoding:\r\n chunked\r\n\r\n", len(chunkedInner)) + chunkedInner},
		{"duplicate Content-Length", head("/hosts/h1/cl1") + fmt.Sprintf("Content-Length: 5\r\nContent-Length: %d\r\n\r\nhello", len(inner)+5) + inner},
		{"Content-Length list", head("/hosts/h1/cl2") + fmt.Sprintf("Content-Length: 5, %d\r\n\r\nhello", len(inner)+5) + inner},
		{"obs-fold", "GET /hosts/h1/fold HTTP/1.1\r\nHost: {H}\r\nAuthorization: Bearer {T}\r\n" +
			"X-Note: a\r\n X-Switchboard-Subject: admin\r\nX_Switchboard_Subject:\r\n admin\r\nX-Forwarded-For:\r\n\t6.6.6.6\r\n\r\n"},
	}
	for i := range reqs {
		reqs[i].raw = strings.NewReplacer("{H}", addr, "{T}", tok).Replace(reqs[i].raw)
	}
	return reqs
}

// TestHostileClientHeaders: over raw TCP, a client tries every way we know to make a host see a header the relay
// owns, or a request the relay did not authenticate, on a replica that holds the host's tunnel and through one that
// forwards to it. The host never sees one; the relay keeps serving the client's other host meanwhile.
func TestHostileClientHeaders(t *testing.T) {
	dir := directory.NewMemory()
	t.Cleanup(func() { _ = dir.Close() })
	a := relaytest.StartRelayOn(t, dir, nil)
	b := relaytest.StartRelayOn(t, dir, nil)
	host := &recordingHost{}
	relaytest.StartHost(t, a.URL, "h1", host, nil)
	relaytest.StartHost(t, a.URL, "h2", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "alive")
	}), nil)
	tok := relaytest.ClientToken(t, "alice", "h1", "h2")

	for _, via := range []struct {
		name string
		r    *relaytest.Replica
	}{{"local", a}, {"forwarded", b}} {
		addr := strings.TrimPrefix(via.r.URL, "http://")
		for _, atk := range hostileRequests(addr, tok) {
			t.Run(via.name+"/"+atk.name, func(t *testing.T) {
				statuses := rawExchange(t, addr, atk.raw, "/hosts/h2/probe", tok)
				t.Logf("answers: %q", statuses)
				seen := host.take()
				for _, req := range seen {
					if req.path == "/smuggled" {
						t.Errorf("a smuggled request reached the host: %v", req.header)
						continue
					}
					assertClean(t, req, "alice", addr)
				}
				if len(seen) > 0 && strings.Contains(atk.name, "trailers") {
					if got := seen[0].trailer.Get("X-Ok"); got != "yes" || seen[0].body != "hello" {
						t.Errorf("trailers: host saw body %q, X-Ok %q; want hello, yes (ordinary trailers pass)", seen[0].body, got)
					}
				}
				// The relay keeps serving the client's other host.
				if code, body := getText(t, via.r.URL+"/hosts/h2/after", tok); code != 200 || body != "alive" {
					t.Fatalf("other host after the attack: %d %q", code, body)
				}
			})
		}
	}
	// The look-alike requests must have reached the host at all, or the test proves nothing.
	for _, via := range []*relaytest.Replica{a, b} {
		addr := strings.TrimPrefix(via.URL, "http://")
		if st := rawExchange(t, addr, hostileRequests(addr, tok)[0].raw, "/hosts/h2/probe", tok); len(st) != 2 || st[0] != "200 OK" {
			t.Fatalf("look-alike request via %s answered %q, want 200 then the probe's answer", via.ID, st)
		}
		if seen := host.take(); len(seen) != 1 || seen[0].path != "/look" {
			t.Fatalf("look-alike request via %s: host saw %d requests", via.ID, len(seen))
		}
	}
}

// TestLookAlikeSubjectCGIUpstream: with `switchboard host` in front of a CGI-style upstream (which reads headers as
// HTTP_* variables, '-' and '_' alike), a client's X_Switchboard_Subject cannot pose as the verified subject.
func TestLookAlikeSubjectCGIUpstream(t *testing.T) {
	r := relaytest.StartRelay(t, nil)
	// A gateway that, like CGI, exposes headers as HTTP_NAME with '-' mapped to '_': the last one written wins.
	up := relaytest.StartUpstreamHost(t, r.URL, "h1", http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		env := map[string][]string{}
		for k, vs := range req.Header {
			key := "HTTP_" + strings.ToUpper(strings.ReplaceAll(k, "-", "_"))
			env[key] = append(env[key], vs...)
		}
		_, _ = fmt.Fprintf(w, "%q", env["HTTP_X_SWITCHBOARD_SUBJECT"])
	}), nil)
	_ = up
	u, _ := url.Parse(r.URL)
	raw := "GET /hosts/h1/ HTTP/1.1\r\nHost: {H}\r\nAuthorization: Bearer {T}\r\nX_Switchboard_Subject: admin\r\n" +
		"X_SWITCHBOARD_SUBJECT: root\r\nConnection: close\r\n\r\n"
	raw = strings.NewReplacer("{H}", u.Host, "{T}", relaytest.ClientToken(t, "alice", "h1")).Replace(raw)
	c, err := net.Dial("tcp", u.Host)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := io.WriteString(c, raw); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(body) != `["alice"]` {
		t.Fatalf("CGI upstream read HTTP_X_SWITCHBOARD_SUBJECT as %s (status %d), want only the verified subject", body, resp.StatusCode)
	}
}

// TestHostAnswerCannotSteerFrontProxy: a host's answer cannot carry headers that a proxy in front of the relay
// acts on (fly-replay, X-Accel-Redirect, X-Sendfile, and their look-alikes), on a plain answer, a refused upgrade and
// a 101, locally and through a forwarding replica (lean forward and ReverseProxy alike); its other headers pass.
func TestHostAnswerCannotSteerFrontProxy(t *testing.T) {
	dir := directory.NewMemory()
	t.Cleanup(func() { _ = dir.Close() })
	a := relaytest.StartRelayOn(t, dir, nil)
	b := relaytest.StartRelayOn(t, dir, nil)
	steer := map[string]string{
		"Fly-Replay": "app=elsewhere", "Fly_Replay": "instance=x", "X-Accel-Redirect": "/internal/secrets",
		"X_Accel_Redirect": "/internal/secrets", "X-Accel-Buffering": "no", "X-Sendfile": "/etc/passwd",
	}
	relaytest.StartHost(t, a.URL, "h1", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/switch" { // a 101 written by hand, with the steering headers
			c, brw, err := http.NewResponseController(w).Hijack()
			if err != nil {
				return
			}
			defer c.Close()
			_, _ = brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n")
			for k, v := range steer {
				_, _ = brw.WriteString(k + ": " + v + "\r\n")
			}
			_, _ = brw.WriteString("X-Ok: 1\r\n\r\n")
			_ = brw.Flush()
			_, _ = io.Copy(io.Discard, brw) // until the relay closes
			return
		}
		for k, v := range steer {
			w.Header()[k] = []string{v}
		}
		w.Header().Set("X-Ok", "1")
		if r.Header.Get("Upgrade") != "" {
			w.WriteHeader(http.StatusForbidden) // a refused upgrade
			return
		}
		_, _ = io.WriteString(w, "ok")
	}), nil)
	tok := relaytest.ClientToken(t, "alice", "h1")
	for _, via := range []*relaytest.Replica{a, b} {
		addr := strings.TrimPrefix(via.URL, "http://")
		for _, tc := range []struct {
			name, raw string
			status    int
		}{
			{"GET", "GET /hosts/h1/get HTTP/1.1\r\nHost: " + addr + "\r\nAuthorization: Bearer " + tok + "\r\n\r\n", 200},
			{"POST", "POST /hosts/h1/post HTTP/1.1\r\nHost: " + addr + "\r\nAuthorization: Bearer " + tok + "\r\nContent-Length: 2\r\n\r\nhi", 200},
			{"refused upgrade", "GET /hosts/h1/ws HTTP/1.1\r\nHost: " + addr + "\r\nAuthorization: Bearer " + tok +
				"\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n", 403},
			{"101", "GET /hosts/h1/switch HTTP/1.1\r\nHost: " + addr + "\r\nAuthorization: Bearer " + tok +
				"\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n", 101},
		} {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := io.WriteString(c, tc.raw); err != nil {
				t.Fatal(err)
			}
			_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			_ = c.Close()
			if err != nil {
				t.Fatalf("%s via %s: %v", tc.name, via.ID, err)
			}
			if resp.StatusCode != tc.status || resp.Header.Get("X-Ok") != "1" {
				t.Errorf("%s via %s: %d X-Ok %q, want %d and the host's other headers", tc.name, via.ID, resp.StatusCode,
					resp.Header.Get("X-Ok"), tc.status)
			}
			for k := range resp.Header {
				if f := fold(k); f == "fly-replay" || strings.HasPrefix(f, "x-accel-") || f == "x-sendfile" {
					t.Errorf("%s via %s: client saw %s: %q", tc.name, via.ID, k, resp.Header[k])
				}
			}
		}
	}
	if code, body := getText(t, b.URL+"/hosts/h1/get", tok); code != 200 || body != "ok" {
		t.Fatalf("after: %d %q", code, body)
	}
}
