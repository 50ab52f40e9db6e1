package agent_test

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/switchboard-relay/switchboard/agent"
	"github.com/switchboard-relay/switchboard/internal/auth"
	"github.com/switchboard-relay/switchboard/internal/relay"
	"github.com/switchboard-relay/switchboard/internal/relaytest"
	"github.com/switchboard-relay/switchboard/internal/tcpfront"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m) // a goroutine parked on a socket read is a leak here too: tests close what they open
}

func get(url, token string) (int, string) {
	req, _ := http.NewRequest("GET", url, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// relayOn serves a fresh relay on the given listener until the returned stop is called.
func relayOn(t *testing.T, ln net.Listener) (srv *relay.Server, stop func()) {
	t.Helper()
	srv, err := relay.New(relay.Config{Verifier: auth.NewHS256([]byte(relaytest.Secret)), Logger: relaytest.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: srv}
	done := make(chan struct{})
	go func() { defer close(done); _ = hs.Serve(ln) }()
	ctx, cancel := context.WithCancel(context.Background())
	runDone := make(chan struct{})
	go func() { defer close(runDone); _ = srv.Run(ctx) }()
	return srv, func() {
		cancel()
		<-runDone
		_ = hs.Close()
		_ = srv.Close()
		<-done
	}
}

// restartingRelay is a relay that can go down and come back at the same address: a TCP front the test holds, in
// front of a relay on a fresh port each time. Coming back on the old port itself could fail, because another
// process may take a port between its close and the next bind. While the relay is down, connections to the front
// are closed at once.
type restartingRelay struct {
	front *tcpfront.Front
	stop  func()
}

func startRestartingRelay(t *testing.T) *restartingRelay {
	t.Helper()
	f, err := tcpfront.Listen()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = f.Close() })
	r := &restartingRelay{front: f}
	r.up(t)
	return r
}

// addr is the relay's address, the same across restarts.
func (r *restartingRelay) addr() string { return r.front.Addr() }

// up starts a relay behind the front.
func (r *restartingRelay) up(t *testing.T) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	_, r.stop = relayOn(t, l)
	r.front.Set(l.Addr().String())
}

// down stops the relay; the front closes what arrives until the next up.
func (r *restartingRelay) down() {
	r.front.Set()
	r.stop()
}

// TestListenServesAcrossRelayRestarts: http.Serve on agent.Listen keeps working when the relay restarts on the
// same address, with no action from the program; Close leaves no goroutine behind.
func TestListenServesAcrossRelayRestarts(t *testing.T) {
	leaks := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, leaks) }) // registered first: runs after every other cleanup
	rr := startRestartingRelay(t)
	addr := rr.addr()

	ln, err := agent.Listen(context.Background(), agent.Config{
		Relays: []string{"http://" + addr}, HostID: "h", Token: relaytest.HostToken(t, "h"),
		MinBackoff: 20 * time.Millisecond, MaxBackoff: 100 * time.Millisecond, Logger: relaytest.Logger(t),
	})
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() {
		served <- http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.WriteString(w, "from the library "+r.URL.Path)
		}))
	}()
	tok := relaytest.ClientToken(t, "c", "h")
	relaytest.Eventually(t, 5*time.Second, "first tunnel", func() bool {
		code, _ := get("http://"+addr+"/hosts/h/a", tok)
		return code == 200
	})
	rr.down()
	rr.up(t)
	defer rr.down()
	relaytest.Eventually(t, 5*time.Second, "tunnel after the relay restart", func() bool {
		code, body := get("http://"+addr+"/hosts/h/b", tok)
		return code == 200 && body == "from the library /b"
	})
	if err := ln.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-served:
		if err == nil || !strings.Contains(err.Error(), "closed") {
			t.Fatalf("http.Serve returned %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("http.Serve did not return after Close")
	}
}

// TestDrainMovesToAnotherRelayBeforeBreaking: the agent opens its new tunnel on the other relay while the
// draining one finishes the exchange in flight on the old tunnel.
func TestDrainMovesToAnotherRelayBeforeBreaking(t *testing.T) {
	leaks := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, leaks) })
	la, _ := net.Listen("tcp", "127.0.0.1:0")
	lb, _ := net.Listen("tcp", "127.0.0.1:0")
	a, stopA := relayOn(t, la)
	defer stopA()
	_, stopB := relayOn(t, lb)
	defer stopB()
	urlA, urlB := "http://"+la.Addr().String(), "http://"+lb.Addr().String()

	release := make(chan struct{})
	entered := make(chan struct{}, 1)
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			entered <- struct{}{}
			<-release
		}
		_, _ = io.WriteString(w, "ok "+r.URL.Path)
	}))
	defer up.Close()
	ln, err := agent.Listen(context.Background(), agent.Config{
		Relays: []string{urlA, urlB}, HostID: "h", Token: relaytest.HostToken(t, "h"),
		MinBackoff: 20 * time.Millisecond, MaxBackoff: 100 * time.Millisecond, Logger: relaytest.Logger(t),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	u := mustURL(t, up.URL)
	go func() { _ = http.Serve(ln, agent.UpstreamHandler(u, nil)) }()
	tok := relaytest.ClientToken(t, "c", "h")
	relaytest.Eventually(t, 5*time.Second, "tunnel on A", func() bool { c, _ := get(urlA+"/hosts/h/x", tok); return c == 200 })

	slow := make(chan int, 1)
	go func() { c, _ := get(urlA+"/hosts/h/slow", tok); slow <- c }()
	<-entered
	drained := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		drained <- a.Drain(ctx)
	}()
	relaytest.Eventually(t, 5*time.Second, "the new tunnel on B", func() bool { c, _ := get(urlB+"/hosts/h/y", tok); return c == 200 })
	if n := ln.Tunnels(); n != 2 {
		t.Fatalf("tunnels during the move: %d, want 2 (old one still finishing)", n)
	}
	close(release)
	if c := <-slow; c != 200 {
		t.Fatalf("the exchange in flight on the drained tunnel: %d", c)
	}
	if err := <-drained; err != nil {
		t.Fatalf("drain: %v", err)
	}
	relaytest.Eventually(t, 5*time.Second, "the old tunnel to close", func() bool { return ln.Tunnels() == 1 })
}

func TestConfigErrors(t *testing.T) {
	for name, cfg := range map[string]agent.Config{
		"no relay":      {HostID: "h", Token: "t"},
		"bad scheme":    {Relays: []string{"ftp://x"}, HostID: "h", Token: "t"},
		"no id":         {Relays: []string{"http://x"}, Token: "t"},
		"invisible id":  {Relays: []string{"http://x"}, HostID: "h\u200b", Token: "t"},
		"bidi id":       {Relays: []string{"http://x"}, HostID: "h\u202eh", Token: "t"},
		"no token":      {Relays: []string{"http://x"}, HostID: "h"},
		"bad transport": {Relays: []string{"http://x"}, HostID: "h", Token: "t", Transport: "carrier-pigeon"},
	} {
		if _, err := agent.Listen(context.Background(), cfg); err == nil {
			t.Errorf("%s: Listen accepted %+v", name, cfg)
		}
	}
}

func mustURL(t *testing.T, s string) *url.URL {
	t.Helper()
	u, err := url.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}
