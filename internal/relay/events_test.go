package relay_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/switchboard-relay/switchboard/agent"
	"github.com/switchboard-relay/switchboard/internal/directory"
	"github.com/switchboard-relay/switchboard/internal/presence"
	"github.com/switchboard-relay/switchboard/internal/redistest"
	"github.com/switchboard-relay/switchboard/internal/relay"
	"github.com/switchboard-relay/switchboard/internal/relaytest"
)

// sseEvent is one event block read from GET /v1/presence/events.
type sseEvent struct {
	ID    string
	Kind  string // the event: field
	Data  string
	Event presence.Event // Data decoded, for presence kinds
}

func (e sseEvent) String() string {
	if e.Kind == "reset" {
		return "reset"
	}
	return fmt.Sprintf("%s %s@%d", e.Kind, e.Event.HostID, e.Event.Epoch)
}

// sseStream is an open event stream; its reader goroutine ends when the test does.
type sseStream struct {
	events chan sseEvent
	done   chan struct{}
	status int
}

// subscribe opens the event stream at url with token; lastID, if not empty, is sent as Last-Event-ID. It returns
// once the response header arrived, so the stream's start position is fixed.
func subscribe(t *testing.T, url, token, lastID string) *sseStream {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "GET", url+"/v1/presence/events", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	if lastID != "" {
		req.Header.Set("Last-Event-ID", lastID)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		cancel()
		t.Fatalf("subscribe: %v", err)
	}
	s := &sseStream{events: make(chan sseEvent, 256), done: make(chan struct{}), status: resp.StatusCode}
	if ct := resp.Header.Get("Content-Type"); resp.StatusCode == 200 && ct != "text/event-stream" {
		t.Fatalf("content type %q", ct)
	}
	go func() {
		defer close(s.done)
		defer close(s.events)
		defer resp.Body.Close()
		sc := bufio.NewScanner(resp.Body)
		var cur sseEvent
		for sc.Scan() {
			line := sc.Text()
			if line == "" {
				if cur.Kind != "" {
					if cur.Kind != "reset" {
						_ = json.Unmarshal([]byte(cur.Data), &cur.Event)
					}
					s.events <- cur
				}
				cur = sseEvent{}
				continue
			}
			k, v, _ := strings.Cut(line, ":")
			v = strings.TrimPrefix(v, " ")
			switch k {
			case "id":
				cur.ID = v
			case "event":
				cur.Kind = v
			case "data":
				cur.Data = v
			}
		}
	}()
	t.Cleanup(func() { cancel(); <-s.done })
	return s
}

// read reads n events, failing the test if the stream ends or timeout passes first (want says what was awaited).
func (s *sseStream) read(t *testing.T, timeout time.Duration, n int, want []string) []sseEvent {
	t.Helper()
	var got []sseEvent
	deadline := time.After(timeout)
	for len(got) < n {
		select {
		case e, ok := <-s.events:
			if !ok {
				t.Fatalf("stream ended after %v; want %q", got, want)
			}
			got = append(got, e)
		case <-deadline:
			t.Fatalf("after %v got %v; want %q", timeout, got, want)
		}
	}
	return got
}

// label is an event as expect and expectAnyOrder name it: "online h", or "reset".
func (e sseEvent) label() string {
	if e.Kind == "reset" {
		return e.Kind
	}
	return e.Kind + " " + e.Event.HostID
}

// expect reads events until it has len(want) of them, and checks their kinds and hosts ("online h" ...). It
// returns them.
func (s *sseStream) expect(t *testing.T, timeout time.Duration, want ...string) []sseEvent {
	t.Helper()
	got := s.read(t, timeout, len(want), want)
	for i, e := range got {
		if e.label() != want[i] {
			t.Fatalf("events %v; want %q", got, want)
		}
	}
	return got
}

// expectAnyOrder is expect for events whose order is not defined: it reads len(want) events and checks that their
// kinds and hosts are want in some order.
func (s *sseStream) expectAnyOrder(t *testing.T, timeout time.Duration, want ...string) []sseEvent {
	t.Helper()
	got := s.read(t, timeout, len(want), want)
	names := make([]string, len(got))
	for i, e := range got {
		names[i] = e.label()
	}
	slices.Sort(names)
	if !slices.Equal(names, slices.Sorted(slices.Values(want))) {
		t.Fatalf("events %v; want %q in any order", got, want)
	}
	return got
}

// quiet checks that no event arrives for d.
func (s *sseStream) quiet(t *testing.T, d time.Duration) {
	t.Helper()
	select {
	case e, ok := <-s.events:
		if ok {
			t.Fatalf("unexpected event %v (%s)", e, e.Data)
		}
	case <-time.After(d):
	}
}

// checkSeqs checks each event's sequence against its epoch and kind, and that sequences grow per host.
func checkSeqs(t *testing.T, evs []sseEvent) {
	t.Helper()
	last := map[string]uint64{}
	for _, e := range evs {
		if e.Kind == "reset" {
			continue
		}
		ev := e.Event
		if ev.ID != e.ID || string(ev.Kind) != e.Kind {
			t.Fatalf("event %v: data %s disagrees with its id/event fields", e, e.Data)
		}
		if ev.Seq != presence.SeqOf(ev.Kind, ev.Epoch) {
			t.Fatalf("event %v: seq %d, want %d", e, ev.Seq, presence.SeqOf(ev.Kind, ev.Epoch))
		}
		if ev.Seq <= last[ev.HostID] {
			t.Fatalf("event %v: seq %d not above %d", e, ev.Seq, last[ev.HostID])
		}
		last[ev.HostID] = ev.Seq
	}
}

// TestEventsFlap: a host that reconnects within the flap window sends no offline/online pair, only "updated" when
// its metadata changed; one gone for longer than the window goes offline, then online when it comes back.
func TestEventsFlap(t *testing.T) {
	const flap = 3 * time.Second
	r := relaytest.StartRelay(t, func(c *relay.Config) { c.FlapWindow = flap })
	tok := relaytest.ClientToken(t, "c", "*")
	s := subscribe(t, r.URL, tok, "")
	meta := func(name string) func(*agent.Config) {
		return func(c *agent.Config) { c.Name = name }
	}
	l := relaytest.StartHost(t, r.URL, "h", textHandler("h"), meta("one"))
	evs := s.expect(t, 10*time.Second, "online h")
	if m := evs[0].Event.Metadata; m == nil || m.Name != "one" || evs[0].Event.Replica != "local" {
		t.Fatalf("online event %s: want metadata name one on replica local", evs[0].Data)
	}

	// down closes the agent and waits until the relay has released the host (else the next tunnel would find this
	// one live, which is a "moved").
	down := func(l *agent.Listener) {
		_ = l.Close()
		relaytest.Eventually(t, 10*time.Second, "h released", func() bool {
			_, h := getHost(t, r, "h", tok)
			return !h.Online
		})
	}
	// Within the window, same metadata: nothing.
	down(l)
	l = relaytest.StartHost(t, r.URL, "h", textHandler("h"), meta("one"))
	// Within the window, new metadata: updated.
	down(l)
	l = relaytest.StartHost(t, r.URL, "h", textHandler("h"), meta("two"))
	evs = append(evs, s.expect(t, 10*time.Second, "updated h")...)
	if m := evs[1].Event.Metadata; m == nil || m.Name != "two" {
		t.Fatalf("updated event %s: want metadata name two", evs[1].Data)
	}
	s.quiet(t, flap+time.Second)

	// Beyond the window: offline, then online.
	_ = l.Close()
	evs = append(evs, s.expect(t, 10*time.Second, "offline h")...)
	if evs[2].Event.Epoch != evs[1].Event.Epoch || evs[2].Event.Metadata != nil {
		t.Fatalf("offline event %s: want the epoch of the last tunnel (%d), no metadata", evs[2].Data, evs[1].Event.Epoch)
	}
	relaytest.StartHost(t, r.URL, "h", textHandler("h"), meta("two"))
	evs = append(evs, s.expect(t, 10*time.Second, "online h")...)
	checkSeqs(t, evs)
	s.quiet(t, 500*time.Millisecond)
}

// TestEventsResume: a client that reconnects with Last-Event-ID gets exactly the events after it; one whose
// position is not in the log gets a reset. (Positions trimmed from the log are covered by the log's own tests: a
// replica also serves its newest 1024 events from memory, so a reader just behind them still gets them all.)
func TestEventsResume(t *testing.T) {
	r := relaytest.StartRelay(t, func(c *relay.Config) { c.FlapWindow = -1 })
	tok := relaytest.ClientToken(t, "c", "*")
	s := subscribe(t, r.URL, tok, "")
	l := relaytest.StartHost(t, r.URL, "a", textHandler("a"), nil)
	first := s.expect(t, 10*time.Second, "online a")
	_ = l.Close()
	second := s.expect(t, 10*time.Second, "offline a")

	again := subscribe(t, r.URL, tok, first[0].ID)
	got := again.expect(t, 10*time.Second, "offline a")
	if got[0].ID != second[0].ID {
		t.Fatalf("resumed event %s, want %s", got[0].ID, second[0].ID)
	}
	// The token's hosts filter the stream: a token for b sees none of a's events.
	other := subscribe(t, r.URL, relaytest.ClientToken(t, "c", "b"), first[0].ID)
	other.quiet(t, 300*time.Millisecond)

	// A position from a log that is gone (an earlier process's memory log, or a Redis that lost its stream).
	stale := subscribe(t, r.URL, tok, "1-1")
	stale.expect(t, 10*time.Second, "reset")
	relaytest.StartHost(t, r.URL, "a", textHandler("a"), nil)
	stale.expect(t, 10*time.Second, "online a") // after the reset, the stream goes on from the present
	stale.quiet(t, 300*time.Millisecond)

	if sub := subscribe(t, r.URL, "nonsense", ""); sub.status != http.StatusUnauthorized {
		t.Fatalf("stream with a bad token: %d, want 401", sub.status)
	}
}

// TestEventsDrainMove: a host moving off a draining replica is "moved", never offline, on a stream read from the
// other replica; the draining replica's streams end.
func TestEventsDrainMove(t *testing.T) {
	addr, _ := redistest.Start(t)
	testDrainMove(t, []string{addr})
}

// TestEventsDrainMoveRedisCluster: the same on a Redis Cluster, where the event stream, the host hashes and the
// indexes live on different slots.
func TestEventsDrainMoveRedisCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a Redis Cluster")
	}
	addrs, _ := redistest.StartCluster(t, 3)
	testDrainMove(t, addrs)
}

func testDrainMove(t *testing.T, addrs []string) {
	prefix := fmt.Sprintf("ev%d:", clusterSeq.Add(1))
	a := startEventReplicaOn(t, addrs, prefix, "A", 2*time.Second, func(c *relay.Config) {
		c.DrainJitter, c.FlapWindow = 10*time.Millisecond, 500*time.Millisecond
	})
	b := startEventReplicaOn(t, addrs, prefix, "B", 2*time.Second, func(c *relay.Config) { c.FlapWindow = 500 * time.Millisecond })
	tok := relaytest.ClientToken(t, "c", "*")
	s := subscribe(t, b.URL, tok, "")
	onA := subscribe(t, a.URL, tok, "")
	relaytest.StartHost(t, a.URL, "mv", textHandler("mv"), func(c *agent.Config) { c.Relays = []string{a.URL, b.URL} })
	evs := s.expect(t, 10*time.Second, "online mv")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := a.Drain(ctx); err != nil {
		t.Fatalf("drain: %v", err)
	}
	evs = append(evs, s.expect(t, 10*time.Second, "moved mv")...)
	if evs[0].Event.Replica != "A" || evs[1].Event.Replica != "B" {
		t.Fatalf("events %s, %s: want online on A, moved to B", evs[0].Data, evs[1].Data)
	}
	checkSeqs(t, evs)
	s.quiet(t, 2*time.Second) // past the flap window: no offline
	select {
	case <-onA.done:
	case <-time.After(10 * time.Second):
		t.Fatal("the draining replica's event stream did not end")
	}
}

// TestEventsReplicaKilled: a replica dies without releasing its hosts. A host that reconnects to another replica
// before the dead one's lease expires is "moved"; one that cannot is "offline" once the lease expired, announced by
// a surviving replica.
func TestEventsReplicaKilled(t *testing.T) {
	addr, _ := redistest.Start(t)
	prefix := fmt.Sprintf("ev%d:", clusterSeq.Add(1))
	const lease = 4 * time.Second
	a := startEventReplica(t, addr, prefix, "A", lease, nil)
	b := startEventReplica(t, addr, prefix, "B", lease, nil)
	tok := relaytest.ClientToken(t, "c", "*")
	s := subscribe(t, b.URL, tok, "")
	fast := func(c *agent.Config) { c.MinBackoff, c.MaxBackoff = 50*time.Millisecond, 100*time.Millisecond }
	relaytest.StartHost(t, a.URL, "stay", textHandler("stay"), fast)
	evs := s.expect(t, 10*time.Second, "online stay")
	relaytest.StartHost(t, a.URL, "move", textHandler("move"), func(c *agent.Config) {
		fast(c)
		c.Relays = []string{a.URL, b.URL}
	})
	evs = append(evs, s.expect(t, 10*time.Second, "online move")...)

	// Kill A: its directory goes first, so nothing is released and its lease is no longer renewed.
	killed := time.Now()
	_ = a.Directory.Close()
	_ = a.Close()
	a.HTTP.CloseClientConnections()

	got := s.expect(t, 15*time.Second, "moved move", "offline stay")
	if time.Since(killed) < lease/2 {
		t.Fatalf("offline after %v, before the lease (%v) could expire", time.Since(killed), lease)
	}
	if got[1].Event.Replica != "A" || got[1].Event.Epoch != evs[0].Event.Epoch {
		t.Fatalf("offline %s: want epoch %d on A", got[1].Data, evs[0].Event.Epoch)
	}
	checkSeqs(t, append(evs, got...))
	recs, err := b.Directory.Records(context.Background(), []string{"stay", "move"})
	if err != nil || recs[0].Online || recs[0].DisconnectedAt.IsZero() || !recs[1].Online {
		t.Fatalf("records %+v, %v; want stay offline with a disconnect time, move online", recs, err)
	}
	s.quiet(t, time.Second)
}

// TestEventsRedisRestartedEmpty: Redis loses everything while hosts stay connected. No host goes offline or
// online; readers are told to re-read state (reset); later changes are announced as usual.
func TestEventsRedisRestartedEmpty(t *testing.T) {
	rs := redistest.StartServer(t)
	prefix := fmt.Sprintf("ev%d:", clusterSeq.Add(1))
	a := startEventReplica(t, rs.Addr, prefix, "A", relaytest.ReplicaLease, func(c *relay.Config) { c.FlapWindow = 300 * time.Millisecond })
	tok := relaytest.ClientToken(t, "c", "*")
	s := subscribe(t, a.URL, tok, "")
	l := relaytest.StartHost(t, a.URL, "h", textHandler("h"), nil)
	s.expect(t, 10*time.Second, "online h") // one host at a time: two hosts' events may come in either order
	relaytest.StartHost(t, a.URL, "k", textHandler("k"), nil)
	s.expect(t, 10*time.Second, "online k")

	rs.Restart()
	s.expect(t, 15*time.Second, "reset")
	relaytest.Eventually(t, 15*time.Second, "entries re-asserted", func() bool {
		recs, err := a.Directory.Records(context.Background(), []string{"h", "k"})
		return err == nil && recs[0].Online && recs[1].Online
	})
	s.quiet(t, 2*time.Second)

	_ = l.Close()
	got := s.expect(t, 10*time.Second, "offline h")
	checkSeqs(t, got)
	s.quiet(t, time.Second)
}

// TestEventsRestartKeepsRecords: a host's connect and disconnect times and metadata outlive the relay that saw
// them: a new relay process on the same Redis answers them.
func TestEventsRestartKeepsRecords(t *testing.T) {
	addr, _ := redistest.Start(t)
	prefix := fmt.Sprintf("ev%d:", clusterSeq.Add(1))
	a := startEventReplica(t, addr, prefix, "A", relaytest.ReplicaLease, func(c *relay.Config) { c.FlapWindow = -1 })
	tok := relaytest.ClientToken(t, "c", "*")
	s := subscribe(t, a.URL, tok, "")
	l := relaytest.StartHost(t, a.URL, "h", textHandler("h"), func(c *agent.Config) {
		c.Name, c.Labels = "box", map[string]string{"team": "x"}
	})
	s.expect(t, 10*time.Second, "online h")
	_ = l.Close()
	s.expect(t, 10*time.Second, "offline h")
	_, before := getHost(t, a.Relay, "h", tok)
	if before.Online || before.ConnectedAt == nil || before.DisconnectedAt == nil || before.Metadata.Name != "box" {
		t.Fatalf("before restart: %+v", before)
	}
	_ = a.Close()
	_ = a.Directory.Close()

	a2 := startEventReplica(t, addr, prefix, "A", relaytest.ReplicaLease, nil)
	code, after := getHost(t, a2.Relay, "h", tok)
	if code != 200 || after.Online || !after.ConnectedAt.Equal(*before.ConnectedAt) ||
		!after.DisconnectedAt.Equal(*before.DisconnectedAt) || after.Metadata.Name != "box" ||
		after.Metadata.Labels["team"] != "x" {
		t.Fatalf("after restart: %d %+v; want %+v", code, after, before)
	}
}

// startEventReplica starts replica id on a Redis directory with the given lease and a Redis event log, sharing
// addr and prefix with the other replicas of its cluster.
func startEventReplica(t *testing.T, addr, prefix, id string, lease time.Duration, mutate func(*relay.Config)) *relaytest.Replica {
	return startEventReplicaOn(t, []string{addr}, prefix, id, lease, mutate)
}

// startEventReplicaOn is startEventReplica on a Redis Cluster seed list (or one address).
func startEventReplicaOn(t *testing.T, addrs []string, prefix, id string, lease time.Duration, mutate func(*relay.Config)) *relaytest.Replica {
	t.Helper()
	var srv sync.Mutex
	var server *relay.Server
	dir, err := directory.NewRedis(context.Background(), directory.RedisConfig{
		Addrs: addrs, Replica: id, Prefix: prefix, Lease: lease,
		Logger: relaytest.Logger(t).With("side", "directory"),
		Owned: func() []directory.Entry {
			srv.Lock()
			defer srv.Unlock()
			if server != nil {
				return server.Owned()
			}
			return nil
		},
	})
	if err != nil {
		t.Fatalf("redis directory for %s: %v", id, err)
	}
	t.Cleanup(func() { _ = dir.Close() })
	log, err := presence.NewRedis(presence.RedisConfig{Client: dir.Client(), Prefix: prefix})
	if err != nil {
		t.Fatal(err)
	}
	r := relaytest.StartRelayOn(t, dir, func(c *relay.Config) {
		c.Replica = id
		c.Events = log
		if mutate != nil {
			mutate(c)
		}
	})
	srv.Lock()
	server = r.Server
	srv.Unlock()
	return r
}

// noUpkeep hides the Redis directory's Run from the relay, so that its lease lapses as if the replica were cut off
// from Redis while its tunnels stay up.
type noUpkeep struct{ *directory.Redis }

func (noUpkeep) Run(ctx context.Context) error { <-ctx.Done(); return nil }

// TestEventsReplicaCutOff: a replica that cannot renew its lease is taken for dead and its host announced offline
// by another replica, though the tunnel is up. When the replica is back in touch with Redis, it asks the agent to
// reconnect, and the host is announced online again under a new epoch.
func TestEventsReplicaCutOff(t *testing.T) {
	addr, _ := redistest.Start(t)
	prefix := fmt.Sprintf("ev%d:", clusterSeq.Add(1))
	var mu sync.Mutex
	var server *relay.Server
	dir, err := directory.NewRedis(context.Background(), directory.RedisConfig{
		Addrs: []string{addr}, Replica: "A", Prefix: prefix, Lease: time.Second,
		Logger: relaytest.Logger(t).With("side", "directory"),
		Owned: func() []directory.Entry {
			mu.Lock()
			defer mu.Unlock()
			return server.Owned()
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = dir.Close() })
	log, err := presence.NewRedis(presence.RedisConfig{Client: dir.Client(), Prefix: prefix})
	if err != nil {
		t.Fatal(err)
	}
	a := relaytest.StartRelayOn(t, noUpkeep{dir}, func(c *relay.Config) { c.Replica = "A"; c.Events = log })
	mu.Lock()
	server = a.Server
	mu.Unlock()
	b := startEventReplica(t, addr, prefix, "B", time.Second, nil)
	tok := relaytest.ClientToken(t, "c", "*")
	s := subscribe(t, b.URL, tok, "")
	relaytest.StartHost(t, a.URL, "h", textHandler("h"), nil)
	evs := s.expect(t, 10*time.Second, "online h")
	evs = append(evs, s.expect(t, 15*time.Second, "offline h")...) // A's lease lapsed; B reaped h

	// A is back in touch: its upkeep finds its lease gone, re-asserts, learns h was reaped and moves its agent.
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = dir.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	evs = append(evs, s.expect(t, 15*time.Second, "online h")...)
	checkSeqs(t, evs)
	if evs[2].Event.Epoch <= evs[0].Event.Epoch || evs[2].Event.Replica != "A" {
		t.Fatalf("online after the cut %s: want a new epoch on A", evs[2].Data)
	}
	if code, body := getText(t, b.URL+"/hosts/h/", tok); code != 200 || body != "h" {
		t.Fatalf("h via B after the cut: %d %q", code, body)
	}
	s.quiet(t, time.Second)
}
