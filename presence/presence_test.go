package presence_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/switchboard-relay/switchboard/agent"
	"github.com/switchboard-relay/switchboard/internal/directory"
	ipresence "github.com/switchboard-relay/switchboard/internal/presence"
	"github.com/switchboard-relay/switchboard/internal/relay"
	"github.com/switchboard-relay/switchboard/internal/relaytest"
	"github.com/switchboard-relay/switchboard/presence"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m) // a goroutine parked on a socket read is a leak here too: tests close what they open
}

func fastRelay(t *testing.T) *relaytest.Relay {
	return relaytest.StartRelay(t, func(c *relay.Config) {
		c.FlapWindow = -1
		c.EventsHeartbeat = 50 * time.Millisecond
	})
}

// watcher runs Watch in the background and collects what it delivers.
type watcher struct {
	mu     sync.Mutex
	events []presence.Event
	done   chan struct{}
	err    error
	cancel context.CancelFunc
}

func watch(t *testing.T, c *presence.Client, after string) *watcher {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	w := &watcher{done: make(chan struct{}), cancel: cancel}
	go func() {
		defer close(w.done)
		w.err = c.Watch(ctx, after, func(e presence.Event) error {
			w.mu.Lock()
			w.events = append(w.events, e)
			w.mu.Unlock()
			return nil
		})
	}()
	t.Cleanup(w.stop)
	return w
}

func (w *watcher) stop() { w.cancel(); <-w.done }

func (w *watcher) has(typ presence.EventType, host string) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, e := range w.events {
		if e.Type == typ && e.HostID == host {
			return true
		}
	}
	return false
}

func (w *watcher) snapshot() []presence.Event {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]presence.Event(nil), w.events...)
}

// TestWatchSeesHostsComeAndGo: through a real relay, a host that connects is an online event with its metadata, and
// one that goes is an offline event; List shows both states.
func TestWatchSeesHostsComeAndGo(t *testing.T) {
	r := fastRelay(t)
	c := &presence.Client{Relay: r.URL, Token: relaytest.ClientToken(t, "watcher", "*")}
	w := watch(t, c, "")
	// The stream starts at the present once connected: wait for the connection before the host comes.
	relaytest.Eventually(t, 30*time.Second, "a subscriber", func() bool {
		return subscribers(t, r) > 0
	})
	ln := relaytest.StartListener(t, r.URL, "laptop", func(c *agent.Config) { c.Name = "Laptop"; c.Labels = map[string]string{"team": "infra"} })
	relaytest.Eventually(t, 30*time.Second, "online event", func() bool { return w.has(presence.Online, "laptop") })
	hosts, err := c.List(t.Context(), presence.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(hosts) != 1 || hosts[0].ID != "laptop" || !hosts[0].Online || hosts[0].Metadata.Name != "Laptop" ||
		hosts[0].Metadata.Labels["team"] != "infra" || hosts[0].ConnectedAt == nil {
		t.Fatalf("List = %+v", hosts)
	}
	_ = ln.Close()
	relaytest.Eventually(t, 30*time.Second, "offline event", func() bool { return w.has(presence.Offline, "laptop") })
	off := false
	hosts, err = c.List(t.Context(), presence.ListOptions{Online: &off})
	if err != nil || len(hosts) != 1 || hosts[0].Online {
		t.Fatalf("List(online=false) = %+v, %v", hosts, err)
	}
	evs := w.snapshot()
	on := evs[0]
	if on.Type != presence.Online || on.Metadata == nil || on.Metadata.Name != "Laptop" || on.Seq == 0 || on.ID == "" || on.At.IsZero() {
		t.Fatalf("online event %+v", on)
	}
	if last := evs[len(evs)-1]; last.Seq <= on.Seq || last.Metadata != nil {
		t.Fatalf("offline event %+v after %+v", last, on)
	}
}

// subscribers reads the relay's switchboard_presence_subscribers gauge.
func subscribers(t *testing.T, r *relaytest.Relay) float64 {
	t.Helper()
	mfs, err := r.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "switchboard_presence_subscribers" {
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	return 0
}

// TestWatchResumesAfterTheLastEvent: a second Watch started from the last event the first one delivered gets what
// happened in between, and not that event again.
func TestWatchResumesAfterTheLastEvent(t *testing.T) {
	r := fastRelay(t)
	c := &presence.Client{Relay: r.URL, Token: relaytest.ClientToken(t, "watcher", "*")}
	w := watch(t, c, "")
	relaytest.Eventually(t, 30*time.Second, "a subscriber", func() bool { return subscribers(t, r) > 0 })
	relaytest.StartListener(t, r.URL, "a", nil)
	relaytest.Eventually(t, 30*time.Second, "a online", func() bool { return w.has(presence.Online, "a") })
	w.stop()
	last := w.snapshot()[len(w.snapshot())-1]

	relaytest.StartListener(t, r.URL, "b", nil) // while nobody watches
	w2 := watch(t, c, last.ID)
	relaytest.Eventually(t, 30*time.Second, "b online after resuming", func() bool { return w2.has(presence.Online, "b") })
	if w2.has(presence.Online, "a") {
		t.Fatalf("resumed after %s and got it again: %+v", last.ID, w2.snapshot())
	}
}

// TestWatchReconnectsWithLastEventID: when the stream breaks (here: a proxy in front drops every connection), Watch
// reconnects by itself, sends the last delivered id as Last-Event-ID, and misses nothing.
func TestWatchReconnectsWithLastEventID(t *testing.T) {
	r := fastRelay(t)
	target, _ := url.Parse(r.URL)
	var mu sync.Mutex
	var lastIDs []string
	rp := httputil.NewSingleHostReverseProxy(target)
	rp.FlushInterval = -1
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if req.URL.Path == "/v1/presence/events" {
			mu.Lock()
			lastIDs = append(lastIDs, req.Header.Get("Last-Event-ID"))
			mu.Unlock()
		}
		rp.ServeHTTP(w, req)
	}))
	t.Cleanup(front.Close) // after the watcher stops (cleanups run last first)
	c := &presence.Client{Relay: front.URL, Token: relaytest.ClientToken(t, "watcher", "*"),
		MinBackoff: 10 * time.Millisecond, MaxBackoff: 50 * time.Millisecond}
	w := watch(t, c, "")
	relaytest.Eventually(t, 30*time.Second, "a subscriber", func() bool { return subscribers(t, r) > 0 })
	relaytest.StartListener(t, r.URL, "a", nil)
	relaytest.Eventually(t, 30*time.Second, "a online", func() bool { return w.has(presence.Online, "a") })
	aID := w.snapshot()[0].ID

	front.CloseClientConnections()
	relaytest.Eventually(t, 30*time.Second, "a second connection", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(lastIDs) >= 2
	})
	relaytest.StartListener(t, r.URL, "b", nil)
	relaytest.Eventually(t, 30*time.Second, "b online", func() bool { return w.has(presence.Online, "b") })
	mu.Lock()
	if lastIDs[0] != "" || lastIDs[1] != aID {
		t.Fatalf("Last-Event-ID per connection = %q, want \"\" then %q", lastIDs, aID)
	}
	mu.Unlock()
	for _, e := range w.snapshot() {
		if e.Type == presence.Reset {
			t.Fatalf("reset on a plain reconnect: %+v", w.snapshot())
		}
	}
}

// TestWatchDeliversReset: resuming from a position the relay does not know is a Reset first, with an id to resume
// from; then events flow.
func TestWatchDeliversReset(t *testing.T) {
	r := fastRelay(t)
	c := &presence.Client{Relay: r.URL, Token: relaytest.ClientToken(t, "watcher", "*")}
	w := watch(t, c, "not-an-id-this-relay-issued")
	relaytest.Eventually(t, 30*time.Second, "a reset", func() bool { return len(w.snapshot()) > 0 })
	if e := w.snapshot()[0]; e.Type != presence.Reset || e.ID == "" || e.HostID != "" {
		t.Fatalf("first event %+v, want a reset with an id", e)
	}
	relaytest.StartListener(t, r.URL, "a", nil)
	relaytest.Eventually(t, 30*time.Second, "a online", func() bool { return w.has(presence.Online, "a") })
}

// TestWatchStopsOnARefusedToken: a static token the relay refuses ends Watch with ErrUnauthorized and the relay's
// status; a handler error ends it with that error.
func TestWatchStopsOnARefusedToken(t *testing.T) {
	r := fastRelay(t)
	c := &presence.Client{Relay: r.URL, Token: "not-a-token"}
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	err := c.Watch(ctx, "", func(presence.Event) error { return nil })
	var ae *presence.APIError
	if !errors.Is(err, presence.ErrUnauthorized) || !errors.As(err, &ae) || ae.Status != http.StatusUnauthorized {
		t.Fatalf("Watch = %v, want ErrUnauthorized with status 401", err)
	}
	if _, err := c.List(t.Context(), presence.ListOptions{}); !errors.Is(err, presence.ErrUnauthorized) {
		t.Fatalf("List = %v, want ErrUnauthorized", err)
	}

	stop := errors.New("enough")
	c = &presence.Client{Relay: r.URL, Token: relaytest.ClientToken(t, "watcher", "*")}
	done := make(chan error, 1)
	go func() { done <- c.Watch(t.Context(), "x", func(presence.Event) error { return stop }) }()
	select {
	case err := <-done:
		if !errors.Is(err, stop) {
			t.Fatalf("Watch = %v, want the handler's error", err)
		}
	case <-time.After(time.Minute):
		t.Fatal("Watch did not return the handler's error")
	}
	if err := (&presence.Client{Relay: "ftp://x"}).Watch(t.Context(), "", nil); err == nil {
		t.Fatal("Watch accepted an ftp relay URL")
	}
}

// TestEventWireFormat: the relay's own event type encodes into the JSON this package decodes, field for field.
func TestEventWireFormat(t *testing.T) {
	at := time.Date(2026, 11, 22, 14, 35, 19, 74179885, time.UTC)
	in := ipresence.Event{ID: "7-1", Kind: ipresence.Moved, HostID: "org:laptop", Seq: 6, Epoch: 3, Replica: "r2", At: at,
		Metadata: &directory.Metadata{Name: "n", OS: "linux", AgentVersion: "1.0", Labels: map[string]string{"k": "v"}}}
	b, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	var out presence.Event
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	if out.ID != in.ID || string(out.Type) != string(in.Kind) || out.HostID != in.HostID || out.Seq != in.Seq ||
		out.Epoch != in.Epoch || out.Replica != in.Replica || !out.At.Equal(at) || out.Metadata == nil ||
		out.Metadata.Name != "n" || out.Metadata.OS != "linux" || out.Metadata.AgentVersion != "1.0" ||
		out.Metadata.Labels["k"] != "v" {
		t.Fatalf("%s decoded as %+v", b, out)
	}
	for _, k := range []ipresence.Kind{ipresence.Online, ipresence.Offline, ipresence.Moved, ipresence.Updated} {
		switch presence.EventType(k) {
		case presence.Online, presence.Offline, presence.Moved, presence.Updated:
		default:
			t.Fatalf("relay event kind %q has no EventType", k)
		}
	}
}
