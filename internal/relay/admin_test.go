package relay_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/switchboard-relay/switchboard/agent"
	"github.com/switchboard-relay/switchboard/internal/auth"
	"github.com/switchboard-relay/switchboard/internal/directory"
	"github.com/switchboard-relay/switchboard/internal/redistest"
	"github.com/switchboard-relay/switchboard/internal/relay"
	"github.com/switchboard-relay/switchboard/internal/relaytest"
	"github.com/switchboard-relay/switchboard/internal/tunnel"
)

// refusedCode opens the control stream of a tunnel the relay is expected to refuse, checks that no "ready" comes,
// and returns the close code. The relay closes as soon as it has the control stream, so opening it may itself fail
// with the session's end: that is the refusal too.
func (rt *rawTunnel) refusedCode(t *testing.T) websocket.StatusCode {
	t.Helper()
	if c, err := rt.sess.OpenStream(); err == nil {
		rt.ctrl, rt.ctrlR = c, bufio.NewReader(c)
		if m := rt.readControl(t); m.Type != "" {
			t.Fatalf("refused tunnel got control message %+v", m)
		}
	}
	return rt.closeCode(t)
}

// adminCall sends an admin request with token and returns the status and body.
func adminCall(t *testing.T, method, url, token, body string) (int, []byte) {
	t.Helper()
	resp := relaytest.DoBody(t, method, url, token, body)
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

// adminJSON sends an admin request that must succeed and decodes its answer.
func adminJSON(t *testing.T, method, url, token, body string, out any) {
	t.Helper()
	code, b := adminCall(t, method, url, token, body)
	if code != http.StatusOK {
		t.Fatalf("%s %s: %d %s", method, url, code, b)
	}
	if err := json.Unmarshal(b, out); err != nil {
		t.Fatalf("%s %s: %v in %s", method, url, err, b)
	}
}

// adminErrCode returns the code of a JSON error body.
func adminErrCode(b []byte) string {
	var e struct {
		Error struct{ Code string } `json:"error"`
	}
	_ = json.Unmarshal(b, &e)
	return e.Error.Code
}

// waitUntil polls cond until it holds; the test's own deadline is the only bound.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for !cond() {
		if t.Context().Err() != nil {
			t.Fatalf("never: %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

type tunnelPage struct {
	Tunnels     []relay.TunnelView  `json:"tunnels"`
	NextCursor  string              `json:"next_cursor"`
	Unreachable []relay.ReplicaView `json:"unreachable"`
}

// TestAdminEndpointsRefuseOtherTokens: every admin endpoint answers 401 without a valid token, 403 admin_required
// with a client or host token (and with --auth none), and an admin token in the query string is not taken; an admin
// token reaches no host and registers no tunnel.
func TestAdminEndpointsRefuseOtherTokens(t *testing.T) {
	r := relaytest.StartRelay(t, nil)
	relaytest.StartHost(t, r.URL, "h", text("hi"), nil)
	open := relaytest.StartRelay(t, func(c *relay.Config) { c.Verifier = auth.AllowAll() })
	admin := relaytest.AdminToken(t, "ops")
	endpoints := []struct{ method, path, body string }{
		{"GET", "/v1/admin/replicas", ""},
		{"GET", "/v1/admin/tunnels", ""},
		{"POST", "/v1/admin/hosts/h/kick", `{"ban":"1h"}`},
		{"POST", "/v1/admin/replicas/self/drain", ""},
		{"POST", "/v1/admin/revoke", `{"sub":"x","for":"1h"}`},
		{"GET", "/v1/admin/nothing", ""},
	}
	for _, ep := range endpoints {
		for _, c := range []struct {
			name, base, token string
			status            int
			code              string
		}{
			{"none", r.URL, "", 401, "unauthorized"},
			{"junk", r.URL, "junk", 401, "unauthorized"},
			{"client", r.URL, relaytest.ClientToken(t, "c", "*"), 403, "admin_required"},
			{"host", r.URL, relaytest.HostToken(t, "h"), 403, "admin_required"},
			{"auth none", open.URL, "", 403, "admin_required"},
		} {
			code, b := adminCall(t, ep.method, c.base+ep.path, c.token, ep.body)
			if code != c.status || adminErrCode(b) != c.code {
				t.Errorf("%s %s with %s token: %d %s, want %d %s", ep.method, ep.path, c.name, code, b, c.status, c.code)
			}
		}
		code, _ := adminCall(t, ep.method, r.URL+ep.path+"?access_token="+admin, "", ep.body)
		if code != http.StatusUnauthorized {
			t.Errorf("%s %s with the admin token in the query: %d, want 401", ep.method, ep.path, code)
		}
	}
	if r.Draining() {
		t.Fatal("a refused drain request drained the relay")
	}
	// The admin token itself: no host, no tunnel, no client API.
	if code, _ := getText(t, r.URL+"/hosts/h/", admin); code != http.StatusForbidden {
		t.Fatalf("admin token to a host: %d, want 403", code)
	}
	if code, _ := getText(t, r.URL+"/v1/hosts", admin); code != http.StatusUnauthorized {
		t.Fatalf("admin token on the client API: %d, want 401", code)
	}
	ln, err := agent.Listen(t.Context(), agent.Config{Relays: []string{r.URL}, HostID: "h2", Token: admin,
		Logger: relaytest.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if _, err := ln.Accept(); !errors.Is(err, agent.ErrAuth) {
		t.Fatalf("agent with an admin token: %v, want ErrAuth", err)
	}
	for _, a := range []string{"replicas", "tunnels", "kick", "drain", "revoke"} {
		if got, ok := adminActions(t, r, a); !ok || got != 0 {
			t.Fatalf("admin actions %q = %v (present %v), want an initialised 0: refused calls are not actions", a, got, ok)
		}
	}
}

// adminActions reads switchboard_admin_actions_total{action}.
func adminActions(t *testing.T, r *relaytest.Relay, action string) (float64, bool) {
	t.Helper()
	mfs, err := r.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "switchboard_admin_actions_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "action" && l.GetValue() == action {
					return m.GetCounter().GetValue(), true
				}
			}
		}
	}
	return 0, false
}

// TestAdminSingleNode lists the one replica and its tunnels with their details, pages through them, filters by
// label and prefix, and counts and logs each action.
func TestAdminSingleNode(t *testing.T) {
	r := relaytest.StartRelay(t, nil)
	admin := relaytest.AdminToken(t, "ops")
	for _, id := range []string{"b", "a", "c"} {
		relaytest.StartHost(t, r.URL, id, text("hi "+id), func(c *agent.Config) {
			c.Version = "1.4.2"
			c.Labels = map[string]string{"team": map[string]string{"a": "x", "b": "y", "c": "x"}[id]}
		})
	}
	if code, body := getText(t, r.URL+"/hosts/a/", relaytest.ClientToken(t, "c", "*")); code != 200 || body != "hi a" {
		t.Fatalf("exchange: %d %q", code, body)
	}

	var reps struct{ Replicas []relay.ReplicaView }
	adminJSON(t, "GET", r.URL+"/v1/admin/replicas", admin, "", &reps)
	if len(reps.Replicas) != 1 {
		t.Fatalf("replicas %+v, want one", reps.Replicas)
	}
	self := reps.Replicas[0]
	if self.ID != "local" || !self.Reachable || self.Tunnels != 3 || self.Draining || self.Started == nil ||
		self.Version == "" || self.LeaseAgeSeconds != nil {
		t.Fatalf("replica %+v", self)
	}

	var page tunnelPage
	adminJSON(t, "GET", r.URL+"/v1/admin/tunnels", admin, "", &page)
	if len(page.Tunnels) != 3 || page.NextCursor != "" {
		t.Fatalf("tunnels %+v", page)
	}
	a := page.Tunnels[0]
	if a.HostID != "a" || a.Replica != "local" || a.AgentVersion != "1.4.2" || a.Transport == "" || a.RemoteAddr == "" ||
		a.ConnectedAt.IsZero() || a.BytesIn == 0 || a.BytesOut == 0 || a.Labels["team"] != "x" {
		t.Fatalf("tunnel view %+v", a)
	}
	// Paging: one at a time, in id order, every host once.
	var got []string
	cursor := ""
	for {
		var p tunnelPage
		adminJSON(t, "GET", r.URL+"/v1/admin/tunnels?limit=1&cursor="+cursor, admin, "", &p)
		for _, tv := range p.Tunnels {
			got = append(got, tv.HostID)
		}
		if cursor = p.NextCursor; cursor == "" {
			break
		}
	}
	if strings.Join(got, ",") != "a,b,c" {
		t.Fatalf("paged %v, want a,b,c", got)
	}
	var x tunnelPage
	adminJSON(t, "GET", r.URL+"/v1/admin/tunnels?label=team=x", admin, "", &x)
	if len(x.Tunnels) != 2 || x.Tunnels[0].HostID != "a" || x.Tunnels[1].HostID != "c" {
		t.Fatalf("label filter: %+v", x.Tunnels)
	}
	adminJSON(t, "GET", r.URL+"/v1/admin/tunnels?prefix=b", admin, "", &x)
	if len(x.Tunnels) != 1 || x.Tunnels[0].HostID != "b" {
		t.Fatalf("prefix filter: %+v", x.Tunnels)
	}
	for _, bad := range []string{"limit=0", "limit=1001", "cursor=forged", "label=nokey"} {
		if code, b := adminCall(t, "GET", r.URL+"/v1/admin/tunnels?"+bad, admin, ""); code != 400 {
			t.Fatalf("tunnels?%s: %d %s, want 400", bad, code, b)
		}
	}
	// A /v1/hosts cursor is no tunnel cursor.
	var hosts struct {
		NextCursor string `json:"next_cursor"`
	}
	adminJSON(t, "GET", r.URL+"/v1/hosts?limit=1", relaytest.ClientToken(t, "c", "*"), "", &hosts)
	if code, _ := adminCall(t, "GET", r.URL+"/v1/admin/tunnels?cursor="+hosts.NextCursor, admin, ""); code != 400 {
		t.Fatalf("a /v1/hosts cursor on the tunnel list: %d, want 400", code)
	}
	if n, _ := adminActions(t, r, "tunnels"); n != 6 { // refused queries are not actions
		t.Fatalf("tunnels actions counted %v, want 6", n)
	}
}

// TestAdminKickBanAndRevokeSingleNode: a kick closes the tunnel with 4410, a ban refuses registration with 4410 and
// expires, and with the memory directory a revocation closes the tunnel with 4401 and refuses the token.
func TestAdminKickBanAndRevokeSingleNode(t *testing.T) {
	r := relaytest.StartRelay(t, nil)
	admin := relaytest.AdminToken(t, "ops")
	hostTok := relaytest.HostToken(t, "h")

	rt := dialRawTunnel(t, r.URL, "h", hostTok, true)
	var kick struct {
		Closed      []string   `json:"closed_on"`
		BannedUntil *time.Time `json:"banned_until"`
	}
	adminJSON(t, "POST", r.URL+"/v1/admin/hosts/h/kick", admin, "", &kick)
	if len(kick.Closed) != 1 || kick.BannedUntil != nil {
		t.Fatalf("kick answer %+v", kick)
	}
	if code := rt.closeCode(t); code != tunnel.CloseKicked {
		t.Fatalf("kicked tunnel closed with %d, want 4410", code)
	}
	// Not banned: it registers again.
	dialRawTunnel(t, r.URL, "h", hostTok, true)

	start := time.Now()
	adminJSON(t, "POST", r.URL+"/v1/admin/hosts/h/kick", admin, `{"ban":"1s"}`, &kick)
	if kick.BannedUntil == nil || kick.BannedUntil.Before(start) {
		t.Fatalf("ban answer %+v", kick)
	}
	refused := dialRawTunnel(t, r.URL, "h", hostTok, false)
	if code := refused.refusedCode(t); code != tunnel.CloseKicked {
		t.Fatalf("banned registration closed with %d, want 4410", code)
	}
	// The ban ends on its own.
	waitUntil(t, "the ban to expire", func() bool { return time.Now().After(*kick.BannedUntil) })
	live := dialRawTunnel(t, r.URL, "h", hostTok, true)

	// Revoke the host token by its jti: the tunnel closes with 4401 and the token is refused after.
	claims, err := auth.NewHS256([]byte(relaytest.Secret)).Verify(t.Context(), hostTok)
	if err != nil {
		t.Fatal(err)
	}
	var rev struct{ Closed int }
	adminJSON(t, "POST", r.URL+"/v1/admin/revoke", admin, `{"jti":"`+claims.ID+`","for":"1h"}`, &rev)
	if rev.Closed != 1 {
		t.Fatalf("revocation closed %d, want 1", rev.Closed)
	}
	if code := live.closeCode(t); code != tunnel.CloseTokenExpired {
		t.Fatalf("revoked tunnel closed with %d, want 4401", code)
	}
	if code, _ := getText(t, r.URL+"/hosts/h/", hostTok); code != http.StatusUnauthorized {
		t.Fatalf("revoked token: %d, want 401", code)
	}
	for _, bad := range []string{`{"ban":"-1s"}`, `{"ban":"forever"}`, `{"ban":"10000h"}`, `{"bann":"1s"}`, `[1]`, `{"ban":"1s"}{}`} {
		if code, b := adminCall(t, "POST", r.URL+"/v1/admin/hosts/h/kick", admin, bad); code != 400 || adminErrCode(b) != "bad_request" {
			t.Fatalf("kick %s: %d %s, want 400 bad_request", bad, code, b)
		}
	}
	for _, bad := range []string{`{}`, `{"jti":"a","sub":"b","for":"1h"}`, `{"sub":"a"}`, `{"sub":"a","until":"yesterday"}`,
		`{"sub":"a","until":"2001-01-01T00:00:00Z"}`, `{"sub":"a","for":"1h","until":"2101-01-01T00:00:00Z"}`} {
		if code, b := adminCall(t, "POST", r.URL+"/v1/admin/revoke", admin, bad); code != 400 || adminErrCode(b) != "bad_request" {
			t.Fatalf("revoke %s: %d %s, want 400 bad_request", bad, code, b)
		}
	}
	// Bodies are read up to 4 KiB (maxAdminBody); one byte more is refused before it is parsed, on every endpoint
	// that takes a body. The padding is JSON whitespace, so only the size can be what is refused.
	for _, path := range []string{"/v1/admin/revoke", "/v1/admin/hosts/h/kick"} {
		for _, size := range []int{4 << 10, 4<<10 + 1} {
			body := `{}`
			if path == "/v1/admin/revoke" {
				body = `{"sub":"x","for":"1s"}`
			}
			body += strings.Repeat(" ", size-len(body))
			code, b := adminCall(t, "POST", r.URL+path, admin, body)
			tooLong := strings.Contains(string(b), "longer than 4096 bytes")
			if size > 4<<10 && (code != 400 || adminErrCode(b) != "bad_request" || !tooLong) {
				t.Fatalf("POST %s with %d bytes: %d %s, want 400 (body too long)", path, size, code, b)
			}
			if size <= 4<<10 && tooLong {
				t.Fatalf("POST %s with %d bytes refused as too long: %d %s", path, size, code, b)
			}
		}
	}
}

// TestMinAgentVersion: an older agent (or one without a version) is refused with 4426 and a message, and retries
// only after RefusedBackoff, never in a tight loop; a recent enough one connects.
func TestMinAgentVersion(t *testing.T) {
	r := relaytest.StartRelay(t, func(c *relay.Config) { c.MinAgentVersion = "1.2.0" })
	const backoff = 300 * time.Millisecond
	start := time.Now()
	ln, err := agent.Listen(t.Context(), agent.Config{Relays: []string{r.URL}, HostID: "old", Token: relaytest.HostToken(t, "old"),
		Version: "1.1.9", Logger: relaytest.Logger(t), MinBackoff: time.Millisecond, MaxBackoff: time.Millisecond,
		RefusedBackoff: backoff, Transport: agent.TransportWebSocket})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var re *agent.RefusedError
	waitUntil(t, "the agent to see the refusal", func() bool { return errors.As(ln.Err(), &re) })
	if re.Code != tunnel.CloseAgentTooOld || !strings.Contains(re.Reason, "1.1.9") || !strings.Contains(re.Reason, "1.2.0") {
		t.Fatalf("refusal %+v", re)
	}
	waitUntil(t, "three refused attempts", func() bool { return registrations(t, r, "refused") >= 3 })
	// Three attempts are two waits of RefusedBackoff apart at least (a tight loop would take microseconds).
	if took := time.Since(start); took < 2*backoff {
		t.Fatalf("three refused attempts in %v, want at least %v", took, 2*backoff)
	}
	if code := (func() websocket.StatusCode {
		rt := dialRawTunnel(t, r.URL, "nover", relaytest.HostToken(t, "nover"), false)
		return rt.refusedCode(t)
	})(); code != tunnel.CloseAgentTooOld {
		t.Fatalf("agent without a version closed with %d, want 4426", code)
	}
	relaytest.StartListener(t, r.URL, "new", func(c *agent.Config) { c.Version = "v1.2.0" })
	if _, err := relay.New(relay.Config{Verifier: auth.AllowAll(), MinAgentVersion: "one"}); err == nil {
		t.Fatal("relay.New took a bad MinAgentVersion")
	}
}

// registrations reads switchboard_tunnel_registrations_total{outcome}.
func registrations(t *testing.T, r *relaytest.Relay, outcome string) float64 {
	t.Helper()
	mfs, err := r.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "switchboard_tunnel_registrations_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			if len(m.GetLabel()) == 1 && m.GetLabel()[0].GetValue() == outcome {
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
}

// TestAdminDrainSelf: a drain request drains the relay; through Config.OnDrainRequest the process is told whether
// to exit, once.
func TestAdminDrainSelf(t *testing.T) {
	r := relaytest.StartRelay(t, nil)
	admin := relaytest.AdminToken(t, "ops")
	var res struct {
		Replica string
		Started bool
	}
	adminJSON(t, "POST", r.URL+"/v1/admin/replicas/self/drain", admin, "", &res)
	if res.Replica != "local" || !res.Started {
		t.Fatalf("drain answer %+v", res)
	}
	waitUntil(t, "the relay to drain", r.Draining)
	adminJSON(t, "POST", r.URL+"/v1/admin/replicas/local/drain", admin, "", &res)
	if res.Started {
		t.Fatal("a second drain request started another drain")
	}

	asked := make(chan bool, 2)
	h := relaytest.StartRelay(t, func(c *relay.Config) { c.OnDrainRequest = func(exit bool) { asked <- exit } })
	if code, b := adminCall(t, "POST", h.URL+"/v1/admin/replicas/self/drain?exit=maybe", admin, ""); code != 400 {
		t.Fatalf("exit=maybe: %d %s", code, b)
	}
	adminJSON(t, "POST", h.URL+"/v1/admin/replicas/self/drain?exit=true", admin, "", &res)
	if exit := <-asked; !exit {
		t.Fatal("OnDrainRequest got exit=false")
	}
	adminJSON(t, "POST", h.URL+"/v1/admin/replicas/self/drain", admin, "", &res)
	if res.Started || len(asked) != 0 {
		t.Fatal("OnDrainRequest called twice")
	}
	if code, _ := adminCall(t, "POST", h.URL+"/v1/admin/replicas/nosuch/drain", admin, ""); code != 404 {
		t.Fatalf("drain of an unknown replica: %d, want 404", code)
	}
}

// TestAdminRevokeClosesClientWebSocket: a client's live WebSocket closes with 4401 when its token's subject is
// revoked, and the token is refused from then on.
func TestAdminRevokeClosesClientWebSocket(t *testing.T) {
	r := relaytest.StartRelay(t, nil)
	relaytest.StartHost(t, r.URL, "h", echoWS(t), nil)
	tok := relaytest.ClientToken(t, "mallory", "h")
	ctx := t.Context()
	ws, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(r.URL, "http")+"/hosts/h/ws",
		&websocket.DialOptions{HTTPHeader: http.Header{"Authorization": {"Bearer " + tok}}})
	if err != nil {
		t.Fatal(err)
	}
	defer ws.CloseNow()
	if err := ws.Write(ctx, websocket.MessageText, []byte("ping")); err != nil {
		t.Fatal(err)
	}
	if _, b, err := ws.Read(ctx); err != nil || string(b) != "ping" {
		t.Fatalf("echo: %q %v", b, err)
	}
	var rev struct{ Closed int }
	adminJSON(t, "POST", r.URL+"/v1/admin/revoke", relaytest.AdminToken(t, "ops"), `{"sub":"mallory","for":"1h"}`, &rev)
	if rev.Closed != 1 {
		t.Fatalf("revocation closed %d, want 1", rev.Closed)
	}
	_, _, err = ws.Read(ctx)
	if code := websocket.CloseStatus(err); code != tunnel.CloseTokenExpired {
		t.Fatalf("client WebSocket ended with %v (code %d), want 4401", err, code)
	}
	if code, _ := getText(t, r.URL+"/hosts/h/", tok); code != http.StatusUnauthorized {
		t.Fatalf("revoked client token: %d, want 401", code)
	}
	if code, _ := getText(t, r.URL+"/hosts/h/", relaytest.ClientToken(t, "alice", "h")); code != http.StatusOK {
		t.Fatalf("another subject's token: %d, want 200", code)
	}
}

// echoWS is a host that echoes WebSocket messages.
func echoWS(t *testing.T) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.HasSuffix(r.URL.Path, "/ws") {
			_, _ = io.WriteString(w, "ok")
			return
		}
		c, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		defer c.CloseNow()
		for {
			typ, b, err := c.Read(context.Background())
			if err != nil {
				return
			}
			if err := c.Write(context.Background(), typ, b); err != nil {
				return
			}
		}
	})
}

// TestAdminCluster runs every endpoint on a three-replica cluster on real Redis, asking replica A about the
// others: replica and tunnel lists cover the cluster, a replica whose internal listener is down is reported
// unreachable, a kick through A closes B's tunnel with 4410 and the ban holds on C, a revocation through A closes
// a tunnel on B with 4401 and is refused on C, and a drain through A drains B.
func TestAdminCluster(t *testing.T) {
	addr, _ := redistest.Start(t)
	prefix := "admin-" + strings.ReplaceAll(t.Name(), "/", "-") + ":"
	a := relaytest.StartRedisReplica(t, []string{addr}, prefix, "A", nil)
	b := relaytest.StartRedisReplica(t, []string{addr}, prefix, "B", nil)
	c := relaytest.StartRedisReplica(t, []string{addr}, prefix, "C", nil)
	admin := relaytest.AdminToken(t, "ops")
	relaytest.StartHost(t, a.URL, "on-a", text("a"), nil)
	hostTok := relaytest.HostToken(t, "on-b")
	onB := dialRawTunnel(t, b.URL, "on-b", hostTok, true)
	onB.serve(text("b"))
	relaytest.StartHost(t, c.URL, "on-c", text("c"), nil)

	var reps struct{ Replicas []relay.ReplicaView }
	adminJSON(t, "GET", a.URL+"/v1/admin/replicas", admin, "", &reps)
	if len(reps.Replicas) != 3 {
		t.Fatalf("replicas %+v", reps.Replicas)
	}
	for i, want := range []string{"A", "B", "C"} {
		v := reps.Replicas[i]
		if v.ID != want || !v.Reachable || v.Tunnels != 1 || v.LeaseAgeSeconds == nil || v.InternalURL == "" {
			t.Fatalf("replica %d: %+v", i, v)
		}
	}
	var page tunnelPage
	adminJSON(t, "GET", a.URL+"/v1/admin/tunnels?limit=2", admin, "", &page)
	if len(page.Tunnels) != 2 || page.Tunnels[0].HostID != "on-a" || page.Tunnels[1].Replica != "B" || page.NextCursor == "" {
		t.Fatalf("first page %+v", page)
	}
	adminJSON(t, "GET", a.URL+"/v1/admin/tunnels?limit=2&cursor="+page.NextCursor, admin, "", &page)
	if len(page.Tunnels) != 1 || page.Tunnels[0].HostID != "on-c" || page.Tunnels[0].Replica != "C" || page.NextCursor != "" {
		t.Fatalf("second page %+v", page)
	}
	adminJSON(t, "GET", a.URL+"/v1/admin/tunnels?replica=B", admin, "", &page)
	if len(page.Tunnels) != 1 || page.Tunnels[0].HostID != "on-b" {
		t.Fatalf("replica filter %+v", page)
	}

	// C unreachable: reported, not dropped.
	c.SetInternalDown(true)
	adminJSON(t, "GET", a.URL+"/v1/admin/replicas", admin, "", &reps)
	if len(reps.Replicas) != 3 || reps.Replicas[2].ID != "C" || reps.Replicas[2].Reachable || reps.Replicas[2].Error == "" {
		t.Fatalf("replicas with C down: %+v", reps.Replicas)
	}
	adminJSON(t, "GET", a.URL+"/v1/admin/tunnels", admin, "", &page)
	if len(page.Tunnels) != 2 || len(page.Unreachable) != 1 || page.Unreachable[0].ID != "C" {
		t.Fatalf("tunnels with C down: %+v", page)
	}
	adminJSON(t, "GET", a.URL+"/v1/admin/tunnels?replica=B", admin, "", &page) // B alone is asked
	if len(page.Tunnels) != 1 || page.Tunnels[0].HostID != "on-b" || len(page.Unreachable) != 0 {
		t.Fatalf("replica filter with C down: %+v", page)
	}
	adminJSON(t, "GET", a.URL+"/v1/admin/tunnels?replica=C", admin, "", &page)
	if len(page.Tunnels) != 0 || len(page.Unreachable) != 1 || page.Unreachable[0].ID != "C" {
		t.Fatalf("replica filter on C, down: %+v", page)
	}
	c.SetInternalDown(false)

	// Kick with a ban through A: B's tunnel closes with 4410; C refuses the host until the ban ends.
	var kick struct {
		Closed      []string   `json:"closed_on"`
		BannedUntil *time.Time `json:"banned_until"`
	}
	adminJSON(t, "POST", a.URL+"/v1/admin/hosts/on-b/kick", admin, `{"ban":"2s"}`, &kick)
	if len(kick.Closed) != 1 || kick.Closed[0] != "B" || kick.BannedUntil == nil {
		t.Fatalf("kick answer %+v", kick)
	}
	if code := onB.closeCode(t); code != tunnel.CloseKicked {
		t.Fatalf("kicked tunnel closed with %d, want 4410", code)
	}
	refused := dialRawTunnel(t, c.URL, "on-b", hostTok, false)
	if code := refused.refusedCode(t); code != tunnel.CloseKicked {
		t.Fatalf("banned host on another replica: close %d, want 4410", code)
	}
	waitUntil(t, "the ban to expire", func() bool { return time.Now().After(*kick.BannedUntil) })
	onC := dialRawTunnel(t, c.URL, "on-b", hostTok, true)

	// Revoke the host token through A: the tunnel on C closes with 4401, and B refuses the token.
	claims, _ := auth.NewHS256([]byte(relaytest.Secret)).Verify(t.Context(), hostTok)
	var rev struct {
		Closed      int
		Unreachable []relay.ReplicaView
	}
	adminJSON(t, "POST", a.URL+"/v1/admin/revoke", admin, `{"jti":"`+claims.ID+`","for":"1h"}`, &rev)
	if rev.Closed != 1 || len(rev.Unreachable) != 0 {
		t.Fatalf("revocation answer %+v", rev)
	}
	if code := onC.closeCode(t); code != tunnel.CloseTokenExpired {
		t.Fatalf("revoked tunnel on another replica closed with %d, want 4401", code)
	}
	h := http.Header{tunnel.HeaderHostID: {"on-b"}, "Authorization": {"Bearer " + hostTok}}
	_, resp, err := websocket.Dial(t.Context(), "ws"+strings.TrimPrefix(b.URL, "http")+tunnel.Path,
		&websocket.DialOptions{HTTPHeader: h, Subprotocols: []string{tunnel.Subprotocol}})
	if err == nil || resp == nil || resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("revoked host token on B: %v %v, want 401", resp, err)
	}
	// A replica that missed the fan-out learns of a revocation from the directory.
	c.SetInternalDown(true)
	clientTok := relaytest.ClientToken(t, "eve", "*")
	if code, _ := getText(t, c.URL+"/hosts/on-c/", clientTok); code != 200 {
		t.Fatalf("client before revocation: %d", code)
	}
	adminJSON(t, "POST", a.URL+"/v1/admin/revoke", admin, `{"sub":"eve","for":"1h"}`, &rev)
	if len(rev.Unreachable) != 1 || rev.Unreachable[0].ID != "C" {
		t.Fatalf("revocation with C down: %+v", rev)
	}
	waitUntil(t, "C to refuse the revoked subject", func() bool {
		code, _ := getText(t, c.URL+"/hosts/on-c/", clientTok)
		return code == http.StatusUnauthorized
	})
	c.SetInternalDown(false)

	// Drain B through A.
	var dr struct {
		Replica string
		Started bool
	}
	adminJSON(t, "POST", a.URL+"/v1/admin/replicas/B/drain", admin, "", &dr)
	if dr.Replica != "B" || !dr.Started {
		t.Fatalf("drain answer %+v", dr)
	}
	waitUntil(t, "B to drain", b.Draining)
	adminJSON(t, "GET", a.URL+"/v1/admin/replicas", admin, "", &reps)
	if !reps.Replicas[1].Draining || reps.Replicas[0].Draining {
		t.Fatalf("replicas after draining B: %+v", reps.Replicas)
	}
	for _, act := range []string{"replicas", "tunnels", "kick", "revoke", "drain"} {
		if n, _ := adminActions(t, a.Relay, act); n == 0 {
			t.Fatalf("action %s not counted on A", act)
		}
	}
}

// TestAdminBanAgent: an agent kicked with a ban logs the refusal, waits RefusedBackoff between attempts while the
// ban lasts, and is back once it ends.
func TestAdminBanAgent(t *testing.T) {
	r := relaytest.StartRelay(t, nil)
	ln := relaytest.StartHost(t, r.URL, "h", text("hi"), func(c *agent.Config) { c.RefusedBackoff = 200 * time.Millisecond })
	var kick struct {
		BannedUntil *time.Time `json:"banned_until"`
	}
	adminJSON(t, "POST", r.URL+"/v1/admin/hosts/h/kick", relaytest.AdminToken(t, "ops"), `{"ban":"1500ms"}`, &kick)
	var re *agent.RefusedError
	waitUntil(t, "the agent to be refused", func() bool { return errors.As(ln.Err(), &re) })
	if re.Code != tunnel.CloseKicked || !strings.Contains(re.Reason, "banned") {
		t.Fatalf("refusal %+v", re)
	}
	refusedAt := registrations(t, r, "refused")
	waitUntil(t, "the host to be back after the ban", func() bool {
		code, _ := getText(t, r.URL+"/hosts/h/", relaytest.ClientToken(t, "c", "h"))
		return code == http.StatusOK
	})
	if time.Now().Before(*kick.BannedUntil) {
		t.Fatal("the host registered before its ban ended")
	}
	// 1.5 s of ban at one attempt per 200 ms at most: no more than 1.5/0.2 + 1 refusals.
	if n := registrations(t, r, "refused"); n > 9 || n < refusedAt {
		t.Fatalf("%v refused registrations during the ban, want at most 9", n)
	}
}

// TestAdminRevokeEndsEventStream: a presence event stream of a revoked subject is cut.
func TestAdminRevokeEndsEventStream(t *testing.T) {
	r := relaytest.StartRelay(t, nil)
	req, _ := http.NewRequestWithContext(t.Context(), "GET", r.URL+"/v1/presence/events", nil)
	req.Header.Set("Authorization", "Bearer "+relaytest.ClientToken(t, "watcher", "*"))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("events: %d", resp.StatusCode)
	}
	var rev struct{ Closed int }
	adminJSON(t, "POST", r.URL+"/v1/admin/revoke", relaytest.AdminToken(t, "ops"), `{"sub":"watcher","for":"1h"}`, &rev)
	if rev.Closed != 1 {
		t.Fatalf("revocation closed %d, want the one stream", rev.Closed)
	}
	if _, err := io.Copy(io.Discard, resp.Body); err != nil && t.Context().Err() != nil {
		t.Fatalf("stream read: %v", err)
	}
}

// banAfterFirstCheck is a memory directory whose first ban check of a host answers "not banned": as if the ban
// was written just after the registration checked it.
type banAfterFirstCheck struct {
	*directory.Memory
	checks atomic.Int32
}

func (d *banAfterFirstCheck) BannedUntil(ctx context.Context, hostID string) (time.Time, error) {
	if d.checks.Add(1) == 1 {
		return time.Time{}, nil
	}
	return d.Memory.BannedUntil(ctx, hostID)
}

// TestAdminBanDuringRegistration: a registration that passed its ban check before a kick with a ban, and
// registered after the kick looked for it, is refused with 4410 all the same (the ban is read again).
func TestAdminBanDuringRegistration(t *testing.T) {
	dir := &banAfterFirstCheck{Memory: directory.NewMemory()}
	t.Cleanup(func() { _ = dir.Close() })
	r := relaytest.StartRelay(t, func(c *relay.Config) { c.Directory = dir })
	if err := dir.Ban(t.Context(), "late", time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	// The kick (of a host with no tunnel here yet) reaches this replica.
	adminJSON(t, "POST", r.URL+"/v1/admin/hosts/late/kick", relaytest.AdminToken(t, "ops"), "", &struct{}{})
	refused := dialRawTunnel(t, r.URL, "late", relaytest.HostToken(t, "late"), false)
	if code := refused.refusedCode(t); code != tunnel.CloseKicked {
		t.Fatalf("registration after a ban closed with %d, want 4410", code)
	}
	if n := dir.checks.Load(); n < 2 {
		t.Fatalf("the ban was checked %d times, want a second check after registering", n)
	}
}

// TestRevocationSurvivesDirectoryLoss: Redis restarted empty loses the revocation list; the replica that holds it
// in memory writes it back, so a replica started afterwards refuses the token too.
func TestRevocationSurvivesDirectoryLoss(t *testing.T) {
	rs := redistest.StartServer(t)
	a := relaytest.StartRedisReplica(t, []string{rs.Addr}, "rvloss:", "A", nil)
	admin := relaytest.AdminToken(t, "ops")
	adminJSON(t, "POST", a.URL+"/v1/admin/revoke", admin, `{"sub":"mallory","for":"1h"}`, &struct{}{})
	dir := a.Directory
	has := func() bool {
		list, err := dir.Revocations(t.Context())
		if err != nil {
			return false
		}
		for _, r := range list {
			if r.Subject == "mallory" {
				return true
			}
		}
		return false
	}
	if !has() {
		t.Fatal("the revocation is not in the directory")
	}
	rs.Restart() // empty: the revocation list is gone
	relaytest.Eventually(t, 30*time.Second, "the revocation written back", has)
	b := relaytest.StartRedisReplica(t, []string{rs.Addr}, "rvloss:", "B", nil)
	tok := relaytest.ClientToken(t, "mallory", "h")
	relaytest.Eventually(t, 30*time.Second, "B refusing the revoked token", func() bool {
		resp := relaytest.Do(t, "GET", b.URL+"/v1/hosts", tok)
		resp.Body.Close()
		return resp.StatusCode == http.StatusUnauthorized
	})
}
