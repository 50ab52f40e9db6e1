package relay_test

import (
	"context"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/switchboard-relay/switchboard/agent"
	"github.com/switchboard-relay/switchboard/internal/directory"
	"github.com/switchboard-relay/switchboard/internal/redistest"
	"github.com/switchboard-relay/switchboard/internal/relay"
	"github.com/switchboard-relay/switchboard/internal/relaytest"
)

// faultProxy is a TCP proxy on loopback that can blackhole its traffic: while blackholed, bytes already read are
// held back, nothing more is forwarded, and new connections are accepted but not connected onward — what a
// network partition looks like to a client (no reset, no answer, only timeouts).
type faultProxy struct {
	ln     net.Listener
	target string

	mu      sync.Mutex
	holed   bool
	resumed chan struct{} // closed when a blackhole ends
	open    map[net.Conn]struct{}
	wg      sync.WaitGroup
}

func startFaultProxy(t *testing.T, target string) *faultProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &faultProxy{ln: ln, target: target, resumed: make(chan struct{}), open: make(map[net.Conn]struct{})}
	close(p.resumed)
	p.wg.Go(p.accept)
	t.Cleanup(func() {
		_ = ln.Close()
		p.resume()
		p.mu.Lock()
		for c := range p.open {
			_ = c.Close()
		}
		p.mu.Unlock()
		p.wg.Wait()
	})
	return p
}

func (p *faultProxy) Addr() string { return p.ln.Addr().String() }

// blackhole stops all traffic until resume.
func (p *faultProxy) blackhole() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.holed {
		p.holed = true
		p.resumed = make(chan struct{})
	}
}

// resume lets traffic flow again, held bytes first.
func (p *faultProxy) resume() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.holed {
		p.holed = false
		close(p.resumed)
	}
}

// gate returns a channel that is closed while traffic may flow.
func (p *faultProxy) gate() <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.resumed
}

func (p *faultProxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.open == nil {
		return false
	}
	p.open[c] = struct{}{}
	return true
}

func (p *faultProxy) accept() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.track(c)
		p.wg.Go(func() { p.serve(c) })
	}
}

func (p *faultProxy) serve(c net.Conn) {
	defer c.Close()
	<-p.gate() // a connection made during a blackhole goes nowhere until it ends
	u, err := net.Dial("tcp", p.target)
	if err != nil {
		return
	}
	p.track(u)
	defer u.Close()
	done := make(chan struct{}, 2)
	go func() { p.copy(u, c); done <- struct{}{} }()
	go func() { p.copy(c, u); done <- struct{}{} }()
	<-done
	_ = c.Close()
	_ = u.Close()
	<-done
}

// copy forwards src to dst, holding each read back while the proxy is blackholed.
func (p *faultProxy) copy(dst, src net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			<-p.gate()
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// TestClusterRedisBlackholed: Redis stops answering (a partition, not a refused connection) for longer than the
// replica lease. Local routing and new tunnels keep working, a replica finds a host on a peer by asking, and once
// Redis answers again the directory converges on the live tunnels, the host that connected meanwhile included.
func TestClusterRedisBlackholed(t *testing.T) {
	addr, _ := redistest.Start(t)
	px := startFaultProxy(t, addr)
	prefix := fmt.Sprintf("c%d:", clusterSeq.Add(1))
	a := relaytest.StartRedisReplica(t, []string{px.Addr()}, prefix, "A", nil)
	b := relaytest.StartRedisReplica(t, []string{px.Addr()}, prefix, "B", nil)
	listedByA := histogramCount(t, a.Relay, "switchboard_directory_op_seconds", "list_peers") // B is advertised now
	relaytest.StartHost(t, a.URL, "before", textHandler("before"), nil)
	tok := relaytest.ClientToken(t, "c", "before", "during")
	if code, body := getText(t, b.URL+"/hosts/before/", tok); code != 200 || body != "before" {
		t.Fatalf("via B with Redis up: %d %q", code, body)
	}
	relaytest.Eventually(t, 10*time.Second, "A listed its peers since B started", func() bool {
		return histogramCount(t, a.Relay, "switchboard_directory_op_seconds", "list_peers") > listedByA+1
	})

	px.blackhole()
	// A tunnel opened once B knows the directory is down is accepted locally without asking it (a claim would only
	// wait for its timeout), and written behind.
	waitDirUp(t, false, b)
	claims := histogramCount(t, b.Relay, "switchboard_directory_op_seconds", directory.OpClaim)
	relaytest.StartHost(t, b.URL, "during", textHandler("during"), func(c *agent.Config) { c.Relays = []string{b.URL} })
	if got := histogramCount(t, b.Relay, "switchboard_directory_op_seconds", directory.OpClaim); got != claims {
		t.Fatalf("B asked the directory known to be down for %d claims", got-claims)
	}
	for _, tc := range []struct{ via, host string }{{a.URL, "before"}, {b.URL, "during"}} {
		relaytest.Eventually(t, 15*time.Second, tc.host+" served locally while Redis is blackholed", func() bool {
			code, body := getText(t, tc.via+"/hosts/"+tc.host+"/", tok)
			return code == 200 && body == tc.host
		})
	}
	relaytest.Eventually(t, 15*time.Second, "host on B reached via A by asking peers while Redis is blackholed", func() bool {
		code, body := getText(t, a.URL+"/hosts/during/", tok)
		return code == 200 && body == "during"
	})
	time.Sleep(relaytest.ReplicaLease) // past the lease: Redis, once back, has let both replicas' leases expire
	px.resume()

	check, err := directory.NewRedis(context.Background(), directory.RedisConfig{Addrs: []string{addr}, Replica: "check", Prefix: prefix})
	if err != nil {
		t.Fatal(err)
	}
	defer check.Close()
	for host, owner := range map[string]string{"before": "A", "during": "B"} {
		relaytest.Eventually(t, 15*time.Second, host+" owned by "+owner+" in Redis after the blackhole", func() bool {
			e, err := check.Lookup(context.Background(), host)
			return err == nil && e.Replica == owner
		})
	}
	for _, via := range []string{a.URL, b.URL} {
		for _, host := range []string{"before", "during"} {
			if code, body := getText(t, via+"/hosts/"+host+"/", tok); code != 200 || body != host {
				t.Fatalf("%s via %s after the blackhole: %d %q", host, via, code, body)
			}
		}
	}
}

// TestEventsShortRedisOutage: Redis stops answering for less than the replica lease. A host that connects meanwhile
// is accepted locally and announced online once its entry is written behind; a host that disconnects meanwhile is
// released once Redis answers and announced offline after the flap window. Nobody is left reading the wrong state.
func TestEventsShortRedisOutage(t *testing.T) {
	addr, _ := redistest.Start(t)
	px := startFaultProxy(t, addr)
	prefix := fmt.Sprintf("ev%d:", clusterSeq.Add(1))
	const lease = 10 * time.Second // longer than the outage: nobody is taken for dead
	flap := func(c *relay.Config) { c.FlapWindow = time.Second }
	a := startEventReplica(t, px.Addr(), prefix, "A", lease, flap)
	b := startEventReplica(t, px.Addr(), prefix, "B", lease, flap)
	tok := relaytest.ClientToken(t, "c", "*")
	s := subscribe(t, b.URL, tok, "")
	onA := func(c *agent.Config) { c.Relays = []string{a.URL} }
	gone := relaytest.StartHost(t, a.URL, "gone", textHandler("gone"), onA)
	evs := s.expect(t, 10*time.Second, "online gone")

	owned := func(id string) bool {
		for _, e := range a.Server.Owned() {
			if e.HostID == id {
				return true
			}
		}
		return false
	}
	px.blackhole()
	start := time.Now()
	relaytest.StartHost(t, a.URL, "new", textHandler("new"), onA)
	relaytest.Eventually(t, 10*time.Second, "new served by A while Redis is blackholed", func() bool {
		code, body := getText(t, a.URL+"/hosts/new/", tok)
		return code == 200 && body == "new"
	})
	_ = gone.Close()
	relaytest.Eventually(t, 10*time.Second, "gone's tunnel closed on A", func() bool { return !owned("gone") })
	time.Sleep(1500 * time.Millisecond) // the release's directory call times out (1 s)
	if d := time.Since(start); d > lease/2 {
		t.Fatalf("the outage lasted %s, too close to the lease (%s) for this test", d, lease)
	}
	px.resume()

	// Both owed events arrive, in either order (written behind and released by the same loop).
	evs = append(evs, s.expectAnyOrder(t, 15*time.Second, "online new", "offline gone")...)
	checkSeqs(t, evs)
	for id, online := range map[string]bool{"new": true, "gone": false} {
		if code, h := getHost(t, b.Relay, id, tok); code != 200 || h.Online != online {
			t.Fatalf("%s via B after the outage: %d online=%v, want online=%v", id, code, h.Online, online)
		}
	}
	if code, body := getText(t, b.URL+"/hosts/new/", tok); code != 200 || body != "new" {
		t.Fatalf("new via B after the outage: %d %q", code, body)
	}
	s.quiet(t, 2*time.Second) // exactly once: no second online, no offline for the live host
}
