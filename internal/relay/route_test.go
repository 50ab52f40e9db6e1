package relay

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/switchboard-relay/switchboard/internal/directory"
)

func mustURL(t *testing.T, raw string) *url.URL {
	t.Helper()
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// TestResolveRoute: the routing table of route.go, row by row.
func TestResolveRoute(t *testing.T) {
	a, c := mustURL(t, "http://a:1"), mustURL(t, "http://c:1")
	for _, tc := range []struct {
		name string
		v    routeView
		want route
	}{
		{"a tunnel serves it here", routeView{self: "B", serving: true}, route{kind: routeServe}},
		{"a tunnel serves it here, directory down", routeView{self: "B", serving: true, dirDown: true}, route{kind: routeServe}},
		{"a hop, a tunnel serves it here", routeView{self: "B", hop: true, serving: true}, route{kind: routeServe}},
		{"directory not read yet", routeView{self: "B"}, route{kind: routeLookup}},
		{"directory not read yet, tunnel retiring here", routeView{self: "B", retiring: true}, route{kind: routeLookup}},
		{"directory names another replica", routeView{self: "B", read: true, owner: "A", ownerURL: a}, route{kind: routeRemote, replica: "A", peer: a}},
		{"directory names another replica of unknown URL: ask", routeView{self: "B", read: true, owner: "A"}, route{kind: routeAsk}},
		{"directory names this replica", routeView{self: "B", read: true, owner: "B"}, route{kind: routeClaimed}},
		{"named here, retiring tunnel moved", routeView{self: "B", read: true, owner: "B", movedTo: "C", movedURL: c}, route{kind: routeRemote, replica: "C", peer: c}},
		{"named here, moved to an unknown URL", routeView{self: "B", read: true, owner: "B", movedTo: "C"}, route{kind: routeClaimed}},
		{"directory known down: ask, not read", routeView{self: "B", dirDown: true}, route{kind: routeAsk}},
		{"directory did not answer: ask", routeView{self: "B", read: true, lookupErr: true}, route{kind: routeAsk}},
		{"directory does not know the host: ask", routeView{self: "B", read: true}, route{kind: routeAsk}},
		{"a peer holds it", routeView{self: "B", dirDown: true, asked: true, holder: "C", holderURL: c}, route{kind: routeRemote, replica: "C", peer: c}},
		{"nobody holds it, time left", routeView{self: "B", read: true, asked: true, mayWait: true}, route{kind: routeWait}},
		{"nobody holds it, no time left", routeView{self: "B", read: true, asked: true}, route{kind: routeOffline}},
		{"down, nobody holds it, no time left", routeView{self: "B", dirDown: true, asked: true}, route{kind: routeOffline}},

		{"a hop not tried here: wait for it here", routeView{self: "B", hop: true}, route{kind: routeClaimed}},
		{"a hop not tried here, directory down", routeView{self: "B", hop: true, dirDown: true}, route{kind: routeClaimed}},
		{"a hop tried here, nothing retiring", routeView{self: "B", hop: true, tried: true}, route{kind: routeOffline}},
		{"a hop tried here, nothing retiring, named elsewhere", routeView{self: "B", hop: true, tried: true, read: true, owner: "A", ownerURL: a}, route{kind: routeOffline}},
		{"a hop tried here, retiring: read the directory", routeView{self: "B", hop: true, tried: true, retiring: true}, route{kind: routeLookup}},
		{"a hop, retiring, moved: pass on", routeView{self: "B", hop: true, tried: true, retiring: true, read: true, owner: "A", ownerURL: a}, route{kind: routeRemote, replica: "A", peer: a}},
		{"a hop, retiring, moved to an unknown URL", routeView{self: "B", hop: true, tried: true, retiring: true, read: true, owner: "A"}, route{kind: routeOffline}},
		{"a hop, retiring, named here", routeView{self: "B", hop: true, tried: true, retiring: true, read: true, owner: "B", movedTo: "C", movedURL: c}, route{kind: routeOffline}},
		{"a hop, retiring, directory down", routeView{self: "B", hop: true, tried: true, retiring: true, dirDown: true}, route{kind: routeOffline}},
		{"a hop, retiring, directory did not answer", routeView{self: "B", hop: true, tried: true, retiring: true, read: true, lookupErr: true}, route{kind: routeOffline}},
		{"a hop is never held nor asked about", routeView{self: "B", hop: true, tried: true, read: true, mayWait: true}, route{kind: routeOffline}},
	} {
		if got := resolveRoute(tc.v); got != tc.want {
			t.Errorf("%s: resolveRoute(%+v) = %+v, want %+v", tc.name, tc.v, got, tc.want)
		}
	}
}

// TestMergePeers: a listing without this replica is not trusted, and a listing never drops a known peer at once.
func TestMergePeers(t *testing.T) {
	t0 := time.Unix(1_000_000, 0)
	const self, selfURL = "B", "http://b:1"
	prev, ok := mergePeers(nil, map[string]string{"A": "http://a:1", "B": selfURL, "C": "http://c:1"}, self, selfURL, t0)
	if !ok || len(prev.urls) != 2 || prev.urls["A"].String() != "http://a:1" || prev.urls["C"] == nil {
		t.Fatalf("first listing: trusted=%v peers=%v", ok, prev.urls)
	}
	// The directory lost its data: an empty listing, or one with peers but not this replica, changes nothing.
	for _, listed := range []map[string]string{{}, {"A": "http://a:1"}, {"B": "http://elsewhere:1"}} {
		got, ok := mergePeers(prev, listed, self, selfURL, t0.Add(time.Second))
		if ok || got != prev {
			t.Fatalf("listing %v: trusted=%v, list replaced=%v; want the previous list kept", listed, ok, got != prev)
		}
	}
	// Data lost, then only this replica advertised again: the others stay for peerForget.
	got, ok := mergePeers(prev, map[string]string{"B": selfURL}, self, selfURL, t0.Add(peerForget-time.Second))
	if !ok || len(got.urls) != 2 {
		t.Fatalf("partial listing: trusted=%v peers=%v, want A and C kept", ok, got.urls)
	}
	// A changed URL is taken; a peer unlisted for peerForget is dropped.
	got, ok = mergePeers(got, map[string]string{"B": selfURL, "A": "http://a:2"}, self, selfURL, t0.Add(peerForget))
	if !ok || len(got.urls) != 1 || got.urls["A"].String() != "http://a:2" {
		t.Fatalf("after peerForget: trusted=%v peers=%v, want only A at its new URL", ok, got.urls)
	}
	// Garbage in the listing is skipped.
	got, _ = mergePeers(nil, map[string]string{"B": selfURL, "X": "::not a url", "Y": "ftp://y:1", "Z": "http://"}, self, selfURL, t0)
	if len(got.urls) != 0 {
		t.Fatalf("bad URLs taken: %v", got.urls)
	}
	// A replica that advertises nothing trusts every listing.
	if got, ok := mergePeers(nil, map[string]string{"A": "http://a:1"}, self, "", t0); !ok || len(got.urls) != 1 {
		t.Fatalf("no URL of its own: trusted=%v peers=%v", ok, got.urls)
	}
}

// TestPeerAskerSingleFlight: any number of requests waiting for one host cost one round; its answer is reused
// for askFoundTTL (askMissTTL if nobody holds the host), then asked again. Rounds over all hosts are bounded.
func TestPeerAskerSingleFlight(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		a := newPeerAsker()
		var rounds atomic.Int32
		release := make(chan struct{})
		round := func(found bool) func() (askAnswer, error) {
			return func() (askAnswer, error) {
				rounds.Add(1)
				<-release
				return askAnswer{replica: "A", base: &url.URL{Scheme: "http", Host: "a:1"}, found: found}, nil
			}
		}
		const n = 100
		results := make(chan string, n)
		var wg sync.WaitGroup
		for range n {
			wg.Go(func() {
				ans, res := a.find("h", round(true))
				if !ans.found || ans.replica != "A" {
					res = "wrong answer"
				}
				results <- res
			})
		}
		synctest.Wait() // every caller is waiting: one in the round, the others on it
		close(release)
		wg.Wait()
		close(results)
		counts := map[string]int{}
		for r := range results {
			counts[r]++
		}
		if rounds.Load() != 1 || counts[askFound] != 1 || counts[""] != n-1 {
			t.Fatalf("%d concurrent finds: %d rounds, results %v; want 1 round, 1 found, %d joined", n, rounds.Load(), counts, n-1)
		}
		if _, res := a.find("h", round(true)); res != askCached {
			t.Fatalf("find right after the round: %q, want cached", res)
		}
		time.Sleep(askFoundTTL)
		if _, res := a.find("h", round(false)); res != askNotFound || rounds.Load() != 2 {
			t.Fatalf("find after askFoundTTL: %q after %d rounds, want not_found after 2", res, rounds.Load())
		}
		time.Sleep(askMissTTL - time.Millisecond)
		if ans, res := a.find("h", round(true)); res != askCached || ans.found {
			t.Fatalf("find within askMissTTL: %q found=%v, want the cached miss", res, ans.found)
		}

		// Rounds over all hosts are bounded: the one past maxAskRounds is not started.
		block := make(chan struct{})
		var started sync.WaitGroup
		for i := range maxAskRounds {
			started.Add(1)
			wg.Go(func() {
				a.find(fmt.Sprint("busy", i), func() (askAnswer, error) { started.Done(); <-block; return askAnswer{}, nil })
			})
		}
		started.Wait()
		if _, res := a.find("one more", round(true)); res != askBusy {
			t.Fatalf("round past maxAskRounds: %q, want busy", res)
		}
		close(block)
		wg.Wait()

		// A round that refuses to start (rate-limited) is busy, and its refusal is not cached.
		if _, res := a.find("limited", func() (askAnswer, error) { return askAnswer{}, errAskBusy }); res != askBusy {
			t.Fatalf("refused round: %q, want busy", res)
		}
		if _, res := a.find("limited", round(true)); res != askFound {
			t.Fatalf("round after a refused one: %q, want found", res)
		}
	})
}

// TestPeerAskerCacheBounded: a flood of distinct hosts never holds more than maxAskAnswers answers.
func TestPeerAskerCacheBounded(t *testing.T) {
	a := newPeerAsker()
	for i := range 3 * maxAskAnswers {
		a.find(fmt.Sprint("h", i), func() (askAnswer, error) { return askAnswer{}, nil })
	}
	a.mu.Lock()
	n := len(a.answers)
	a.mu.Unlock()
	if n > maxAskAnswers {
		t.Fatalf("%d answers cached, want ≤ %d", n, maxAskAnswers)
	}
}

// TestDirHealthObserve: only a call that found the directory unreachable, made by a caller still waiting for it,
// turns the state down.
func TestDirHealthObserve(t *testing.T) {
	live := context.Background()
	gone, cancel := context.WithCancel(context.Background())
	cancel()
	for _, tc := range []struct {
		name string
		ctx  context.Context
		err  error
		down bool
	}{
		{"success", live, nil, false},
		{"not found", live, fmt.Errorf("lookup h: %w", directory.ErrNotFound), false},
		{"invalid", live, fmt.Errorf("claim: %w", directory.ErrInvalid), false},
		{"closed", live, directory.ErrClosed, false},
		{"caller gone", gone, fmt.Errorf("lookup h: %w", context.Canceled), false},
		{"timeout", live, fmt.Errorf("lookup h: %w", context.DeadlineExceeded), true},
		{"network", live, fmt.Errorf("lookup h: %w", errors.New("connection refused")), true},
	} {
		var h dirHealth
		h.observe(tc.ctx, tc.err)
		if h.isDown() != tc.down {
			t.Errorf("%s: down=%v, want %v", tc.name, h.isDown(), tc.down)
		}
	}
	var h dirHealth
	if !h.setDown(true, nil) || h.setDown(true, nil) || !h.setDown(false, nil) || h.isDown() {
		t.Fatal("setDown does not report changes")
	}
}

// FuzzMergePeers: whatever the directory lists (it is shared by every replica, and whoever can write to Redis
// can write there), the peer list holds only other replicas at absolute http(s) URLs, and a listing without this
// replica at its URL changes nothing.
func FuzzMergePeers(f *testing.F) {
	f.Add("A", "http://a:1", "B", "http://b:1", true)
	f.Add("B", "http://elsewhere:1", "C", "ftp://c", false)
	f.Add("", "", "X", "http://[::1", true)
	f.Fuzz(func(t *testing.T, id1, url1, id2, url2 string, withSelf bool) {
		const self, selfURL = "B", "http://b:1"
		prev, _ := mergePeers(nil, map[string]string{"P": "http://p:1", self: selfURL}, self, selfURL, time.Unix(0, 0))
		listed := map[string]string{id1: url1, id2: url2}
		if withSelf {
			listed[self] = selfURL
		}
		next, trusted := mergePeers(prev, listed, self, selfURL, time.Unix(1, 0))
		if trusted != (listed[self] == selfURL) {
			t.Fatalf("trusted=%v for a listing naming this replica at %q", trusted, listed[self])
		}
		if !trusted && next != prev {
			t.Fatal("an untrusted listing changed the peer list")
		}
		if _, ok := next.urls[self]; ok {
			t.Fatal("this replica is in its own peer list")
		}
		if next.urls["P"] == nil {
			t.Fatal("a peer listed a second ago was dropped")
		}
		for id, u := range next.urls {
			if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
				t.Fatalf("peer %q at %q", id, u)
			}
		}
	})
}
