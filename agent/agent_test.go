package agent_test

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"go.uber.org/goleak"

	"github.com/switchboard-relay/switchboard/agent"
	"github.com/switchboard-relay/switchboard/internal/relay"
	"github.com/switchboard-relay/switchboard/internal/relaytest"
)

// expiredHostToken is a well-signed host token for id that expired an hour ago.
func expiredHostToken(t *testing.T, id string) string {
	t.Helper()
	s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{
		"sub": "host:" + id, "kind": "host", "host_id": id, "exp": time.Now().Add(-time.Hour).Unix(),
	}).SignedString([]byte(relaytest.Secret))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestEveryAttemptCarriesAFreshToken: the agent asks TokenSource before every attempt and sends what it got; a
// relay refusing expired tokens is passed as soon as the function returns a good one.
func TestEveryAttemptCarriesAFreshToken(t *testing.T) {
	r := relaytest.StartRelay(t, nil)
	var mu sync.Mutex
	var issued, sent []string
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if strings.HasSuffix(req.URL.Path, "/v1/tunnel") {
			mu.Lock()
			sent = append(sent, strings.TrimPrefix(req.Header.Get("Authorization"), "Bearer "))
			mu.Unlock()
		}
		r.ServeHTTP(w, req)
	}))
	t.Cleanup(front.Close)
	ln := relaytest.StartListener(t, front.URL, "h", func(c *agent.Config) {
		c.Token = ""
		c.MinBackoff, c.MaxBackoff = 10*time.Millisecond, 20*time.Millisecond
		c.TokenSource = func(context.Context) (string, error) {
			mu.Lock()
			defer mu.Unlock()
			tok := expiredHostToken(t, "h")
			if len(issued) >= 2 {
				tok = relaytest.HostToken(t, "h")
			}
			issued = append(issued, tok)
			return tok, nil
		}
	})
	if n := ln.Tunnels(); n != 1 {
		t.Fatalf("tunnels %d", n)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(issued) != 3 || len(sent) != 3 {
		t.Fatalf("%d tokens issued, %d attempts: want 3 and 3 (two expired, then a good one)", len(issued), len(sent))
	}
	for i := range sent {
		if sent[i] != issued[i] {
			t.Fatalf("attempt %d sent another token than the one fetched for it", i)
		}
	}
}

// TestReconnectAfterRelayRestartFetchesATokenPerAttempt: while the relay is down the agent keeps trying, each
// attempt with a token of its own; when a relay is back on the address, the tunnel is too.
func TestReconnectAfterRelayRestartFetchesATokenPerAttempt(t *testing.T) {
	rr := startRestartingRelay(t)
	addr := rr.addr()
	var dials, tokens atomic.Int32
	ln, err := agent.Listen(context.Background(), agent.Config{
		Relays: []string{"http://" + addr}, HostID: "h", Logger: relaytest.Logger(t),
		MinBackoff: 10 * time.Millisecond, MaxBackoff: 30 * time.Millisecond,
		TokenSource: func(context.Context) (string, error) {
			tokens.Add(1)
			return relaytest.HostToken(t, "h"), nil
		},
		Dial: func(ctx context.Context, network, a string) (net.Conn, error) {
			dials.Add(1)
			var d net.Dialer
			return d.DialContext(ctx, network, a)
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	served := make(chan struct{})
	go func() {
		defer close(served)
		_ = http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "up") }))
	}()
	defer func() { _ = ln.Close(); <-served }()
	waitUp(t, ln)
	rr.down()
	relaytest.Eventually(t, 5*time.Second, "the agent to notice", func() bool { return ln.Tunnels() == 0 })
	before := dials.Load()
	relaytest.Eventually(t, 5*time.Second, "three attempts against the dead address", func() bool { return dials.Load() >= before+3 })

	rr.up(t)
	defer rr.down()
	tok := relaytest.ClientToken(t, "c", "h")
	relaytest.Eventually(t, 5*time.Second, "the tunnel on the restarted relay", func() bool {
		code, body := get("http://"+addr+"/hosts/h/", tok)
		return code == 200 && body == "up"
	})
	if d, tk := dials.Load(), tokens.Load(); d != tk {
		t.Fatalf("%d attempts, %d tokens fetched: want one token per attempt", d, tk)
	}
}

// TestDrainNoticeMovesToTheNextRelay: told to move, the agent dials the next relay of its list at once (the one
// that drains refuses new tunnels, so trying it first only costs a backoff), and holds both tunnels until the old
// one finishes its exchange.
func TestDrainNoticeMovesToTheNextRelay(t *testing.T) {
	a := relaytest.StartRelay(t, func(c *relay.Config) { c.DrainJitter = time.Millisecond })
	b := relaytest.StartRelay(t, nil)
	entered := make(chan struct{})
	release := make(chan struct{})
	ln := relaytest.StartHost(t, a.URL, "h", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			close(entered)
			<-release
		}
		_, _ = io.WriteString(w, "ok")
	}), func(c *agent.Config) {
		c.Relays = []string{a.URL, b.URL}
		c.MinBackoff, c.MaxBackoff = 3*time.Second, 5*time.Second // a wasted attempt would show
	})
	tok := relaytest.ClientToken(t, "c", "h")
	slow := make(chan int, 1)
	go func() { code, _ := get(a.URL+"/hosts/h/slow", tok); slow <- code }()
	<-entered
	drained := make(chan error, 1)
	start := time.Now()
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		drained <- a.Drain(ctx)
	}()
	relaytest.Eventually(t, 5*time.Second, "the tunnel on the next relay", func() bool { code, _ := get(b.URL+"/hosts/h/", tok); return code == 200 })
	t.Logf("moved in %v", time.Since(start))
	if n := ln.Tunnels(); n != 2 {
		t.Fatalf("tunnels during the move: %d, want 2", n)
	}
	if n := drainingRefusals(t, a); n != 0 {
		t.Fatalf("the agent tried the draining relay %v times", n)
	}
	close(release)
	if code := <-slow; code != 200 {
		t.Fatalf("the exchange on the drained tunnel: %d", code)
	}
	if err := <-drained; err != nil {
		t.Fatalf("drain: %v", err)
	}
	relaytest.Eventually(t, 5*time.Second, "the old tunnel to close", func() bool { return ln.Tunnels() == 1 })
}

// drainingRefusals reads switchboard_tunnel_registrations_total{outcome="draining"}.
func drainingRefusals(t *testing.T, r *relaytest.Relay) float64 {
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
			for _, l := range m.GetLabel() {
				if l.GetName() == "outcome" && l.GetValue() == "draining" {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

// stuckHandshake is the connect timeout of TestCloseDuringAStuckHandshake: far above what Close takes.
const stuckHandshake = time.Minute

// TestCloseDuringAStuckHandshake: a relay address that accepts connections and never answers holds the agent in
// its connect timeout; Close (or the Listen context) ends that at once, and nothing is left running.
func TestCloseDuringAStuckHandshake(t *testing.T) {
	leaks := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, leaks) })
	for _, transport := range []string{agent.TransportAuto, agent.TransportWebSocket} {
		for _, how := range []string{"close", "context"} {
			t.Run(transport+" "+how, func(t *testing.T) {
				sink, err := net.Listen("tcp", "127.0.0.1:0")
				if err != nil {
					t.Fatal(err)
				}
				accepted := make(chan net.Conn, 4)
				var wg sync.WaitGroup
				wg.Go(func() {
					for {
						c, err := sink.Accept()
						if err != nil {
							return
						}
						accepted <- c
					}
				})
				defer func() {
					_ = sink.Close()
					wg.Wait()
					close(accepted)
					for c := range accepted {
						_ = c.Close()
					}
				}()
				ctx, cancel := context.WithCancel(context.Background())
				defer cancel()
				ln, err := agent.Listen(ctx, agent.Config{
					Relays: []string{"http://" + sink.Addr().String()}, HostID: "h", Token: "t",
					Transport: transport, Logger: relaytest.Logger(t), ConnectTimeout: stuckHandshake,
				})
				if err != nil {
					t.Fatal(err)
				}
				select {
				case c := <-accepted:
					accepted <- c // closed at the end
				case <-time.After(5 * time.Second):
					t.Fatal("the agent did not connect")
				}
				acceptErr := make(chan error, 1)
				go func() { _, err := ln.Accept(); acceptErr <- err }()
				start := time.Now()
				if how == "context" {
					cancel()
					if err := <-acceptErr; !errors.Is(err, net.ErrClosed) {
						t.Fatalf("Accept after the context ended: %v", err)
					}
				}
				if err := ln.Close(); err != nil {
					t.Fatal(err)
				}
				// Not a wall-clock bound on Close: a Close that waited for the handshake would wait out its minute.
				if took := time.Since(start); took >= stuckHandshake {
					t.Fatalf("Close took %v during a stuck handshake: it waited for the connect timeout", took)
				}
				if how == "close" {
					if err := <-acceptErr; !errors.Is(err, net.ErrClosed) {
						t.Fatalf("Accept after Close: %v", err)
					}
				}
				waitCtx, waitCancel := context.WithTimeout(context.Background(), time.Second)
				defer waitCancel()
				if err := ln.WaitUp(waitCtx); err == nil {
					t.Fatal("WaitUp succeeded on a closed listener")
				}
			})
		}
	}
}

func waitUp(t *testing.T, ln *agent.Listener) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := ln.WaitUp(ctx); err != nil {
		t.Fatalf("tunnel not up: %v", err)
	}
}
