package relay_test

import (
	"context"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/switchboard-relay/switchboard/agent"
	"github.com/switchboard-relay/switchboard/internal/relay"
	"github.com/switchboard-relay/switchboard/internal/relaytest"
	"github.com/switchboard-relay/switchboard/internal/tunnel"
)

// expIn returns the "exp" of a token that lives d from now, as the relay reads it: in whole seconds.
func expIn(d time.Duration) time.Time { return time.Unix(time.Now().Add(d).Unix(), 0) }

// hostTokenUntil mints a host token for id expiring at exp (whole seconds; see expIn).
func hostTokenUntil(t *testing.T, id string, exp time.Time) string {
	t.Helper()
	s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{
		"sub": "host:" + id, "kind": "host", "host_id": id, "iat": time.Now().Unix(), "exp": exp.Unix(),
	}).SignedString([]byte(relaytest.Secret))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// closedFor reads switchboard_tunnels_closed_total for reason.
func closedFor(t *testing.T, r *relaytest.Relay, reason string) float64 {
	t.Helper()
	mfs, err := r.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "switchboard_tunnels_closed_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "reason" && l.GetValue() == reason {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

// TestExpiredHostTokenClosesTunnel: a host that keeps its tunnel past its token's exp is closed with 4401 (within
// a ping interval), and the expired token registers nothing afterwards, even inside the verifier's leeway. Another
// host is served throughout.
func TestExpiredHostTokenClosesTunnel(t *testing.T) {
	r := relaytest.StartRelay(t, func(c *relay.Config) { c.PingInterval = 100 * time.Millisecond })
	relaytest.StartHost(t, r.URL, "steady", echoPath, nil)
	exp := expIn(3 * time.Second)
	tok := hostTokenUntil(t, "h", exp)
	rt := dialRawTunnel(t, r.URL, "h", tok, true)
	rt.serve(echoPath)
	client := relaytest.ClientToken(t, "c", "*")
	if code, body := getText(t, r.URL+"/hosts/h/x", client); code != 200 || body != "echoPath /x" {
		t.Fatalf("before exp: %d %q", code, body)
	}
	if code := rt.closeCode(t); code != tunnel.CloseTokenExpired {
		t.Fatalf("tunnel closed with %d, want %d", code, tunnel.CloseTokenExpired)
	}
	if now := time.Now(); now.Before(exp) {
		t.Fatalf("tunnel closed %v before its token's exp", exp.Sub(now))
	}
	if status, code := tunnelAttempt(t, r.URL, "h", tok); status != 401 || code != "unauthorized" {
		t.Fatalf("re-registering with the expired token: %d %s, want 401 unauthorized", status, code)
	}
	if code, body := getText(t, r.URL+"/hosts/steady/y", client); code != 200 || body != "echoPath /y" {
		t.Fatalf("another host meanwhile: %d %q", code, body)
	}
	relaytest.Eventually(t, 10*time.Second, "the expired tunnel to be counted", func() bool {
		return closedFor(t, r, "token_expired") == 1
	})
}

// TestHostTokenRenewedBeforeExpiry: an agent with a token func opens a new tunnel with a fresh token before the old
// token expires; the relay retires the old tunnel once its exchanges finish. Under light load across the first
// token's exp, no request fails and no tunnel is closed for an expired token.
func TestHostTokenRenewedBeforeExpiry(t *testing.T) {
	r := relaytest.StartRelay(t, func(c *relay.Config) { c.PingInterval = 100 * time.Millisecond })
	const life = 6 * time.Second // 5 to 6 s in whole seconds: renewed at least 0.5 s before exp
	var calls atomic.Int32
	var mu sync.Mutex
	var firstExp time.Time
	slow := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(30 * time.Millisecond) // keep exchanges in flight while tunnels change
		_, _ = io.WriteString(w, "ok")
	})
	relaytest.StartHost(t, r.URL, "h", slow, func(c *agent.Config) {
		c.Token = ""
		c.TokenSource = func(context.Context) (string, error) {
			calls.Add(1)
			exp := expIn(life)
			mu.Lock()
			if firstExp.IsZero() {
				firstExp = exp
			}
			mu.Unlock()
			return hostTokenUntil(t, "h", exp), nil
		}
	})
	mu.Lock()
	until := firstExp.Add(time.Second)
	mu.Unlock()

	client := relaytest.ClientToken(t, "c", "h")
	var wg sync.WaitGroup
	var ok, failed atomic.Int32
	for range 3 { // light load: three clients in a loop
		wg.Go(func() {
			for time.Now().Before(until) {
				resp, err := http.Get(r.URL + "/hosts/h/?access_token=" + client)
				if err != nil {
					failed.Add(1)
					t.Errorf("request failed: %v", err)
					continue
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 || string(body) != "ok" {
					failed.Add(1)
					t.Errorf("request: %d %q", resp.StatusCode, body)
					continue
				}
				ok.Add(1)
			}
		})
	}
	wg.Wait()
	if failed.Load() != 0 || ok.Load() == 0 {
		t.Fatalf("%d requests failed, %d succeeded", failed.Load(), ok.Load())
	}
	if n := calls.Load(); n < 2 {
		t.Fatalf("token func called %d times across the first token's exp, want a renewal", n)
	}
	if n := closedFor(t, r, "token_expired"); n != 0 {
		t.Fatalf("%v tunnels closed for an expired token, want 0 (renewed before exp)", n)
	}
	relaytest.Eventually(t, 10*time.Second, "the renewed-away tunnel to close as replaced", func() bool {
		return closedFor(t, r, "replaced") >= 1
	})
}

// TestTokenExpiredCloseFetchesFreshToken: when renewal is impossible (the token func keeps returning the same
// token until it expires, and a fresh one only once the relay has closed the tunnel), the relay closes the tunnel
// with 4401 and the agent comes back with a token it fetched afresh, never presenting the expired one; the host is
// reachable again.
func TestTokenExpiredCloseFetchesFreshToken(t *testing.T) {
	r := relaytest.StartRelay(t, func(c *relay.Config) { c.PingInterval = 100 * time.Millisecond })
	exp := expIn(3 * time.Second)
	stale := hostTokenUntil(t, "h", exp)
	var fresh atomic.Int32
	relaytest.StartHost(t, r.URL, "h", echoPath, func(c *agent.Config) {
		c.Token = ""
		c.TokenSource = func(ctx context.Context) (string, error) {
			if time.Now().Before(exp) {
				return stale, nil
			}
			// Past exp: fresh tokens only once the relay has closed the stale tunnel, so no renewal can beat it.
			for closedFor(t, r, "token_expired") == 0 {
				select {
				case <-ctx.Done():
					return "", ctx.Err()
				case <-time.After(10 * time.Millisecond):
				}
			}
			fresh.Add(1)
			return relaytest.HostToken(t, "h"), nil
		}
	})
	relaytest.Eventually(t, 20*time.Second, "a tunnel closed with 4401", func() bool { return closedFor(t, r, "token_expired") == 1 })
	client := relaytest.ClientToken(t, "c", "h")
	relaytest.Eventually(t, 20*time.Second, "the host back with a fresh token", func() bool {
		code, _ := getText(t, r.URL+"/hosts/h/z", client)
		return code == 200
	})
	if fresh.Load() == 0 {
		t.Fatal("the agent reconnected without fetching a fresh token")
	}
	if n := registrationCount(t, r, "unauthorized"); n != 0 {
		t.Fatalf("%v registrations refused: the agent presented the expired token", n)
	}
}

// TestReplacedTunnelGrace: a tunnel replaced by a newer registration of its host takes no new exchanges, and one
// that still holds an exchange after ReplaceGrace is closed under it with 4409 and counted; the new tunnel and
// other hosts serve meanwhile.
func TestReplacedTunnelGrace(t *testing.T) {
	r := relaytest.StartRelay(t, func(c *relay.Config) { c.ReplaceGrace = 300 * time.Millisecond })
	relaytest.StartHost(t, r.URL, "steady", echoPath, nil)
	entered, release := make(chan struct{}, 1), make(chan struct{})
	old := dialRawTunnel(t, r.URL, "h", relaytest.HostToken(t, "h"), true)
	t.Cleanup(func() { close(release) }) // runs before old's cleanup, which waits for this handler
	old.serve(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		entered <- struct{}{}
		<-release
	}))
	client := relaytest.ClientToken(t, "c", "*")
	stuck := make(chan int, 1)
	go func() { // ends when the relay answers, at the latest when old is closed after the grace
		code, _, err := fetchText(r.URL+"/hosts/h/stuck", client)
		if err != nil {
			t.Error(err)
		}
		stuck <- code
	}()
	<-entered

	fresh := dialRawTunnel(t, r.URL, "h", relaytest.HostToken(t, "h"), true)
	fresh.serve(echoPath)
	if code, body := getText(t, r.URL+"/hosts/h/new", client); code != 200 || body != "echoPath /new" {
		t.Fatalf("exchange while the old tunnel retires: %d %q, want the new tunnel's answer", code, body)
	}
	if code := old.closeCode(t); code != tunnel.CloseReplaced {
		t.Fatalf("old tunnel closed with %d, want %d", code, tunnel.CloseReplaced)
	}
	select {
	case code := <-stuck:
		if code == 200 {
			t.Fatal("the stuck exchange succeeded though its tunnel was closed under it")
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the stuck exchange was not ended by the close")
	}
	relaytest.Eventually(t, 10*time.Second, "the cut to be counted", func() bool {
		n, err := testutil.GatherAndCount(r.Registry, "switchboard_replaced_tunnels_cut_total")
		if err != nil || n != 1 {
			t.Fatalf("series of switchboard_replaced_tunnels_cut_total: %d, %v", n, err)
		}
		mfs, _ := r.Registry.Gather()
		for _, mf := range mfs {
			if mf.GetName() == "switchboard_replaced_tunnels_cut_total" {
				return mf.GetMetric()[0].GetCounter().GetValue() == 1
			}
		}
		return false
	})
	for _, path := range []string{"/hosts/h/after", "/hosts/steady/after"} {
		if code, body := getText(t, r.URL+path, client); code != 200 || !strings.HasSuffix(body, "/after") {
			t.Fatalf("GET %s after the replacement: %d %q", path, code, body)
		}
	}
}
