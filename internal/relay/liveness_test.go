package relay_test

import (
	"net"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/switchboard-relay/switchboard/agent"
	"github.com/switchboard-relay/switchboard/internal/relay"
	"github.com/switchboard-relay/switchboard/internal/relaytest"
)

func TestBlackholedHostIsRemovedWithinThreePings(t *testing.T) {
	const ping = 100 * time.Millisecond
	r := relaytest.StartRelay(t, func(c *relay.Config) { c.PingInterval = ping })
	u, _ := url.Parse(r.URL)
	var proxies []*silencer
	var mu sync.Mutex
	var refuse atomic.Bool
	front := startSilencingProxy(t, u.Host, &refuse, func(s *silencer) { mu.Lock(); proxies = append(proxies, s); mu.Unlock() })
	ln := relaytest.StartHost(t, "http://"+front, "h", echoPath, func(c *agent.Config) { c.PingInterval = ping })
	tok := relaytest.ClientToken(t, "c", "h")
	if code, _ := getText(t, r.URL+"/hosts/h/", tok); code != 200 {
		t.Fatalf("before: %d", code)
	}
	refuse.Store(true) // the agent cannot come back until we say so
	mu.Lock()
	for _, s := range proxies {
		s.silence()
	}
	mu.Unlock()
	silenced := time.Now()
	relaytest.Eventually(t, 5*time.Second, "the relay to drop the silent tunnel", func() bool {
		code, body := getText(t, r.URL+"/v1/hosts/h", tok)
		return code == 200 && strings.Contains(body, `"online":false`)
	})
	t.Logf("silent tunnel removed after %v (ping interval %v)", time.Since(silenced), ping)
	relaytest.Eventually(t, 5*time.Second, "the agent to notice the silence", func() bool { return ln.Tunnels() == 0 })
	refuse.Store(false)
	// The agent notices too, reconnects through a fresh (healthy) connection, and the host is back.
	relaytest.Eventually(t, 10*time.Second, "the agent to reconnect", func() bool {
		code, _ := getText(t, r.URL+"/hosts/h/", tok)
		return code == 200
	})
	_ = ln
}

// silencer is one proxied connection pair that can be silenced.
type silencer struct {
	quiet atomic.Bool
}

func (s *silencer) silence() { s.quiet.Store(true) }

// startSilencingProxy forwards connections to target; each connection pair is reported to onConn and can be
// silenced: from then on it forwards nothing in either direction but stays open (no FIN, no RST).
// While refuse is set, new connections are closed at once.
func startSilencingProxy(t *testing.T, target string, refuse *atomic.Bool, onConn func(*silencer)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			if refuse.Load() {
				_ = c.Close()
				continue
			}
			up, err := net.Dial("tcp", target)
			if err != nil {
				_ = c.Close()
				continue
			}
			mu.Lock()
			conns = append(conns, c, up)
			mu.Unlock()
			s := &silencer{}
			onConn(s)
			pipe := func(dst, src net.Conn) {
				buf := make([]byte, 32<<10)
				for {
					n, err := src.Read(buf)
					if n > 0 && !s.quiet.Load() {
						if _, werr := dst.Write(buf[:n]); werr != nil {
							return
						}
					}
					if err != nil {
						if !s.quiet.Load() {
							_ = dst.Close()
						}
						return
					}
				}
			}
			wg.Go(func() { pipe(up, c) })
			wg.Go(func() { pipe(c, up) })
		}
	})
	t.Cleanup(func() {
		_ = ln.Close()
		mu.Lock()
		for _, c := range conns {
			_ = c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return ln.Addr().String()
}
