package relay_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/switchboard-relay/switchboard/internal/relay"
	"github.com/switchboard-relay/switchboard/internal/relaytest"
	"github.com/switchboard-relay/switchboard/internal/tcpstream"
	"github.com/switchboard-relay/switchboard/internal/tunnel"
)

// seriesValue returns the counter whose labels include every pair of want.
func seriesValue(t *testing.T, r *relaytest.Relay, name string, want map[string]string) float64 {
	t.Helper()
	mfs, err := r.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			n := 0
			for _, l := range m.GetLabel() {
				if v, ok := want[l.GetName()]; ok && v == l.GetValue() {
					n++
				}
			}
			if n == len(want) {
				sum += m.GetCounter().GetValue()
			}
		}
	}
	return sum
}

// roundTrip sends msg, half-closes, and reads the whole answer until the service's own close.
func roundTrip(t *testing.T, c *relaytest.TCPClient, msg string) string {
	t.Helper()
	if _, err := c.Conn.Write([]byte(msg)); err != nil {
		t.Fatalf("write: %v", err)
	}
	if err := c.Conn.CloseWrite(); err != nil {
		t.Fatalf("half-close: %v", err)
	}
	got, err := io.ReadAll(c.Conn)
	if err != nil {
		t.Fatalf("read answer: %v", err)
	}
	return string(got)
}

// TestTCPHalfCloseBothWays: the service reads until the client's FIN and only then answers; the client reads the
// answer until the service's FIN. Both ends see a complete stream, metrics count it by outcome and bytes, and the
// services appear in the host's metadata.
func TestTCPHalfCloseBothWays(t *testing.T) {
	r := relaytest.StartRelay(t, nil)
	addr := relaytest.StartTCPServer(t, relaytest.EchoAfterEOF)
	relaytest.StartTCPHost(t, r.URL, "h1", map[string]string{"echo": addr, "ssh": "127.0.0.1:1"}, nil)
	tok := relaytest.ClientToken(t, "alice", "h1")

	c, err := relaytest.DialTCP(t, r.URL, "h1", "echo", tok)
	if err != nil {
		t.Fatal(err)
	}
	payload := strings.Repeat("0123456789", 20000) // 200 kB: several messages
	if got := roundTrip(t, c, payload); got != "got:"+payload {
		t.Fatalf("answer of %d bytes, want %d", len(got), len("got:")+len(payload))
	}
	res, err := c.Wait()
	if err != nil {
		t.Fatalf("bridge: %v", err)
	}
	if res.Sent != int64(len(payload)) || res.Received != int64(len(payload)+4) {
		t.Fatalf("bridge counted %+v", res)
	}
	relaytest.Eventually(t, 10*time.Second, "tcp stream counted", func() bool {
		return seriesValue(t, r, "switchboard_exchanges_total", map[string]string{"kind": "tcp", "outcome": "ok"}) == 1
	})
	if n := seriesValue(t, r, "switchboard_tcp_bytes_total", map[string]string{"direction": "to_host"}); n < float64(len(payload)) {
		t.Fatalf("tcp_bytes_total{to_host} = %v, want at least %d", n, len(payload))
	}

	resp := relaytest.Do(t, "GET", r.URL+"/v1/hosts/h1", tok)
	defer resp.Body.Close()
	var v struct {
		Metadata struct {
			Labels map[string]string `json:"labels"`
		} `json:"metadata"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&v); err != nil {
		t.Fatal(err)
	}
	if got := v.Metadata.Labels[tunnel.TCPLabel]; got != "echo,ssh" {
		t.Fatalf("label %s = %q, want echo,ssh", tunnel.TCPLabel, got)
	}
}

// TestTCPServiceHalfClosesFirst: the service speaks first and half-closes, then keeps reading what the client
// sends after that, as a protocol with a server banner and a client that talks last would.
func TestTCPServiceHalfClosesFirst(t *testing.T) {
	r := relaytest.StartRelay(t, nil)
	addr := relaytest.StartTCPServer(t, func(c *net.TCPConn) {
		_, _ = c.Write([]byte("banner"))
		_ = c.CloseWrite()
		b, _ := io.ReadAll(c)
		if string(b) != "late words" {
			t.Errorf("service read %q after its half-close", b)
		}
	})
	relaytest.StartTCPHost(t, r.URL, "h1", map[string]string{"svc": addr}, nil)
	c, err := relaytest.DialTCP(t, r.URL, "h1", "svc", relaytest.ClientToken(t, "alice", "h1"))
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(c.Conn)
	if err != nil || string(got) != "banner" {
		t.Fatalf("read %q, %v; want the banner then EOF", got, err)
	}
	if _, err := c.Conn.Write([]byte("late words")); err != nil {
		t.Fatalf("write after the service's half-close: %v", err)
	}
	_ = c.Conn.CloseWrite()
	if _, err := c.Wait(); err != nil {
		t.Fatalf("bridge: %v", err)
	}
}

// TestTCPRefusals: each refusal reaches the client as a DialError with a distinct status and code.
func TestTCPRefusals(t *testing.T) {
	r := relaytest.StartRelay(t, nil)
	addr := relaytest.StartTCPServer(t, relaytest.EchoAfterEOF)
	relaytest.StartTCPHost(t, r.URL, "h1", map[string]string{"echo": addr, "dead": "127.0.0.1:1"}, nil)
	alice := relaytest.ClientToken(t, "alice", "h1", "h2")
	for _, tc := range []struct {
		name, host, service, token string
		status                     int
		code                       string
	}{
		{"offline host", "h2", "echo", alice, 503, "host_offline"},
		{"unknown service", "h1", "pg", alice, 404, "unknown_service"},
		{"bad token", "h1", "echo", "nope", 401, "unauthorized"},
		{"host not in token", "h1", "echo", relaytest.ClientToken(t, "bob", "other"), 403, "forbidden"},
		{"service not in token", "h1", "echo", relaytest.ServiceToken(t, "carol", []string{"h1"}, []string{"ssh"}), 403, "service_forbidden"},
		{"service unreachable", "h1", "dead", alice, 502, "service_unreachable"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := relaytest.DialTCP(t, r.URL, tc.host, tc.service, tc.token)
			var de *tcpstream.DialError
			if !errors.As(err, &de) || de.Status != tc.status || de.Code != tc.code {
				t.Fatalf("got %v, want %d %s", err, tc.status, tc.code)
			}
			if msg := err.Error(); !strings.Contains(msg, tc.host) || !strings.Contains(msg, tc.code) {
				t.Fatalf("message %q does not name the host and the code", msg)
			}
		})
	}
	// A token limited to services opens them, and reaches no HTTP.
	svc := relaytest.ServiceToken(t, "dave", []string{"h1"}, []string{"echo"})
	c, err := relaytest.DialTCP(t, r.URL, "h1", "echo", svc)
	if err != nil {
		t.Fatalf("service token: %v", err)
	}
	if got := roundTrip(t, c, "x"); got != "got:x" {
		t.Fatalf("got %q", got)
	}
	resp := relaytest.Do(t, "GET", r.URL+"/hosts/h1/", svc)
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("HTTP with a services token: %d, want 403", resp.StatusCode)
	}
	// The reserved path is WebSocket only.
	resp = relaytest.Do(t, "GET", r.URL+"/hosts/h1"+tunnel.TCPPathPrefix+"echo", alice)
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("plain GET of a TCP service: %d, want 400", resp.StatusCode)
	}
}

// TestTCPClientGoneEndsService: a client that vanishes mid-stream ends the service's connection.
func TestTCPClientGoneEndsService(t *testing.T) {
	r := relaytest.StartRelay(t, nil)
	ended := make(chan error, 1)
	addr := relaytest.StartTCPServer(t, func(c *net.TCPConn) {
		_, _ = c.Write([]byte("hi"))
		_, err := io.Copy(io.Discard, c)
		ended <- err
	})
	relaytest.StartTCPHost(t, r.URL, "h1", map[string]string{"svc": addr}, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	ws, err := tcpstream.Dial(ctx, r.URL, "h1", "svc", relaytest.ClientToken(t, "alice", "h1"), tcpstream.DialOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := ws.Read(ctx); err != nil {
		t.Fatalf("first bytes: %v", err)
	}
	_ = ws.CloseNow() // the client's process dies: no close frame, no EOF message
	select {
	case <-ended:
	case <-ctx.Done():
		t.Fatal("the service's connection did not end after the client vanished")
	}
}

// TestTCPHostGoneEndsClient: an agent that goes away mid-stream ends the client's connection.
func TestTCPHostGoneEndsClient(t *testing.T) {
	r := relaytest.StartRelay(t, nil)
	addr := relaytest.StartTCPServer(t, func(c *net.TCPConn) {
		_, _ = c.Write([]byte("hi"))
		_, _ = io.Copy(io.Discard, c)
	})
	ln := relaytest.StartTCPHost(t, r.URL, "h1", map[string]string{"svc": addr}, nil)
	c, err := relaytest.DialTCP(t, r.URL, "h1", "svc", relaytest.ClientToken(t, "alice", "h1"))
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 2)
	if _, err := io.ReadFull(c.Conn, buf); err != nil {
		t.Fatal(err)
	}
	_ = ln.Close()
	_, _ = io.Copy(io.Discard, c.Conn) // returns once the client's side is closed
	if _, err := c.Wait(); err == nil {
		t.Fatal("a stream whose host vanished ended as complete")
	}
}

// TestTCPStreamLimit: TCP streams count against the per-host stream limit like every exchange.
func TestTCPStreamLimit(t *testing.T) {
	r := relaytest.StartRelay(t, func(c *relay.Config) { c.MaxStreamsPerHost = 1 })
	addr := relaytest.StartTCPServer(t, func(c *net.TCPConn) { _, _ = io.Copy(io.Discard, c) })
	relaytest.StartTCPHost(t, r.URL, "h1", map[string]string{"svc": addr}, nil)
	tok := relaytest.ClientToken(t, "alice", "h1")
	if _, err := relaytest.DialTCP(t, r.URL, "h1", "svc", tok); err != nil {
		t.Fatal(err)
	}
	_, err := relaytest.DialTCP(t, r.URL, "h1", "svc", tok)
	var de *tcpstream.DialError
	if !errors.As(err, &de) || de.Status != http.StatusTooManyRequests {
		t.Fatalf("second stream: %v, want 429", err)
	}
}

// TestTCPDrainWaitsForStream: Drain does not return while a TCP stream is open (it cannot move), and returns once
// the stream has ended; the stream kept working meanwhile.
func TestTCPDrainWaitsForStream(t *testing.T) {
	r := relaytest.StartRelay(t, func(c *relay.Config) { c.DrainJitter = time.Millisecond })
	addr := relaytest.StartTCPServer(t, relaytest.EchoAfterEOF)
	relaytest.StartTCPHost(t, r.URL, "h1", map[string]string{"echo": addr}, nil)
	c, err := relaytest.DialTCP(t, r.URL, "h1", "echo", relaytest.ClientToken(t, "alice", "h1"))
	if err != nil {
		t.Fatal(err)
	}
	drained := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		drained <- r.Drain(ctx)
	}()
	relaytest.Eventually(t, 10*time.Second, "relay draining", r.Draining)
	if _, err := c.Conn.Write(bytes.Repeat([]byte("d"), 1000)); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-drained:
		t.Fatalf("drain returned with a TCP stream open: %v", err)
	default:
	}
	if got := roundTrip(t, c, "!"); got != "got:"+strings.Repeat("d", 1000)+"!" {
		t.Fatalf("stream during drain answered %d bytes", len(got))
	}
	if err := <-drained; err != nil {
		t.Fatalf("drain after the stream ended: %v", err)
	}
}

// TestTCPThroughSecondReplica: a client of replica B reaches a TCP service whose host holds its tunnel on A.
func TestTCPThroughSecondReplica(t *testing.T) {
	a, b, _ := startPair(t, nil)
	addr := relaytest.StartTCPServer(t, relaytest.EchoAfterEOF)
	relaytest.StartTCPHost(t, a.URL, "h1", map[string]string{"echo": addr}, nil)
	tok := relaytest.ClientToken(t, "alice", "h1")
	c, err := relaytest.DialTCP(t, b.URL, "h1", "echo", tok)
	if err != nil {
		t.Fatal(err)
	}
	payload := strings.Repeat("b", 300000)
	if got := roundTrip(t, c, payload); got != "got:"+payload {
		t.Fatalf("answer via B: %d bytes", len(got))
	}
	_, err = relaytest.DialTCP(t, b.URL, "h1", "echo", relaytest.ServiceToken(t, "bob", []string{"h1"}, []string{"ssh"}))
	var de *tcpstream.DialError
	if !errors.As(err, &de) || de.Code != "service_forbidden" {
		t.Fatalf("services claim via B: %v", err)
	}
}

// TestTCPStalledClientCut: a client that takes no bytes while the service sends is cut after the stall timeout,
// and the service's connection ends with it.
func TestTCPStalledClientCut(t *testing.T) {
	r := relaytest.StartRelay(t, func(c *relay.Config) { c.StallTimeout = 300 * time.Millisecond })
	ended := make(chan struct{})
	addr := relaytest.StartTCPServer(t, func(c *net.TCPConn) {
		defer close(ended)
		buf := make([]byte, 64<<10)
		for {
			if _, err := c.Write(buf); err != nil {
				return
			}
		}
	})
	relaytest.StartTCPHost(t, r.URL, "h1", map[string]string{"flood": addr}, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	ws, err := tcpstream.Dial(ctx, r.URL, "h1", "flood", relaytest.ClientToken(t, "alice", "h1"), tcpstream.DialOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer ws.CloseNow()
	// The client reads nothing.
	select {
	case <-ended:
	case <-ctx.Done():
		t.Fatal("the service kept sending to a client that reads nothing")
	}
	if n := seriesValue(t, r, "switchboard_bound_cuts_total", map[string]string{"reason": "stalled_client"}); n < 1 {
		t.Fatalf("bound_cuts_total{stalled_client} = %v, want at least 1", n)
	}
}
