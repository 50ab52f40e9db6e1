package relay_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/golang-jwt/jwt/v5"
	"github.com/hashicorp/yamux"

	"github.com/switchboard-relay/switchboard/agent"
	"github.com/switchboard-relay/switchboard/internal/auth"
	"github.com/switchboard-relay/switchboard/internal/relay"
	"github.com/switchboard-relay/switchboard/internal/relaytest"
	"github.com/switchboard-relay/switchboard/internal/tunnel"
)

// rawTunnel is a tunnel client built from the parts (coder/websocket + yamux.Server), so a test sees exactly what
// the relay sends: the epoch, the control messages and the close code.
type rawTunnel struct {
	ws    *websocket.Conn
	rec   *firstReadErr
	sess  *yamux.Session
	ctrl  net.Conn
	ctrlR *bufio.Reader
	epoch uint64
	wg    sync.WaitGroup // the HTTP server on the session
}

// dialRawTunnel upgrades a WebSocket tunnel for id. With control set it also opens the control stream and waits
// for "ready". The tunnel is closed in t.Cleanup.
func dialRawTunnel(t *testing.T, relayURL, id, token string, control bool) *rawTunnel {
	t.Helper()
	h := http.Header{}
	h.Set(tunnel.HeaderHostID, id)
	h.Set("Authorization", "Bearer "+token)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ws, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(relayURL, "http")+tunnel.Path, &websocket.DialOptions{
		HTTPHeader: h, Subprotocols: []string{tunnel.Subprotocol},
	})
	if err != nil {
		t.Fatalf("tunnel upgrade for %s: %v", id, err)
	}
	ws.SetReadLimit(-1)
	rt := &rawTunnel{ws: ws}
	rt.rec = &firstReadErr{Conn: websocket.NetConn(context.Background(), ws, websocket.MessageBinary)}
	rt.sess, err = yamux.Server(rt.rec, tunnel.Options{}.YamuxConfig())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = ws.CloseNow()
		_ = rt.sess.Close()
		rt.wg.Wait()
	})
	if control {
		rt.openControl(t)
		got := rt.readControl(t)
		if got.Type != tunnel.ControlReady || got.Epoch == 0 {
			t.Fatalf("first control message %+v, want ready with an epoch", got)
		}
		rt.epoch = got.Epoch
	}
	return rt
}

// openControl opens the control stream.
func (rt *rawTunnel) openControl(t *testing.T) {
	t.Helper()
	c, err := rt.sess.OpenStream()
	if err != nil {
		t.Fatalf("open control stream: %v", err)
	}
	rt.ctrl, rt.ctrlR = c, bufio.NewReader(c)
}

// readControl reads one control message; a zero Control means the stream ended.
func (rt *rawTunnel) readControl(t *testing.T) tunnel.Control {
	t.Helper()
	_ = rt.ctrl.SetReadDeadline(time.Now().Add(10 * time.Second))
	line, err := rt.ctrlR.ReadBytes('\n')
	if err != nil {
		return tunnel.Control{}
	}
	c, err := tunnel.ParseControl(bytes.TrimSpace(line))
	if err != nil {
		t.Fatalf("control message %q: %v", line, err)
	}
	return c
}

// serve answers the relay's streams with handler until the session ends.
func (rt *rawTunnel) serve(handler http.Handler) {
	rt.wg.Go(func() { _ = http.Serve(rt.sess, handler) })
}

// closeCode waits for the session to end and returns the WebSocket close code the relay sent.
func (rt *rawTunnel) closeCode(t *testing.T) websocket.StatusCode {
	t.Helper()
	select {
	case <-rt.sess.CloseChan():
	case <-time.After(10 * time.Second):
		t.Fatal("the relay did not close the tunnel")
	}
	// The close frame's code reaches whichever side of the connection meets it first, the reader or yamux's
	// writer; the code is whichever recorded error carries one. Give the reader a moment if neither did yet.
	deadline := time.Now().Add(2 * time.Second)
	for {
		if code := rt.rec.status(); code != -1 || time.Now().After(deadline) {
			return code
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// firstReadErr remembers the read and write errors of a connection (for a WebSocket, one carries the close code).
type firstReadErr struct {
	net.Conn
	mu  sync.Mutex
	all []error
}

func (c *firstReadErr) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.note(err)
	return n, err
}

func (c *firstReadErr) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.note(err)
	return n, err
}

func (c *firstReadErr) note(err error) {
	if err == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.all = append(c.all, err)
}

// status is the WebSocket close code carried by any error seen so far, or -1.
func (c *firstReadErr) status() websocket.StatusCode {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, err := range c.all {
		if code := websocket.CloseStatus(err); code != -1 {
			return code
		}
	}
	return -1
}

func text(s string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, s) })
}

func online(t *testing.T, r *relaytest.Relay, id, tok string) bool {
	t.Helper()
	code, body := getText(t, r.URL+"/v1/hosts/"+id, tok)
	return code == 200 && strings.Contains(body, `"online":true`)
}

// TestReplacedTunnelGetsCloseCode4409: the older tunnel's agent sees the documented "replaced" code, and the old
// tunnel's end removes nothing of the newer one.
func TestReplacedTunnelGetsCloseCode4409(t *testing.T) {
	r := relaytest.StartRelay(t, nil)
	tok := relaytest.ClientToken(t, "c", "h")
	first := dialRawTunnel(t, r.URL, "h", relaytest.HostToken(t, "h"), true)
	first.serve(text("first"))
	if code, body := getText(t, r.URL+"/hosts/h/", tok); code != 200 || body != "first" {
		t.Fatalf("first tunnel: %d %q", code, body)
	}
	second := dialRawTunnel(t, r.URL, "h", relaytest.HostToken(t, "h"), true)
	second.serve(text("second"))
	if second.epoch <= first.epoch {
		t.Fatalf("epochs %d then %d: the newer registration must have the higher epoch", first.epoch, second.epoch)
	}
	if code := first.closeCode(t); code != tunnel.CloseReplaced {
		t.Fatalf("the replaced tunnel closed with %d, want %d", code, tunnel.CloseReplaced)
	}
	for range 10 {
		if code, body := getText(t, r.URL+"/hosts/h/", tok); code != 200 || body != "second" {
			t.Fatalf("after the old tunnel ended: %d %q", code, body)
		}
	}
	if !online(t, r, "h", tok) {
		t.Fatal("the host went offline when its old tunnel ended")
	}
	if n := registrationCount(t, r, "replaced_older"); n != 1 {
		t.Fatalf("replaced registrations %v, want 1", n)
	}
	_ = second.ws.Close(websocket.StatusNormalClosure, "bye")
	relaytest.Eventually(t, 5*time.Second, "offline after the current tunnel closed", func() bool { return !online(t, r, "h", tok) })
}

// TestEpochIsClaimedWhenSetupCompletes: a tunnel gets its epoch once its control stream is open, not at the
// upgrade: of two tunnels upgraded in turn, the one that finished its setup last is the newer one and replaces
// the other, and the replaced one's end takes nothing of it off the relay or the directory.
func TestEpochIsClaimedWhenSetupCompletes(t *testing.T) {
	r := relaytest.StartRelay(t, nil)
	tok := relaytest.ClientToken(t, "c", "h")
	late := dialRawTunnel(t, r.URL, "h", relaytest.HostToken(t, "h"), false)
	late.serve(text("late"))
	early := dialRawTunnel(t, r.URL, "h", relaytest.HostToken(t, "h"), true)
	early.serve(text("early"))
	if code, body := getText(t, r.URL+"/hosts/h/", tok); code != 200 || body != "early" {
		t.Fatalf("before the late setup completed: %d %q", code, body)
	}
	late.openControl(t)
	c := late.readControl(t)
	if c.Type != tunnel.ControlReady || c.Epoch <= early.epoch {
		t.Fatalf("late setup got %+v; want ready with an epoch above %d", c, early.epoch)
	}
	if code := early.closeCode(t); code != tunnel.CloseReplaced {
		t.Fatalf("the earlier tunnel closed with %d, want %d", code, tunnel.CloseReplaced)
	}
	for range 10 {
		if code, body := getText(t, r.URL+"/hosts/h/", tok); code != 200 || body != "late" {
			t.Fatalf("after the replaced tunnel ended: %d %q", code, body)
		}
	}
	if !online(t, r, "h", tok) {
		t.Fatal("the replaced tunnel's end took the host offline")
	}
}

// syncBuffer is a bytes.Buffer safe for a logger and a test to share.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestHijackAttemptIsLoggedWithoutTheToken: a host token for A registering B is refused, and the relay says so in
// one warning naming both ids, without the token.
func TestHijackAttemptIsLoggedWithoutTheToken(t *testing.T) {
	var logs syncBuffer
	r := relaytest.StartRelay(t, func(c *relay.Config) {
		c.Logger = slog.New(slog.NewJSONHandler(io.MultiWriter(t.Output(), &logs), &slog.HandlerOptions{Level: slog.LevelDebug}))
	})
	relaytest.StartHost(t, r.URL, "victim", echoPath, nil)
	tokA := relaytest.HostToken(t, "attacker")
	if status, code := tunnelAttempt(t, r.URL, "victim", tokA); status != 403 || code != "forbidden" {
		t.Fatalf("hijack attempt: %d %q, want 403 forbidden", status, code)
	}
	// The victim's tunnel is untouched.
	if code, body := getText(t, r.URL+"/hosts/victim/x", relaytest.ClientToken(t, "c", "victim")); code != 200 || body != "echoPath /x" {
		t.Fatalf("the victim after the attempt: %d %q", code, body)
	}
	var warned bool
	for line := range strings.SplitSeq(logs.String(), "\n") {
		var rec map[string]any
		if json.Unmarshal([]byte(line), &rec) != nil {
			continue
		}
		if rec["level"] == "WARN" && rec["host_id"] == "victim" && rec["token_subject"] == "host:attacker" {
			warned = true
		}
	}
	if !warned {
		t.Fatalf("no warning naming the host id and the token's subject in:\n%s", logs.String())
	}
	if strings.Contains(logs.String(), tokA) {
		t.Fatal("the token appears in the logs")
	}
}

// TestJWKSRS256EndToEnd: RS256 tokens from an app's JWKS, with custom claims for the hosts and the host id, work
// beside the relay's own HS256 tokens; forged and expired ones get 401.
func TestJWKSRS256EndToEnd(t *testing.T) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	other, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	var fetches atomic.Int32
	jwks := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		fetches.Add(1)
		_ = json.NewEncoder(w).Encode(map[string]any{"keys": []map[string]string{{
			"kty": "RSA", "kid": "rsa1", "alg": "RS256", "use": "sig",
			"n": base64.RawURLEncoding.EncodeToString(key.N.Bytes()),
			"e": base64.RawURLEncoding.EncodeToString(big.NewInt(int64(key.E)).Bytes()),
		}}})
	}))
	defer jwks.Close()
	j, err := auth.NewJWKS(auth.JWKSConfig{URL: jwks.URL, HostsClaim: "allowed_hosts", HostIDClaim: "device_id"})
	if err != nil {
		t.Fatal(err)
	}
	r := relaytest.StartRelay(t, func(c *relay.Config) {
		c.Verifier = auth.Chain(auth.NewHS256([]byte(relaytest.Secret)), j)
	})
	sign := func(k *rsa.PrivateKey, ttl time.Duration, claims jwt.MapClaims) string {
		claims["exp"] = time.Now().Add(ttl).Unix()
		tok := jwt.NewWithClaims(jwt.SigningMethodRS256, claims)
		tok.Header["kid"] = "rsa1"
		s, err := tok.SignedString(k)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	relaytest.StartHost(t, r.URL, "dev-1", echoPath, func(c *agent.Config) {
		c.Token = sign(key, time.Hour, jwt.MapClaims{"sub": "device", "device_id": "dev-1"})
	})
	relaytest.StartHost(t, r.URL, "hs-host", echoPath, nil) // the relay's own tokens still work

	user := sign(key, time.Hour, jwt.MapClaims{"sub": "u1", "allowed_hosts": []string{"dev-*"}})
	tests := []struct {
		name, path, token string
		want              int
	}{
		{"RS256 client, prefix match", "/hosts/dev-1/a", user, 200},
		{"RS256 client, host not listed", "/hosts/hs-host/a", user, 403},
		{"HS256 client", "/hosts/hs-host/a", relaytest.ClientToken(t, "c", "hs-host"), 200},
		{"signed by another key", "/hosts/dev-1/a", sign(other, time.Hour, jwt.MapClaims{"sub": "u1", "allowed_hosts": "dev-*"}), 401},
		{"expired", "/hosts/dev-1/a", sign(key, -time.Hour, jwt.MapClaims{"sub": "u1", "allowed_hosts": "dev-*"}), 401},
		{"RS256 device token as a client", "/hosts/dev-1/a", sign(key, time.Hour, jwt.MapClaims{"sub": "d", "device_id": "dev-1"}), 403},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if code, _ := getText(t, r.URL+tt.path, tt.token); code != tt.want {
				t.Fatalf("got %d, want %d", code, tt.want)
			}
		})
	}
	if status, _ := tunnelAttempt(t, r.URL, "dev-2", sign(key, time.Hour, jwt.MapClaims{"sub": "d", "device_id": "dev-1"})); status != 403 {
		t.Fatalf("an RS256 device token registering another id: %d, want 403", status)
	}
	if status, _ := tunnelAttempt(t, r.URL, "dev-1", sign(other, time.Hour, jwt.MapClaims{"sub": "d", "device_id": "dev-1"})); status != 401 {
		t.Fatalf("a forged RS256 device token: %d, want 401", status)
	}
	if n := fetches.Load(); n > 3 {
		t.Fatalf("the JWKS was fetched %d times: keys are not cached", n)
	}
}

// TestBlackholedWebSocketTunnel: over the WebSocket transport too, a host whose packets stop (no FIN, no RST) is
// removed from the relay within three of the relay's ping intervals; the agent notices on its own clock and comes
// back through its second relay address.
func TestBlackholedWebSocketTunnel(t *testing.T) {
	const relayPing, agentPing = 100 * time.Millisecond, 500 * time.Millisecond
	r := relaytest.StartRelay(t, func(c *relay.Config) { c.PingInterval = relayPing })
	u, _ := url.Parse(r.URL)
	var mu sync.Mutex
	var proxied []*silencer
	var refuse atomic.Bool
	front := startSilencingProxy(t, u.Host, &refuse, func(s *silencer) { mu.Lock(); proxied = append(proxied, s); mu.Unlock() })
	ln := relaytest.StartHost(t, "http://"+front, "h", echoPath, func(c *agent.Config) {
		c.Relays = []string{"http://" + front, r.URL}
		c.Transport = agent.TransportWebSocket
		c.PingInterval = agentPing
	})
	tok := relaytest.ClientToken(t, "c", "h")
	if code, _ := getText(t, r.URL+"/hosts/h/", tok); code != 200 {
		t.Fatalf("before: %d", code)
	}
	refuse.Store(true) // the path through the proxy stays broken: the agent must take the other one
	mu.Lock()
	for _, s := range proxied {
		s.silence()
	}
	mu.Unlock()
	silenced := time.Now()
	relaytest.Eventually(t, 5*time.Second, "the relay to drop the silent tunnel", func() bool { return !online(t, r, "h", tok) })
	took := time.Since(silenced)
	// No wall-clock bound here (the machine may be busy): the ping schedule is TestPingScheduleSpreads's, in a
	// synctest bubble, and the pong deadline of two intervals is yamux's ConnectionWriteTimeout.
	t.Logf("silent WebSocket tunnel removed after %v (relay ping interval %v)", took, relayPing)
	relaytest.Eventually(t, 10*time.Second, "the agent to come back by the direct path", func() bool {
		code, _ := getText(t, r.URL+"/hosts/h/", tok)
		return code == 200
	})
	if n := ln.Tunnels(); n != 1 {
		t.Fatalf("agent tunnels %d, want 1", n)
	}
}

// TestDrainOnOneRelay: while the relay drains, /readyz is 503 and new tunnels are refused with 503; the agent
// keeps its old tunnel (it cannot move anywhere) and the exchange in flight finishes; then Drain closes the
// tunnel.
func TestDrainOnOneRelay(t *testing.T) {
	r := relaytest.StartRelay(t, func(c *relay.Config) { c.DrainJitter = time.Millisecond })
	entered := make(chan struct{})
	release := make(chan struct{})
	ln := relaytest.StartHost(t, r.URL, "h", http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if req.URL.Path == "/slow" {
			close(entered)
			<-release
		}
		_, _ = io.WriteString(w, "done "+req.URL.Path)
	}), nil)
	tok := relaytest.ClientToken(t, "c", "h")
	if code, _ := getText(t, r.URL+"/readyz", ""); code != 200 {
		t.Fatalf("readyz before the drain: %d", code)
	}
	type result struct {
		code int
		body string
	}
	slow := make(chan result, 1)
	go func() {
		c, b, err := fetchText(r.URL+"/hosts/h/slow", tok)
		if err != nil {
			b = err.Error()
		}
		slow <- result{c, b}
	}()
	<-entered
	drained := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		drained <- r.Drain(ctx)
	}()
	relaytest.Eventually(t, 5*time.Second, "readyz 503", func() bool { code, _ := getText(t, r.URL+"/readyz", ""); return code == 503 })
	if status, code := tunnelAttempt(t, r.URL, "other", relaytest.HostToken(t, "other")); status != 503 || code != "draining" {
		t.Fatalf("a new tunnel while draining: %d %q, want 503 draining", status, code)
	}
	relaytest.Eventually(t, 5*time.Second, "the agent's refused move", func() bool { return registrationCount(t, r, "draining") >= 2 })
	if n := ln.Tunnels(); n != 1 {
		t.Fatalf("agent tunnels while the relay drains: %d, want the old one", n)
	}
	select {
	case err := <-drained:
		t.Fatalf("Drain returned %v with an exchange in flight", err)
	default:
	}
	close(release)
	if res := <-slow; res.code != 200 || res.body != "done /slow" {
		t.Fatalf("the exchange in flight: %d %q", res.code, res.body)
	}
	select {
	case err := <-drained:
		if err != nil {
			t.Fatalf("drain: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Drain did not return after the last exchange")
	}
	relaytest.Eventually(t, 5*time.Second, "the drained tunnel to close", func() bool { return ln.Tunnels() == 0 })
	if err := r.Drain(context.Background()); err == nil || errors.Is(err, context.Canceled) {
		t.Fatalf("a second Drain: %v, want an error", err)
	}
}
