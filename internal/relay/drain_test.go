package relay_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/coder/websocket"
	"go.uber.org/goleak"

	"github.com/switchboard-relay/switchboard/agent"
	"github.com/switchboard-relay/switchboard/internal/auth"
	"github.com/switchboard-relay/switchboard/internal/directory"
	"github.com/switchboard-relay/switchboard/internal/relay"
	"github.com/switchboard-relay/switchboard/internal/relaytest"
)

// wsEcho is a host handler that echoes WebSocket messages until the client goes.
func wsEcho(w http.ResponseWriter, r *http.Request) {
	c, err := websocket.Accept(w, r, nil)
	if err != nil {
		return
	}
	defer c.CloseNow()
	for {
		typ, msg, err := c.Read(r.Context())
		if err != nil {
			return
		}
		if err := c.Write(r.Context(), typ, msg); err != nil {
			return
		}
	}
}

// echoOnce sends msg on c and reads the echo.
func echoOnce(t *testing.T, c *websocket.Conn, msg string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.Write(ctx, websocket.MessageText, []byte(msg)); err != nil {
		t.Fatalf("websocket write: %v", err)
	}
	if _, got, err := c.Read(ctx); err != nil || string(got) != msg {
		t.Fatalf("websocket echo: %q %v, want %q", got, err, msg)
	}
}

// TestDrainRetiresEachTunnelOnItsOwn: two hosts on replica A, one with a WebSocket open through A. A drains: the
// idle host moves to B and its old tunnel on A is retired at once, while the busy host's old tunnel waits for its
// WebSocket (which keeps working). Cancelling the drain's context stops the wait: the busy tunnel is cut, and the
// report says so. The drain leaves no goroutine behind.
func TestDrainRetiresEachTunnelOnItsOwn(t *testing.T) {
	leaks := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, leaks) }) // registered first: runs after every other cleanup
	dir := directory.NewMemory()
	t.Cleanup(func() { _ = dir.Close() })
	fast := func(c *relay.Config) { c.DrainJitter = time.Millisecond }
	a := relaytest.StartRelayOn(t, dir, fast)
	b := relaytest.StartRelayOn(t, dir, fast)
	both := func(c *agent.Config) { c.Relays = []string{a.URL, b.URL} }
	busy := relaytest.StartHost(t, a.URL, "busy", http.HandlerFunc(wsEcho), both)
	idle := relaytest.StartHost(t, a.URL, "idle", textHandler("idle"), both)
	tok := relaytest.ClientToken(t, "c", "busy", "idle")

	ws, _, err := dialWS(t, "ws"+a.URL[len("http"):]+"/hosts/busy/", tok)
	if err != nil {
		t.Fatalf("websocket through A: %v", err)
	}
	echoOnce(t, ws, "before")

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	type result struct {
		rep relay.DrainReport
		err error
	}
	drained := make(chan result, 1)
	go func() {
		rep, err := a.DrainWithReport(ctx)
		drained <- result{rep, err}
	}()

	// The idle host's agent moves to B, and A closes its old tunnel (the only one A closes while the WebSocket is
	// open): the agent is left with its new tunnel.
	relaytest.Eventually(t, 20*time.Second, "the idle host on B and its tunnel on A retired", func() bool {
		e, err := dir.Lookup(context.Background(), "idle")
		return err == nil && e.Replica == b.ID &&
			metricValue(t, a.Relay, "switchboard_tunnels_closed_total", "reason", "drain") == 1 && idle.Tunnels() == 1
	})
	if code, body := getText(t, b.URL+"/hosts/idle/", tok); code != 200 || body != "idle" {
		t.Fatalf("the idle host via B after its move: %d %q", code, body)
	}
	// The busy host moved too (its new tunnel is on B), but its old tunnel on A still carries the WebSocket.
	relaytest.Eventually(t, 20*time.Second, "the busy host on B", func() bool {
		e, err := dir.Lookup(context.Background(), "busy")
		return err == nil && e.Replica == b.ID
	})
	if n := busy.Tunnels(); n != 2 {
		t.Fatalf("the busy host's agent has %d tunnels, want 2 (the old one kept for its WebSocket)", n)
	}
	echoOnce(t, ws, "during")
	select {
	case r := <-drained:
		t.Fatalf("Drain returned (%+v, %v) with a WebSocket open", r.rep, r.err)
	default:
	}

	cancel()
	r := <-drained
	if r.err == nil || !errors.Is(r.err, context.Canceled) {
		t.Fatalf("Drain after its context was cancelled: %v, want context.Canceled", r.err)
	}
	want := relay.DrainReport{Tunnels: 2, Retired: 1, Moved: 1, Cut: 1, ExchangesCut: 1}
	if r.rep != want {
		t.Fatalf("drain report %+v, want %+v", r.rep, want)
	}
	relaytest.Eventually(t, 10*time.Second, "the busy host's old tunnel closed", func() bool { return busy.Tunnels() == 1 })
	ctx2, cancel2 := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel2()
	if _, _, err := ws.Read(ctx2); err == nil {
		t.Fatal("the WebSocket on the cut tunnel still reads")
	}
}

// TestDrainLoneRelayIdleTunnelFirst: on a lone relay (nowhere to move), an idle tunnel retires at once while a
// busy one waits for its exchange, which finishes; then Drain returns with a clean report.
func TestDrainLoneRelayIdleTunnelFirst(t *testing.T) {
	leaks := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, leaks) })
	r := relaytest.StartRelay(t, func(c *relay.Config) { c.DrainJitter = time.Millisecond })
	busy := relaytest.StartHost(t, r.URL, "busy", http.HandlerFunc(wsEcho), nil)
	idle := relaytest.StartHost(t, r.URL, "idle", textHandler("idle"), nil)
	tok := relaytest.ClientToken(t, "c", "busy", "idle")
	ws, _, err := dialWS(t, "ws"+r.URL[len("http"):]+"/hosts/busy/", tok)
	if err != nil {
		t.Fatalf("websocket: %v", err)
	}
	echoOnce(t, ws, "before")

	type result struct {
		rep relay.DrainReport
		err error
	}
	drained := make(chan result, 1)
	go func() {
		rep, err := r.DrainWithReport(context.Background())
		drained <- result{rep, err}
	}()
	relaytest.Eventually(t, 20*time.Second, "the idle tunnel retired", func() bool { return idle.Tunnels() == 0 })
	echoOnce(t, ws, "during")
	if n := busy.Tunnels(); n != 1 {
		t.Fatalf("busy agent tunnels %d, want 1", n)
	}
	select {
	case res := <-drained:
		t.Fatalf("Drain returned (%+v, %v) with a WebSocket open", res.rep, res.err)
	default:
	}
	_ = ws.Close(websocket.StatusNormalClosure, "done")
	res := <-drained
	if res.err != nil {
		t.Fatalf("drain: %v", res.err)
	}
	if want := (relay.DrainReport{Tunnels: 2, Retired: 2}); res.rep != want {
		t.Fatalf("drain report %+v, want %+v", res.rep, want)
	}
	relaytest.Eventually(t, 10*time.Second, "the busy tunnel closed", func() bool { return busy.Tunnels() == 0 })
}

// TestCloseWaitsForRun: Close, called while Run runs and a host is connected, returns only once Run has returned
// and every goroutine the relay started has ended; Run called after Close returns at once; nothing is left behind.
func TestCloseWaitsForRun(t *testing.T) {
	leaks := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, leaks) })
	srv, err := relay.New(relay.Config{Verifier: auth.NewHS256([]byte(relaytest.Secret)), Logger: relaytest.Logger(t),
		FlapWindow: time.Hour}) // an owed offline waits the flap window: Close must end that wait too
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(srv)
	t.Cleanup(ts.Close)
	ran := make(chan error, 1)
	go func() { ran <- srv.Run(context.Background()) }() // never cancelled: Close alone must stop it
	ln := relaytest.StartHost(t, ts.URL, "h", textHandler("up"), nil)
	tok := relaytest.ClientToken(t, "c", "h")
	if code, body := getText(t, ts.URL+"/hosts/h/", tok); code != 200 || body != "up" {
		t.Fatalf("before Close: %d %q", code, body)
	}
	if err := ln.Close(); err != nil { // the host goes: its offline is owed after the flap window
		t.Fatal(err)
	}
	if err := srv.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	select {
	case err := <-ran:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	default:
		t.Fatal("Close returned before Run did")
	}
	if err := srv.Run(context.Background()); err != nil {
		t.Fatalf("Run after Close: %v", err)
	}
	if err := srv.Close(); err != nil {
		t.Fatalf("a second Close: %v", err)
	}
}
