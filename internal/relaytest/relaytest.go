// Package relaytest runs real relays and agents in-process over real loopback sockets, for tests.
package relaytest

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/switchboard-relay/switchboard/agent"
	"github.com/switchboard-relay/switchboard/internal/auth"
	"github.com/switchboard-relay/switchboard/internal/relay"
)

// Secret signs every token the fixtures mint.
const Secret = "relaytest-secret"

// Relay is a running relay.Server behind an httptest.Server.
type Relay struct {
	*relay.Server
	HTTP     *httptest.Server
	URL      string // base URL, http://127.0.0.1:PORT
	Registry *prometheus.Registry
	// MetricsURL is the base URL of the relay's MetricsHandler (/metrics, /healthz, /readyz) on a listener of its
	// own, as `switchboard serve --metrics-listen` runs it; the public URL serves no /metrics.
	MetricsURL string
}

// StartRelay starts a relay with HS256 auth on Secret. mutate, if not nil, adjusts the config before New.
// Everything is stopped in t.Cleanup.
func StartRelay(t testing.TB, mutate func(*relay.Config)) *Relay {
	t.Helper()
	reg := prometheus.NewRegistry()
	cfg := relay.Config{
		Verifier:   auth.NewHS256([]byte(Secret)),
		Logger:     Logger(t),
		Registerer: reg,
		Gatherer:   reg,
	}
	if mutate != nil {
		mutate(&cfg)
	}
	srv, err := relay.New(cfg)
	if err != nil {
		t.Fatalf("relay.New: %v", err)
	}
	ts := httptest.NewUnstartedServer(srv)
	ts.Config.MaxHeaderBytes = 64 << 10
	ts.Start()
	ms := httptest.NewServer(srv.MetricsHandler())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-done
		_ = srv.Close()
		ts.CloseClientConnections()
		ts.Close()
		ms.Close()
	})
	return &Relay{Server: srv, HTTP: ts, URL: ts.URL, Registry: reg, MetricsURL: ms.URL}
}

// HostToken mints a host token for id.
func HostToken(t testing.TB, id string) string {
	t.Helper()
	tok, err := auth.MintHost([]byte(Secret), id, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// ClientToken mints a client token reaching hosts.
func ClientToken(t testing.TB, sub string, hosts ...string) string {
	t.Helper()
	tok, err := auth.MintClient([]byte(Secret), sub, hosts, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// AdminToken mints an admin token for sub.
func AdminToken(t testing.TB, sub string) string {
	t.Helper()
	tok, err := auth.MintAdmin([]byte(Secret), sub, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// StartListener starts an agent.Listener for id against relayURL and waits until its tunnel is up. mutate, if not
// nil, adjusts the config. It is closed in t.Cleanup.
func StartListener(t testing.TB, relayURL, id string, mutate func(*agent.Config)) *agent.Listener {
	t.Helper()
	cfg := agent.Config{
		Relays:     []string{relayURL},
		HostID:     id,
		Token:      HostToken(t, id),
		Logger:     Logger(t).With("side", "agent"),
		MinBackoff: 50 * time.Millisecond,
		MaxBackoff: 200 * time.Millisecond,
	}
	if mutate != nil {
		mutate(&cfg)
	}
	ln, err := agent.Listen(context.Background(), cfg)
	if err != nil {
		t.Fatalf("agent.Listen: %v", err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := ln.WaitUp(ctx); err != nil {
		t.Fatalf("agent %s: tunnel not up: %v", id, err)
	}
	return ln
}

// StartHost serves handler as host id through a tunnel to relayURL (the agent.Listen path).
func StartHost(t testing.TB, relayURL, id string, handler http.Handler, mutate func(*agent.Config)) *agent.Listener {
	t.Helper()
	ln := StartListener(t, relayURL, id, mutate)
	srv := &http.Server{Handler: handler}
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(ln) }()
	t.Cleanup(func() {
		_ = srv.Close()
		_ = ln.Close()
		<-done
	})
	return ln
}

// StartUpstreamHost runs an upstream httptest server with handler and exposes it as host id the way
// `switchboard host` does: agent reverse proxy to the upstream URL. It returns the upstream server.
func StartUpstreamHost(t testing.TB, relayURL, id string, handler http.Handler, fixed http.Header) *httptest.Server {
	t.Helper()
	up := httptest.NewServer(handler)
	t.Cleanup(up.Close)
	u, _ := url.Parse(up.URL)
	StartBridge(t, relayURL, id, u, agent.UpstreamOptions{Fixed: fixed})
	return up
}

// StartBridge exposes upstream as host id through a tunnel to relayURL with the agent's byte bridge (what
// `switchboard host` runs).
func StartBridge(t testing.TB, relayURL, id string, upstream *url.URL, opts agent.UpstreamOptions) *agent.Listener {
	t.Helper()
	ln := StartListener(t, relayURL, id, nil)
	if opts.Logger == nil {
		opts.Logger = Logger(t).With("side", "bridge")
	}
	b, err := agent.NewBridge(upstream, opts)
	if err != nil {
		t.Fatalf("agent.NewBridge: %v", err)
	}
	done := make(chan struct{})
	go func() { defer close(done); _ = b.Serve(ln) }()
	t.Cleanup(func() {
		_ = ln.Close()
		<-done
		_ = b.Close()
	})
	return ln
}

// Do sends method to url with a bearer token (if not empty) and returns the response.
func Do(t testing.TB, method, url, token string) *http.Response {
	t.Helper()
	return DoBody(t, method, url, token, "")
}

// DoBody is Do with a request body (none if empty).
func DoBody(t testing.TB, method, url, token, body string) *http.Response {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	return resp
}

// Logger returns a JSON logger writing to the test's output.
func Logger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewJSONHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// Eventually polls cond every 10 ms until it is true or timeout passes.
func Eventually(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
