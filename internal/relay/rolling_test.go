package relay_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/switchboard-relay/switchboard/agent"
	"github.com/switchboard-relay/switchboard/internal/redistest"
	"github.com/switchboard-relay/switchboard/internal/relay"
	"github.com/switchboard-relay/switchboard/internal/relaytest"
	"github.com/switchboard-relay/switchboard/internal/tcpfront"
)

// startFront starts a round-robin TCP front over the replicas' public listeners; the test sets its rotation.
func startFront(t *testing.T) *tcpfront.Front {
	t.Helper()
	f, err := tcpfront.Listen()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = f.Close() })
	return f
}

// backends are the replicas' public host:port, for a front's rotation.
func backends(rs []*relaytest.Replica) []string {
	out := make([]string, len(rs))
	for i, r := range rs {
		out[i] = strings.TrimPrefix(r.URL, "http://")
	}
	return out
}

// TestRollingRestart restarts each of three replicas in turn — drain, close, start anew under the same id — while
// 100 hosts stay connected through a round-robin front and clients keep calling them through the replicas in
// rotation. Not one exchange may fail, and every host must be routable at the end.
func TestRollingRestart(t *testing.T) {
	addr, _ := redistest.Start(t)
	prefix := fmt.Sprintf("c%d:", clusterSeq.Add(1))
	mutate := func(c *relay.Config) {
		c.DrainJitter = 300 * time.Millisecond
		c.MissWait = 5 * time.Second
	}
	ids := []string{"R0", "R1", "R2"}
	replicas := make([]*relaytest.Replica, len(ids))
	for i, id := range ids {
		replicas[i] = relaytest.StartRedisReplica(t, []string{addr}, prefix, id, mutate)
	}
	fr := startFront(t)
	fr.Set(backends(replicas)...)

	const hosts = 100
	hostIDs := make([]string, hosts)
	for i := range hostIDs {
		hostIDs[i] = fmt.Sprintf("roll%03d", i)
		relaytest.StartHost(t, fr.URL(), hostIDs[i], textHandler(hostIDs[i]), func(c *agent.Config) {
			c.MinBackoff, c.MaxBackoff = 50*time.Millisecond, 200*time.Millisecond
		})
	}
	dir := replicas[0].Directory
	waitAllRoutable := func(what string) {
		t.Helper()
		for _, id := range hostIDs {
			relaytest.Eventually(t, 15*time.Second, id+" "+what, func() bool {
				_, err := dir.Lookup(context.Background(), id)
				return err == nil
			})
		}
	}
	waitAllRoutable("connected")

	// Clients call through the replicas in rotation (the same rotation as the front), each request on the next.
	// Each replica counts the requests sent to it, so that one taken out of the rotation is drained only once those
	// have ended, as a load balancer's connection draining does.
	var (
		rotMu    sync.Mutex
		rotation = append([]*relaytest.Replica(nil), replicas...)
		inFlight = map[*relaytest.Replica]*sync.WaitGroup{}
		rr       atomic.Int64
	)
	pickURL := func() (base string, done func()) {
		rotMu.Lock()
		defer rotMu.Unlock()
		r := rotation[int(rr.Add(1))%len(rotation)]
		wg := inFlight[r]
		if wg == nil {
			wg = new(sync.WaitGroup)
			inFlight[r] = wg
		}
		wg.Add(1)
		return r.URL, wg.Done
	}
	// awaitSent waits for the requests sent to r, which is out of the rotation: no more are.
	awaitSent := func(r *relaytest.Replica) {
		rotMu.Lock()
		wg := inFlight[r]
		rotMu.Unlock()
		if wg != nil {
			wg.Wait()
		}
	}
	setRotation := func(rs []*relaytest.Replica) {
		rotMu.Lock()
		rotation = append(rotation[:0], rs...)
		rotMu.Unlock()
		fr.Set(backends(rs)...)
	}
	tok := relaytest.ClientToken(t, "c", "roll*")
	var sent, failed atomic.Int64
	var firstFailure atomic.Value
	client := &http.Client{Timeout: 15 * time.Second}
	call := func(id, base string) {
		sent.Add(1)
		if err := getEchoedID(client, base, id, tok); err != nil {
			failed.Add(1)
			firstFailure.CompareAndSwap(nil, err.Error())
		}
	}
	stop := make(chan struct{})
	var load sync.WaitGroup
	for g := range 4 {
		load.Go(func() {
			for i := 0; i < 100_000; i++ {
				select {
				case <-stop:
					return
				default:
				}
				id := hostIDs[(g*31+i)%hosts]
				base, done := pickURL()
				call(id, base)
				done()
			}
		})
	}
	defer func() { close(stop); load.Wait() }()

	var moved float64 // tunnels that moved to another replica before their old one closed
	for i, id := range ids {
		old := replicas[i]
		others := append(append([]*relaytest.Replica(nil), replicas[:i]...), replicas[i+1:]...)
		setRotation(others) // the load balancer takes the draining replica out
		awaitSent(old)
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		err := old.Drain(ctx)
		cancel()
		if err != nil {
			t.Fatalf("drain %s: %v", id, err)
		}
		// A tunnel the drain retired is counted closed when its session has ended, which Drain does not wait for;
		// Close does.
		_ = old.Close()
		old.HTTP.Close()
		held := metricValue(t, old.Relay, "switchboard_tunnels_closed_total", "reason", "drain")
		moved += metricValue(t, old.Relay, "switchboard_drain_moved_tunnels_total", "", "")
		if held == 0 {
			t.Errorf("%s held no tunnel when it drained", id)
		}
		replicas[i] = relaytest.StartRedisReplica(t, []string{addr}, prefix, id, mutate)
		setRotation(replicas)
		waitAllRoutable("routable after " + id + " restarted")
	}
	time.Sleep(100 * time.Millisecond) // load runs on the restarted cluster too
	close(stop)
	load.Wait()
	stop = make(chan struct{}) // for the deferred close

	if n := failed.Load(); n != 0 {
		t.Fatalf("%d of %d exchanges failed during the rolling restart; first: %v", n, sent.Load(), firstFailure.Load())
	}
	for _, id := range hostIDs {
		if code, body := getText(t, replicas[0].URL+"/hosts/"+id+"/", tok); code != 200 || body != id {
			t.Fatalf("%s after the rolling restart: %d %q", id, code, body)
		}
	}
	if moved < hosts {
		t.Errorf("%v tunnels moved by drain, want at least %d (every host moves at least once)", moved, hosts)
	}
	t.Logf("%v tunnel moves; %d exchanges during a rolling restart of %d replicas with %d hosts, none failed", moved, sent.Load(), len(ids), hosts)
}
