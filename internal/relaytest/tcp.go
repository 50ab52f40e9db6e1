package relaytest

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/switchboard-relay/switchboard/agent"
	"github.com/switchboard-relay/switchboard/internal/auth"
	"github.com/switchboard-relay/switchboard/internal/tcpstream"
	"github.com/switchboard-relay/switchboard/internal/tunnel"
)

// StartTCPHost publishes services (name → host:port) as host id through a tunnel to relayURL, as
// `switchboard host --tcp` does, with next serving every other request (nil for none).
func StartTCPHost(t testing.TB, relayURL, id string, services map[string]string, next http.Handler) *agent.Listener {
	t.Helper()
	h, err := agent.NewTCPHandler(services, next, Logger(t).With("side", "agent"))
	if err != nil {
		t.Fatalf("agent.NewTCPHandler: %v", err)
	}
	ln := StartHost(t, relayURL, id, h, func(c *agent.Config) {
		c.Labels = map[string]string{tunnel.TCPLabel: agent.TCPLabelValue(services)}
	})
	t.Cleanup(func() { _ = ln.Close(); h.Wait() })
	return ln
}

// ServiceToken mints a client token reaching hosts, limited to the TCP services given.
func ServiceToken(t testing.TB, sub string, hosts, services []string) string {
	t.Helper()
	tok, err := auth.MintClientServices([]byte(Secret), sub, hosts, services, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// TCPClient is a client-side stream to a host's TCP service: Conn is a real loopback TCP connection whose other
// end is bridged through the relay, as `switchboard forward` does.
type TCPClient struct {
	Conn *net.TCPConn
	done chan struct{}
	err  error
	res  tcpstream.Result
}

// Wait waits for the bridge to end and returns its result.
func (c *TCPClient) Wait() (tcpstream.Result, error) {
	<-c.done
	return c.res, c.err
}

// DialTCP opens host id's service through relayURL with token and returns the local end of the bridged stream.
// A refusal is returned as tcpstream.Dial's error. The bridge is waited for in t.Cleanup.
func DialTCP(t testing.TB, relayURL, id, service, token string) (*TCPClient, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	ws, err := tcpstream.Dial(ctx, relayURL, id, service, token, tcpstream.DialOptions{})
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var inner net.Conn
	var wg sync.WaitGroup
	wg.Go(func() { inner, _ = ln.Accept() })
	outer, err := net.Dial("tcp", ln.Addr().String())
	wg.Wait()
	if err != nil || inner == nil {
		t.Fatalf("loopback pair: %v", errors.Join(err, errors.New("accept failed")))
	}
	c := &TCPClient{Conn: outer.(*net.TCPConn), done: make(chan struct{})}
	go func() {
		defer close(c.done)
		c.res, c.err = tcpstream.Bridge(context.Background(), ws, inner.(*net.TCPConn))
	}()
	t.Cleanup(func() { _ = c.Conn.Close(); <-c.done })
	return c, nil
}

// StartTCPServer runs a loopback TCP server that hands each connection to serve, and returns its address. Every
// connection's goroutine is waited for in t.Cleanup.
func StartTCPServer(t testing.TB, serve func(*net.TCPConn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() { defer c.Close(); serve(c.(*net.TCPConn)) })
		}
	})
	t.Cleanup(func() { _ = ln.Close(); wg.Wait() })
	return ln.Addr().String()
}

// EchoAfterEOF serves a connection by reading everything until the client's half-close, then answering
// "got:"+what it read and closing: it proves that a FIN travels both ways.
func EchoAfterEOF(c *net.TCPConn) {
	b, err := io.ReadAll(c)
	if err != nil {
		return
	}
	_, _ = c.Write(append([]byte("got:"), b...))
}
