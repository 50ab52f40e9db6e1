package relay_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/redis/rueidis"

	"github.com/switchboard-relay/switchboard/internal/directory"
	"github.com/switchboard-relay/switchboard/internal/redistest"
	"github.com/switchboard-relay/switchboard/internal/relaytest"
)

// Tests of directory outages and compound faults (docs/scaling.md, failure table): three real replicas on a real
// Redis, hosts on one of them, Redis stopped, restarted empty, flushed or cut off from one replica.

// trio is three replicas on one Redis, with hosts h1 and h2 on A, and a client token for every host.
type trio struct {
	rs      *redistest.Server
	prefix  string
	a, b, c *relaytest.Replica
	tok     string
}

// startTrio starts replicas A, B and C on rs (each through its own address from addrs, if given), hosts h1 and h2
// on A, and waits until B and C know every peer (a listing after C advertised).
func startTrio(t *testing.T, rs *redistest.Server, addrs ...string) *trio {
	t.Helper()
	if addrs == nil {
		addrs = []string{rs.Addr, rs.Addr, rs.Addr}
	}
	tr := &trio{rs: rs, prefix: fmt.Sprintf("o%d:", clusterSeq.Add(1))}
	tr.a = relaytest.StartRedisReplica(t, addrs[:1], tr.prefix, "A", nil)
	tr.b = relaytest.StartRedisReplica(t, addrs[1:2], tr.prefix, "B", nil)
	tr.c = relaytest.StartRedisReplica(t, addrs[2:3], tr.prefix, "C", nil)
	waitListed(t, "after every replica advertised", tr.all()...)
	relaytest.StartHost(t, tr.a.URL, "h1", textHandler("h1"), nil)
	relaytest.StartHost(t, tr.a.URL, "h2", textHandler("h2"), nil)
	tr.tok = relaytest.ClientToken(t, "c", "*")
	for _, via := range tr.all() {
		for _, h := range []string{"h1", "h2"} {
			relaytest.Eventually(t, 10*time.Second, h+" via "+via.ID+" with Redis up", func() bool {
				code, body := getText(t, via.URL+"/hosts/"+h+"/", tr.tok)
				return code == 200 && body == h
			})
		}
	}
	return tr
}

func (tr *trio) all() []*relaytest.Replica { return []*relaytest.Replica{tr.a, tr.b, tr.c} }

// waitListed waits until each replica of rs has listed its peers twice more: at least one listing began after
// this call.
func waitListed(t *testing.T, why string, rs ...*relaytest.Replica) {
	t.Helper()
	counts := make([]uint64, len(rs))
	for i, r := range rs {
		counts[i] = histogramCount(t, r.Relay, "switchboard_directory_op_seconds", "list_peers")
	}
	for i, r := range rs {
		relaytest.Eventually(t, 15*time.Second, r.ID+" listed its peers "+why, func() bool {
			return histogramCount(t, r.Relay, "switchboard_directory_op_seconds", "list_peers") >= counts[i]+2
		})
	}
}

// dirUp is r's switchboard_directory_up.
func dirUp(t *testing.T, r *relaytest.Replica) float64 {
	t.Helper()
	return metricValue(t, r.Relay, "switchboard_directory_up", "", "")
}

func waitDirUp(t *testing.T, up bool, rs ...*relaytest.Replica) {
	t.Helper()
	want := 0.0
	if up {
		want = 1
	}
	for _, r := range rs {
		relaytest.Eventually(t, 15*time.Second, fmt.Sprintf("%s's directory_up = %v", r.ID, want), func() bool {
			return dirUp(t, r) == want
		})
	}
}

// askRounds is how many rounds of asking peers r made.
func askRounds(t *testing.T, r *relaytest.Replica) float64 {
	t.Helper()
	return metricValue(t, r.Relay, "switchboard_ask_peers_total", "result", "found") +
		metricValue(t, r.Relay, "switchboard_ask_peers_total", "result", "not_found") +
		metricValue(t, r.Relay, "switchboard_ask_peers_total", "result", "busy")
}

// mustServe calls each host through each replica once: every call must succeed at once.
func (tr *trio) mustServe(t *testing.T, when string, via []*relaytest.Replica, hosts ...string) {
	t.Helper()
	for _, r := range via {
		for _, h := range hosts {
			if code, body := getText(t, r.URL+"/hosts/"+h+"/", tr.tok); code != 200 || body != h {
				t.Fatalf("%s: %s via %s: %d %q", when, h, r.ID, code, body)
			}
		}
	}
}

// flushAll empties Redis.
func flushAll(t *testing.T, addr string) {
	t.Helper()
	raw, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{addr}, DisableCache: true})
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	if err := raw.Do(t.Context(), raw.B().Flushall().Build()).Error(); err != nil {
		t.Fatalf("FLUSHALL: %v", err)
	}
}

// checkDir is a directory client of its own, to read what Redis holds.
func (tr *trio) checkDir(t *testing.T) *directory.Redis {
	t.Helper()
	d, err := directory.NewRedis(context.Background(), directory.RedisConfig{Addrs: []string{tr.rs.Addr}, Replica: "check", Prefix: tr.prefix})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d.Close() })
	return d
}

// waitConverged waits until Redis names A for h1 and h2 again and holds every replica's advertisement.
func (tr *trio) waitConverged(t *testing.T) {
	t.Helper()
	d := tr.checkDir(t)
	relaytest.Eventually(t, 15*time.Second, "Redis names A for h1 and h2, and every replica advertised", func() bool {
		for _, h := range []string{"h1", "h2"} {
			if e, err := d.Lookup(context.Background(), h); err != nil || e.Replica != "A" {
				return false
			}
		}
		for _, r := range tr.all() {
			if u, err := d.ProbePeer(context.Background(), r.ID); err != nil || u != r.InternalURL {
				return false
			}
		}
		return true
	})
}

// TestOutageCostsNothingPerRequest: once Redis is known down, many concurrent requests for one host through a
// replica that does not hold it cost about one round of asking the peers, and all succeed; when Redis is back,
// the replica finds out by itself and routes by directory lookups again.
func TestOutageCostsNothingPerRequest(t *testing.T) {
	tr := startTrio(t, redistest.StartServer(t))
	tr.rs.Stop()
	waitDirUp(t, false, tr.b)

	before := askRounds(t, tr.b)
	const n = 64
	errs := make(chan string, n)
	var wg sync.WaitGroup
	client := newClient(t)
	for range n {
		wg.Go(func() {
			req, _ := http.NewRequest("GET", tr.b.URL+"/hosts/h1/", nil)
			req.Header.Set("Authorization", "Bearer "+tr.tok)
			resp, err := client.Do(req)
			if err != nil {
				errs <- err.Error()
				return
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 || string(body) != "h1" {
				errs <- fmt.Sprintf("%d %q", resp.StatusCode, body)
			}
		})
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Errorf("request via B while Redis is down: %s", e)
	}
	rounds := askRounds(t, tr.b) - before
	t.Logf("%d concurrent requests for one host while Redis was down: %v rounds of asking peers", n, rounds)
	// One round, cached for askFoundTTL; a machine slow enough to spread the requests over more than that may
	// need a few. Without the cache and single flight, every request asked: n rounds.
	if rounds < 1 || rounds > 4 {
		t.Fatalf("%d concurrent requests cost %v ask-peers rounds, want 1 (a few at most)", n, rounds)
	}

	tr.rs.Restart() // back, and empty
	waitDirUp(t, true, tr.a, tr.b, tr.c)
	tr.waitConverged(t)
	lookups := histogramCount(t, tr.b.Relay, "switchboard_directory_op_seconds", "lookup")
	asked := metricValue(t, tr.b.Relay, "switchboard_forwards_total", "outcome", "asked_peers")
	tr.mustServe(t, "after Redis came back", []*relaytest.Replica{tr.b}, "h1", "h2")
	if got := histogramCount(t, tr.b.Relay, "switchboard_directory_op_seconds", "lookup"); got < lookups+2 {
		t.Fatalf("B made %d directory lookups for 2 requests after Redis came back, want ≥ 2", got-lookups)
	}
	if got := metricValue(t, tr.b.Relay, "switchboard_forwards_total", "outcome", "asked_peers"); got != asked {
		t.Fatalf("B still routes by asking peers after Redis came back (%v → %v)", asked, got)
	}
}

// TestOutageAfterFlushAll is the reproduction of a compound fault: Redis loses its data (FLUSHALL) just after A
// advertised itself, B and C list their peers before A advertises again, then Redis stops. The replicas must still
// know each other: a listing without the replica itself is not trusted, a replica that sees its advertisement gone
// advertises again at once, and a peer missing from a listing is kept. (Before, B and C replaced their peer lists
// by listings without A and answered 503 for A's hosts for the whole outage.)
func TestOutageAfterFlushAll(t *testing.T) {
	tr := startTrio(t, redistest.StartServer(t))
	advertised := histogramCount(t, tr.a.Relay, "switchboard_directory_op_seconds", "advertise")
	relaytest.Eventually(t, 10*time.Second, "A advertised itself", func() bool {
		return histogramCount(t, tr.a.Relay, "switchboard_directory_op_seconds", "advertise") > advertised
	})
	flushAll(t, tr.rs.Addr)
	listed := map[*relaytest.Replica]uint64{}
	for _, r := range []*relaytest.Replica{tr.b, tr.c} {
		listed[r] = histogramCount(t, r.Relay, "switchboard_directory_op_seconds", "list_peers")
	}
	for r, n := range listed {
		relaytest.Eventually(t, 10*time.Second, r.ID+" listed its peers after FLUSHALL", func() bool {
			return histogramCount(t, r.Relay, "switchboard_directory_op_seconds", "list_peers") > n
		})
	}
	tr.rs.Stop()
	waitDirUp(t, false, tr.a, tr.b, tr.c)
	tr.mustServe(t, "FLUSHALL, then Redis stopped", tr.all(), "h1", "h2")
}

// TestOutageThenFlushAll: Redis stops, comes back empty, loses its data again at once and stops again. Requests
// through every replica succeed throughout, and once Redis answers for good the directory converges without a
// reconnect.
func TestOutageThenFlushAll(t *testing.T) {
	tr := startTrio(t, redistest.StartServer(t))
	tr.rs.Stop()
	waitDirUp(t, false, tr.a, tr.b, tr.c)
	tr.mustServe(t, "Redis stopped", tr.all(), "h1", "h2")
	tr.rs.Restart()
	waitDirUp(t, true, tr.b)
	flushAll(t, tr.rs.Addr)
	tr.mustServe(t, "Redis back empty and flushed", tr.all(), "h1", "h2")
	tr.rs.Stop()
	waitDirUp(t, false, tr.a, tr.b, tr.c)
	tr.mustServe(t, "Redis stopped again", tr.all(), "h1", "h2")
	tr.rs.Restart()
	tr.waitConverged(t)
	tr.mustServe(t, "Redis back for good", tr.all(), "h1", "h2")
	if n := metricValue(t, tr.a.Relay, "switchboard_tunnel_registrations_total", "outcome", "ok"); n != 2 {
		t.Fatalf("A registrations = %v, want 2 (no reconnect)", n)
	}
}

// TestOutageRedisRestartLoop: Redis restarts empty again and again. Every request through every replica succeeds,
// no tunnel reconnects, and the directory converges at the end.
func TestOutageRedisRestartLoop(t *testing.T) {
	tr := startTrio(t, redistest.StartServer(t))
	for i := range 5 {
		tr.rs.Restart()
		tr.mustServe(t, fmt.Sprintf("restart %d", i+1), tr.all(), "h1", "h2")
	}
	tr.waitConverged(t)
	tr.mustServe(t, "after the restarts", tr.all(), "h1", "h2")
	if n := metricValue(t, tr.a.Relay, "switchboard_tunnel_registrations_total", "outcome", "ok"); n != 2 {
		t.Fatalf("A registrations = %v, want 2 (no reconnect)", n)
	}
}

// TestOutageReplicaCutFromRedis: one replica loses Redis (blackholed: no answer, no reset) while it still reaches
// its peers, for longer than its lease. It routes by asking its peers; its own hosts stay reachable through the
// others (the directory stops naming it once its lease expires, and they ask the peers); the other replicas keep
// routing by the directory. When Redis answers it again, its entries come back.
func TestOutageReplicaCutFromRedis(t *testing.T) {
	rs := redistest.StartServer(t)
	pa, pb, pc := startFaultProxy(t, rs.Addr), startFaultProxy(t, rs.Addr), startFaultProxy(t, rs.Addr)
	tr := startTrio(t, rs, pa.Addr(), pb.Addr(), pc.Addr())
	relaytest.StartHost(t, tr.b.URL, "hb", textHandler("hb"), nil)
	d := tr.checkDir(t)
	relaytest.Eventually(t, 10*time.Second, "hb claimed by B", func() bool {
		e, err := d.Lookup(context.Background(), "hb")
		return err == nil && e.Replica == "B"
	})

	pb.blackhole()
	waitDirUp(t, false, tr.b)
	tr.mustServe(t, "B cut from Redis", []*relaytest.Replica{tr.b}, "h1", "h2")
	relaytest.Eventually(t, 60*time.Second, "B's lease expired in Redis", func() bool {
		_, err := d.Lookup(context.Background(), "hb")
		return err != nil
	})
	tr.mustServe(t, "B cut from Redis past its lease", tr.all(), "h1", "h2", "hb")
	for _, r := range []*relaytest.Replica{tr.a, tr.c} {
		if dirUp(t, r) != 1 {
			t.Fatalf("%s reads the directory as down while only B is cut from it", r.ID)
		}
	}

	pb.resume()
	waitDirUp(t, true, tr.b)
	// B re-asserts its entries at its next heartbeat after the lease loss; generous, as the machine may be busy.
	relaytest.Eventually(t, 60*time.Second, "hb named B again", func() bool {
		e, err := d.Lookup(context.Background(), "hb")
		return err == nil && e.Replica == "B"
	})
	tr.mustServe(t, "B back on Redis", tr.all(), "h1", "h2", "hb")
}

// TestOutageReplicaCutFromPeers: A's internal listener becomes unreachable while every replica still reaches
// Redis. Requests through the others for A's hosts are answered at once with a clean error (not held, not
// mistaken for a directory outage); A serves its own hosts and reaches the others'; once the partition heals,
// everything routes again.
func TestOutageReplicaCutFromPeers(t *testing.T) {
	tr := startTrio(t, redistest.StartServer(t))
	relaytest.StartHost(t, tr.c.URL, "hc", textHandler("hc"), nil)
	tr.mustServe(t, "before the partition", tr.all(), "hc")

	tr.a.SetInternalDown(true)
	for _, r := range []*relaytest.Replica{tr.b, tr.c} {
		code, body := getText(t, r.URL+"/hosts/h1/", tr.tok)
		if !slices.Contains([]int{502, 503}, code) {
			t.Fatalf("h1 via %s while A is cut from its peers: %d %q, want 502 or 503", r.ID, code, body)
		}
	}
	tr.mustServe(t, "A cut from its peers", []*relaytest.Replica{tr.a}, "h1", "h2", "hc")
	for _, r := range tr.all() {
		if dirUp(t, r) != 1 {
			t.Fatalf("%s reads the directory as down during a partition between replicas", r.ID)
		}
	}

	tr.a.SetInternalDown(false)
	relaytest.Eventually(t, 10*time.Second, "h1 via B after the partition healed", func() bool {
		code, body := getText(t, tr.b.URL+"/hosts/h1/", tr.tok)
		return code == 200 && body == "h1"
	})
	tr.mustServe(t, "after the partition", tr.all(), "h1", "h2", "hc")
}

// BenchmarkClusterMissOutage measures what a request through a replica that does not hold the host costs, with
// the directory answering and with Redis stopped (the figure in BENCHMARKS.md): B forwards to A, found by a
// directory lookup or, while Redis is down, by asking the peers. Besides ns/op it reports the median (p50-µs).
func BenchmarkClusterMissOutage(b *testing.B) {
	rs := redistest.StartServer(b)
	prefix := fmt.Sprintf("ob%d:", clusterSeq.Add(1))
	a := relaytest.StartRedisReplica(b, []string{rs.Addr}, prefix, "A", nil)
	rb := relaytest.StartRedisReplica(b, []string{rs.Addr}, prefix, "B", nil)
	relaytest.StartHost(b, a.URL, "h", textHandler("h"), nil)
	tok := relaytest.ClientToken(b, "c", "h")
	client := newClient(b)
	via := rb
	get := func() error {
		req, _ := http.NewRequest("GET", via.URL+"/hosts/h/", nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(body) != "h" {
			return fmt.Errorf("%d %q", resp.StatusCode, body)
		}
		return nil
	}
	// B must know A as a peer before Redis stops: wait for a listing that began after both advertised.
	n := histogramCount(b, rb.Relay, "switchboard_directory_op_seconds", "list_peers")
	relaytest.Eventually(b, 15*time.Second, "B listed its peers", func() bool {
		return histogramCount(b, rb.Relay, "switchboard_directory_op_seconds", "list_peers") >= n+2 && get() == nil
	})
	run := func(b *testing.B) {
		var took []time.Duration
		for b.Loop() {
			start := time.Now()
			if err := get(); err != nil {
				b.Fatal(err)
			}
			took = append(took, time.Since(start))
		}
		slices.Sort(took)
		b.ReportMetric(float64(took[len(took)/2].Microseconds()), "p50-µs")
		b.ReportMetric(float64(took[len(took)*9/10].Microseconds()), "p90-µs")
		b.ReportMetric(float64(took[len(took)-1].Microseconds()), "max-µs")
	}
	phase := func(name string) {
		via = a
		b.Run(name+"/via_owner", run) // the baseline: served where the tunnel is
		via = rb
		b.Run(name+"/via_other", run)
	}
	phase("directory_up")
	rs.Stop()
	relaytest.Eventually(b, 15*time.Second, "h via B with Redis stopped", func() bool { return get() == nil })
	phase("directory_down")
}
