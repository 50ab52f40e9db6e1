package peering

import (
	"fmt"
	"net/url"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
)

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
		if rounds.Load() != 1 || counts[AskFound] != 1 || counts[""] != n-1 {
			t.Fatalf("%d concurrent finds: %d rounds, results %v; want 1 round, 1 found, %d joined", n, rounds.Load(), counts, n-1)
		}
		if _, res := a.find("h", round(true)); res != AskCached {
			t.Fatalf("find right after the round: %q, want cached", res)
		}
		time.Sleep(askFoundTTL)
		if _, res := a.find("h", round(false)); res != AskNotFound || rounds.Load() != 2 {
			t.Fatalf("find after askFoundTTL: %q after %d rounds, want not_found after 2", res, rounds.Load())
		}
		time.Sleep(askMissTTL - time.Millisecond)
		if ans, res := a.find("h", round(true)); res != AskCached || ans.found {
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
		if _, res := a.find("one more", round(true)); res != AskBusy {
			t.Fatalf("round past maxAskRounds: %q, want busy", res)
		}
		close(block)
		wg.Wait()

		// A round that refuses to start (rate-limited) is busy, and its refusal is not cached.
		if _, res := a.find("limited", func() (askAnswer, error) { return askAnswer{}, errAskBusy }); res != AskBusy {
			t.Fatalf("refused round: %q, want busy", res)
		}
		if _, res := a.find("limited", round(true)); res != AskFound {
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
