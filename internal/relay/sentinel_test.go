package relay_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/switchboard-relay/switchboard/agent"
	"github.com/switchboard-relay/switchboard/internal/directory"
	"github.com/switchboard-relay/switchboard/internal/redistest"
	"github.com/switchboard-relay/switchboard/internal/relaytest"
)

// TestClusterSentinelFailover: two replicas on a directory behind real Redis Sentinels. A host registers after the
// primary stopped replicating, so its entry is acknowledged by the primary and never reaches the replica; then the
// primary is killed and Sentinel promotes the replica. The replicas follow the promotion, re-assert what it lost,
// and every host is listed and reachable through either replica again, without any agent reconnecting. Requests
// made during the failover are served too: replicas ask their peers while the directory is unreachable, and the
// leases outlive the failover.
func TestClusterSentinelFailover(t *testing.T) {
	g := redistest.StartSentinelGroup(t)
	prefix := fmt.Sprintf("sen%d:", clusterSeq.Add(1))
	start := func(id string) *relaytest.Replica {
		return relaytest.StartRedisReplicaWith(t, directory.RedisConfig{
			Addrs:    g.Addrs,
			Sentinel: directory.SentinelConfig{Master: redistest.SentinelMaster},
			Prefix:   prefix,
			Replica:  id,
			// Longer than the failover, as operations.md asks: leases survive it, and only the last writes are
			// lost. (With a shorter lease every entry reads offline from the promotion until the next heartbeat.)
			Lease: 30 * time.Second,
		}, nil)
	}
	a, b := start("A"), start("B")
	// Both are advertised now; wait until each has listed its peers since, as it does every few seconds, so that
	// each can ask the other while the directory is down.
	for _, rep := range []*relaytest.Replica{a, b} {
		since := listPeersCount(t, rep)
		relaytest.Eventually(t, 30*time.Second, rep.ID+" lists its peers", func() bool {
			return listPeersCount(t, rep) > since
		})
	}

	// Each agent counts its connections to the relay.
	dials := map[string]*atomic.Int64{}
	host := func(rep *relaytest.Replica, id string) {
		n := new(atomic.Int64)
		dials[id] = n
		relaytest.StartHost(t, rep.URL, id, textHandler("hi "+id), func(c *agent.Config) {
			c.Dial = func(ctx context.Context, network, addr string) (net.Conn, error) {
				n.Add(1)
				var d net.Dialer
				return d.DialContext(ctx, network, addr)
			}
		})
	}
	host(a, "h1")
	host(b, "h2")
	tok := relaytest.ClientToken(t, "c", "*")
	reach := func(rep *relaytest.Replica, id string) bool {
		code, body := getText(t, rep.URL+"/hosts/"+id+"/", tok)
		return code == 200 && body == "hi "+id
	}
	for _, c := range []struct {
		rep *relaytest.Replica
		id  string
	}{{a, "h2"}, {b, "h1"}} {
		if !reach(c.rep, c.id) {
			t.Fatalf("before the failover: %s not reachable through %s", c.id, c.rep.ID)
		}
	}

	old := g.Primary()
	if n, err := g.Do(old, "wait", "1", "0"); err != nil || n != "(integer) 1" {
		t.Fatalf("WAIT for the replica: %q, %v", n, err)
	}
	// From now on the primary alone holds what it acknowledges: h3's entry is never replicated.
	g.CutReplication()
	host(a, "h3")
	relaytest.Eventually(t, 30*time.Second, "h3's entry on the old primary", func() bool {
		n, err := g.Do(old, "exists", prefix+"{h3}:host")
		return err == nil && n == "(integer) 1"
	})

	// Clients keep calling across replicas through the failover.
	stop := make(chan struct{})
	type result struct {
		ok, failed int
		last       string
	}
	results := make(chan result, 1)
	go func() {
		var r result
		for {
			select {
			case <-stop:
				results <- r
				return
			default:
			}
			for _, c := range []struct {
				rep *relaytest.Replica
				id  string
			}{{a, "h2"}, {b, "h1"}} {
				resp, err := http.Get(c.rep.URL + "/hosts/" + c.id + "/?access_token=" + tok)
				if err != nil {
					r.failed++
					r.last = err.Error()
					continue
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode == 200 && string(body) == "hi "+c.id {
					r.ok++
				} else {
					r.failed++
					r.last = fmt.Sprintf("%s via %s: %d %s", c.id, c.rep.ID, resp.StatusCode, body)
				}
			}
		}
	}()

	killed := time.Now()
	g.KillPrimary()
	now := g.WaitFailover(old)
	t.Logf("sentinels promoted %s %v after killing %s", now, time.Since(killed).Round(time.Millisecond), old)

	relaytest.Eventually(t, time.Minute, "every host listed and reachable through both replicas", func() bool {
		for _, rep := range []*relaytest.Replica{a, b} {
			code, body := getText(t, rep.URL+"/v1/hosts?online=true", tok)
			if code != 200 || strings.Count(body, `"online":true`) != 3 {
				return false
			}
			for _, id := range []string{"h1", "h2", "h3"} {
				if !reach(rep, id) {
					return false
				}
			}
		}
		return true
	})
	t.Logf("every host listed and reachable through both replicas %v after the kill",
		time.Since(killed).Round(time.Millisecond))
	close(stop)
	r := <-results
	t.Logf("requests during the failover: %d ok, %d failed (last: %s)", r.ok, r.failed, r.last)
	if r.ok == 0 || r.failed != 0 {
		t.Fatalf("requests during the failover: %d ok, %d failed (last: %s)", r.ok, r.failed, r.last)
	}

	// The promoted primary holds every entry, re-asserted or replicated.
	for _, id := range []string{"h1", "h2", "h3"} {
		if n, err := g.Do(now, "exists", prefix+"{"+id+"}:host"); err != nil || n != "(integer) 1" {
			t.Fatalf("%s on the promoted primary: %q, %v", id, n, err)
		}
	}
	// No host reconnected.
	for id, n := range dials {
		if got := n.Load(); got != 1 {
			t.Fatalf("agent %s dialled the relay %d times, want 1", id, got)
		}
	}
	if n := metricValue(t, a.Relay, "switchboard_tunnel_registrations_total", "outcome", "ok"); n != 2 {
		t.Fatalf("A registrations = %v, want 2", n)
	}
	if n := metricValue(t, b.Relay, "switchboard_tunnel_registrations_total", "outcome", "ok"); n != 1 {
		t.Fatalf("B registrations = %v, want 1", n)
	}
}

// listPeersCount returns how many times rep has listed its peers in the directory.
func listPeersCount(t *testing.T, rep *relaytest.Replica) uint64 {
	t.Helper()
	mfs, err := rep.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "switchboard_directory_op_seconds" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "op" && l.GetValue() == "list_peers" {
					return m.GetHistogram().GetSampleCount()
				}
			}
		}
	}
	return 0
}
