package webhook

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/switchboard-relay/switchboard/internal/presence"
)

var testSecret = []byte("test-webhook-secret")

// generated counts the events appendEvents appended to each log, so later calls continue the hosts' histories.
var generated struct {
	sync.Mutex
	n map[presence.Log]int
}

// appendEvents appends n events about three hosts, each host going online, offline, online... with growing
// epochs, and returns them with their IDs.
func appendEvents(t testing.TB, l presence.Log, n int) []presence.Event {
	t.Helper()
	generated.Lock()
	if generated.n == nil {
		generated.n = map[presence.Log]int{}
	}
	start := generated.n[l]
	generated.n[l] += n
	generated.Unlock()
	var out []presence.Event
	for i := start; i < start+n; i++ {
		host := fmt.Sprintf("h%d", i%3)
		epoch := uint64(i/6 + 1)
		kind := presence.Online
		if (i/3)%2 == 1 {
			kind = presence.Offline
		}
		var e presence.Event
		var err error
		for try := 0; ; try++ { // the first command after a Redis restart may fail on the old connection
			e, err = l.Append(context.Background(), presence.Event{Kind: kind, HostID: host, Epoch: epoch,
				Seq: presence.SeqOf(kind, epoch), Replica: "r1", At: time.Now().Round(0)})
			if err == nil {
				break
			}
			if try == 20 {
				t.Fatalf("append: %v", err)
			}
			time.Sleep(50 * time.Millisecond)
		}
		out = append(out, e)
	}
	return out
}

// fastConfig is a Config with short timings for tests.
func fastConfig(l presence.Log, urls ...string) Config {
	return Config{
		Log:        l,
		URLs:       urls,
		Secret:     testSecret,
		Lease:      900 * time.Millisecond,
		Timeout:    300 * time.Millisecond,
		MinBackoff: 10 * time.Millisecond,
		MaxBackoff: 100 * time.Millisecond,
		Block:      200 * time.Millisecond,
		Registerer: prometheus.NewRegistry(),
	}
}

// runSender starts s.Run and returns a function that stops it (Close) and waits; it also runs at cleanup.
func runSender(t testing.TB, cfg Config) (*Sender, func()) {
	t.Helper()
	s, err := New(cfg)
	if err != nil {
		t.Fatalf("new sender: %v", err)
	}
	var wg sync.WaitGroup
	wg.Go(func() { _ = s.Run(context.Background()) })
	stop := func() { _ = s.Close(); wg.Wait() }
	t.Cleanup(stop)
	return s, stop
}

// checkDelivered fails unless the unique deliveries are exactly want, in order.
func checkDelivered(t testing.TB, rc *receiver, want []presence.Event) {
	t.Helper()
	got := rc.unique()
	if len(got) != len(want) {
		t.Fatalf("receiver got %d distinct events, want %d", len(got), len(want))
	}
	for i, d := range got {
		w := want[i]
		if d.id != w.ID || d.event.ID != w.ID || d.event.HostID != w.HostID || d.event.Seq != w.Seq ||
			d.event.Kind != w.Kind || d.kind != string(w.Kind) || !d.event.At.Equal(w.At) {
			t.Fatalf("delivery %d: got %s %+v, want %+v", i, d.id, d.event, w)
		}
	}
	// Per host, sequences never go down.
	last := map[string]uint64{}
	for _, d := range got {
		if d.event.Seq < last[d.event.HostID] {
			t.Fatalf("host %s: seq %d after %d", d.event.HostID, d.event.Seq, last[d.event.HostID])
		}
		last[d.event.HostID] = d.event.Seq
	}
}

func TestDeliversEveryEventInOrderToEveryURL(t *testing.T) {
	l := presence.NewMemory(presence.MemoryConfig{})
	a := newReceiver(t, testSecret, nil)
	b := newReceiver(t, testSecret, nil)
	want := appendEvents(t, l, 10)
	s, _ := runSender(t, fastConfig(l, a.URL(), b.URL()))
	want = append(want, appendEvents(t, l, 10)...)
	for _, rc := range []*receiver{a, b} {
		eventually(t, 10*time.Second, "all events", func() bool { return len(rc.unique()) >= len(want) })
		checkDelivered(t, rc, want)
		if rc.badSig != 0 {
			t.Fatalf("%d requests with a bad signature", rc.badSig)
		}
	}
	// The receiver records an event before it answers, the sender counts it after.
	eventually(t, 5*time.Second, "40 counted deliveries", func() bool {
		return testutil.ToFloat64(s.m.deliveries.WithLabelValues(outcomeDelivered)) == 40
	})
	if got := testutil.ToFloat64(s.m.leader); got != 1 {
		t.Fatalf("leader gauge %v, want 1", got)
	}
	eventually(t, 5*time.Second, "lag back to 0", func() bool { return s.lag() == 0 })
}

// TestReceiverFailingForAWhile: a receiver that answers 503, then hangs past the timeout, then works gets every
// event late, in order, signed, none lost; duplicates carry the same event ID and body.
func TestReceiverFailingForAWhile(t *testing.T) {
	l := presence.NewMemory(presence.MemoryConfig{})
	var mu sync.Mutex
	phase := "503"
	rc := newReceiver(t, testSecret, func(n int, w http.ResponseWriter, r *http.Request) bool {
		mu.Lock()
		p := phase
		mu.Unlock()
		switch p {
		case "503":
			w.Header().Set("Retry-After", "0")
			http.Error(w, "down", http.StatusServiceUnavailable)
			return true
		case "hang":
			<-r.Context().Done() // the sender's timeout ends it
			return true
		}
		return false
	})
	cfg := fastConfig(l, rc.URL())
	s, _ := runSender(t, cfg)
	want := appendEvents(t, l, 12)
	eventually(t, 10*time.Second, "a few 503s", func() bool {
		return testutil.ToFloat64(s.m.attempts.WithLabelValues(resultServerError)) >= 3
	})
	if s.lag() <= 0 {
		t.Fatalf("lag %v while the receiver fails, want > 0", s.lag())
	}
	mu.Lock()
	phase = "hang"
	mu.Unlock()
	eventually(t, 10*time.Second, "a few timeouts", func() bool {
		return testutil.ToFloat64(s.m.attempts.WithLabelValues(resultTimeout)) >= 2
	})
	if n := len(rc.unique()); n != 0 {
		t.Fatalf("receiver accepted %d events while failing", n)
	}
	want = append(want, appendEvents(t, l, 3)...)
	mu.Lock()
	phase = "ok"
	mu.Unlock()
	eventually(t, 10*time.Second, "all events", func() bool { return len(rc.unique()) >= len(want) })
	checkDelivered(t, rc, want)
	if d := rc.deliveries()[0]; d.attempt < 2 {
		t.Fatalf("first event delivered on attempt %d, want a retry", d.attempt)
	}
	if got := testutil.ToFloat64(s.m.deliveries.WithLabelValues(outcomeDropped)); got != 0 {
		t.Fatalf("dropped %v events", got)
	}
	eventually(t, 5*time.Second, "lag back to 0", func() bool { return s.lag() == 0 })
}

// TestRejectedEventDroppedAfterMaxRejections: a receiver that keeps answering 400 to one event makes the sender
// drop that event (counted) and go on with the next, instead of blocking the URL forever.
func TestRejectedEventDroppedAfterMaxRejections(t *testing.T) {
	l := presence.NewMemory(presence.MemoryConfig{})
	rc := newReceiver(t, testSecret, func(n int, w http.ResponseWriter, r *http.Request) bool {
		if strings.HasSuffix(r.Header.Get(EventIDHeader), "-2") { // the second event of a memory log
			http.Error(w, "no", http.StatusBadRequest)
			return true
		}
		return false
	})
	cfg := fastConfig(l, rc.URL())
	cfg.MaxRejections = 3
	s, _ := runSender(t, cfg)
	want := appendEvents(t, l, 3)
	eventually(t, 10*time.Second, "events 1 and 3", func() bool { return len(rc.unique()) >= 2 })
	checkDelivered(t, rc, []presence.Event{want[0], want[2]})
	if got := testutil.ToFloat64(s.m.deliveries.WithLabelValues(outcomeDropped)); got != 1 {
		t.Fatalf("dropped metric %v, want 1", got)
	}
	if got := testutil.ToFloat64(s.m.attempts.WithLabelValues(resultRejected)); got != 3 {
		t.Fatalf("rejected attempts %v, want 3", got)
	}
}

// TestRedirectNotFollowed: a 307 to another host is never followed (the signed event would go where the operator
// did not point it); it counts as a rejection.
func TestRedirectNotFollowed(t *testing.T) {
	l := presence.NewMemory(presence.MemoryConfig{})
	other := newReceiver(t, testSecret, nil)
	rc := newReceiver(t, testSecret, func(n int, w http.ResponseWriter, r *http.Request) bool {
		http.Redirect(w, r, other.URL(), http.StatusTemporaryRedirect)
		return true
	})
	cfg := fastConfig(l, rc.URL())
	cfg.MaxRejections = 2
	s, _ := runSender(t, cfg)
	appendEvents(t, l, 1)
	eventually(t, 10*time.Second, "the event dropped", func() bool {
		return testutil.ToFloat64(s.m.deliveries.WithLabelValues(outcomeDropped)) == 1
	})
	if got := testutil.ToFloat64(s.m.attempts.WithLabelValues(resultRedirect)); got != 2 {
		t.Fatalf("redirect attempts %v, want 2", got)
	}
	other.mu.Lock()
	defer other.mu.Unlock()
	if other.all != 0 {
		t.Fatalf("the redirect target got %d requests", other.all)
	}
}

// TestRetryAfterHonoured: after a 429 with Retry-After: 1 the next attempt waits at least about a second, although
// the backoff alone would retry within 100 ms.
func TestRetryAfterHonoured(t *testing.T) {
	l := presence.NewMemory(presence.MemoryConfig{})
	var first time.Time
	rc := newReceiver(t, testSecret, func(n int, w http.ResponseWriter, r *http.Request) bool {
		if n == 1 {
			first = time.Now()
			w.Header().Set("Retry-After", "1")
			http.Error(w, "slow down", http.StatusTooManyRequests)
			return true
		}
		return false
	})
	s, _ := runSender(t, fastConfig(l, rc.URL()))
	appendEvents(t, l, 1)
	eventually(t, 10*time.Second, "the event", func() bool { return len(rc.unique()) == 1 })
	if gap := rc.deliveries()[0].at.Sub(first); gap < 900*time.Millisecond {
		t.Fatalf("retried %v after a 429 with Retry-After: 1", gap)
	}
	if got := testutil.ToFloat64(s.m.attempts.WithLabelValues(resultRateLimited)); got != 1 {
		t.Fatalf("rate_limited attempts %v, want 1", got)
	}
}

// TestGapContinuesFromOldestRetained: a cursor older than the log's retention counts a gap and delivery goes on
// from the oldest retained event.
func TestGapContinuesFromOldestRetained(t *testing.T) {
	l := presence.NewMemory(presence.MemoryConfig{MaxEvents: 4})
	rc := newReceiver(t, testSecret, nil)
	evs := appendEvents(t, l, 10) // the log keeps the last 4
	store := NewMemory()
	cfg := fastConfig(l, rc.URL())
	cfg.Store = store
	cfg.Holder = "me"
	if ok, _ := store.Lead(context.Background(), "me", time.Minute); !ok {
		t.Fatal("lead")
	}
	if err := store.SetCursor(context.Background(), "me", rc.URL(), evs[2].ID); err != nil {
		t.Fatal(err)
	}
	s, _ := runSender(t, cfg)
	eventually(t, 10*time.Second, "retained events", func() bool { return len(rc.unique()) >= 4 })
	checkDelivered(t, rc, evs[6:])
	if got := testutil.ToFloat64(s.m.gaps); got != 1 {
		t.Fatalf("gaps metric %v, want 1", got)
	}
	eventually(t, 5*time.Second, "the cursor at the last event", func() bool {
		c, _ := store.Cursor(context.Background(), rc.URL())
		return c == evs[9].ID
	})
}

func TestNewRefusesBadConfig(t *testing.T) {
	l := presence.NewMemory(presence.MemoryConfig{})
	for _, tc := range []struct {
		name string
		cfg  Config
	}{
		{"no log", Config{URLs: []string{"http://x/"}, Secret: testSecret}},
		{"no url", Config{Log: l, Secret: testSecret}},
		{"no secret", Config{Log: l, URLs: []string{"http://x/"}}},
		{"relative", Config{Log: l, URLs: []string{"/hook"}, Secret: testSecret}},
		{"ftp", Config{Log: l, URLs: []string{"ftp://x/"}, Secret: testSecret}},
		{"no host", Config{Log: l, URLs: []string{"http:///x"}, Secret: testSecret}},
		{"duplicate", Config{Log: l, URLs: []string{"http://x/", "http://x/"}, Secret: testSecret}},
		{"negative", Config{Log: l, URLs: []string{"http://x/"}, Secret: testSecret, Timeout: -1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := New(tc.cfg); !errors.Is(err, ErrInvalid) {
				t.Fatalf("New: %v, want ErrInvalid", err)
			}
		})
	}
	if got := redactURL("https://user:pw@example.com/p?token=abc"); got != "https://example.com/p?REDACTED" {
		t.Fatalf("redactURL: %q", got)
	}
}

func TestCloseIdempotentAndStopsRun(t *testing.T) {
	l := presence.NewMemory(presence.MemoryConfig{})
	s, err := New(fastConfig(l, "http://127.0.0.1:1/"))
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = s.Run(context.Background()); close(done) }()
	eventually(t, 5*time.Second, "leading", func() bool { return testutil.ToFloat64(s.m.leader) == 1 })
	_ = s.Close()
	_ = s.Close()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after Close")
	}
	if err := s.Run(context.Background()); err != nil {
		t.Fatalf("Run after Close: %v", err)
	}
}
