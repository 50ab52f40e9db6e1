package webhook

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/switchboard-relay/switchboard/internal/presence"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// rueidis's cluster-topology refresher may still be winding down right after Close.
		goleak.IgnoreAnyFunction("github.com/redis/rueidis.(*clusterClient)._refresh.func2"))
}

// delivery is one request a receiver got.
type delivery struct {
	id, kind string
	attempt  int
	event    presence.Event
	at       time.Time
}

// receiver is a webhook endpoint for tests. It checks every request's signature with independentVerify and
// answers as respond says (nil: 204).
type receiver struct {
	t      testing.TB
	secret []byte
	srv    *httptest.Server

	mu      sync.Mutex
	n       int                                                      // requests so far
	respond func(n int, w http.ResponseWriter, r *http.Request) bool // true if it answered
	got     []delivery                                               // signed requests answered 2xx
	all     int                                                      // requests of any outcome
	badSig  int
}

func newReceiver(t testing.TB, secret []byte, respond func(n int, w http.ResponseWriter, r *http.Request) bool) *receiver {
	rc := &receiver{t: t, secret: secret, respond: respond}
	rc.srv = httptest.NewServer(http.HandlerFunc(rc.serve))
	t.Cleanup(rc.srv.Close)
	return rc
}

func (rc *receiver) URL() string { return rc.srv.URL + "/hook" }

func (rc *receiver) serve(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		return
	}
	rc.mu.Lock()
	rc.n++
	n := rc.n
	rc.all++
	respond := rc.respond
	if r.Method != http.MethodPost || r.Header.Get("Content-Type") != "application/json" ||
		!independentVerify(rc.t, r.Header.Get(SignatureHeader), body, rc.secret) {
		rc.badSig++
		rc.mu.Unlock()
		http.Error(w, "bad signature", http.StatusUnauthorized)
		return
	}
	rc.mu.Unlock()
	if respond != nil && respond(n, w, r) {
		return
	}
	var e presence.Event
	if err := json.Unmarshal(body, &e); err != nil {
		rc.t.Errorf("receiver: body %q: %v", body, err)
	}
	att, _ := strconv.Atoi(r.Header.Get(AttemptHeader))
	rc.mu.Lock()
	rc.got = append(rc.got, delivery{id: r.Header.Get(EventIDHeader), kind: r.Header.Get(EventTypeHeader),
		attempt: att, event: e, at: time.Now()})
	rc.mu.Unlock()
	w.WriteHeader(http.StatusNoContent)
}

func (rc *receiver) deliveries() []delivery {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return append([]delivery(nil), rc.got...)
}

// unique returns the deliveries with duplicates (same event ID) removed, checking that duplicates carry the same
// event.
func (rc *receiver) unique() []delivery {
	rc.t.Helper()
	seen := map[string]presence.Event{}
	var out []delivery
	for _, d := range rc.deliveries() {
		if prev, ok := seen[d.id]; ok {
			if !prev.At.Equal(d.event.At) || prev.HostID != d.event.HostID || prev.Seq != d.event.Seq {
				rc.t.Errorf("event %s delivered twice with different bodies: %+v, %+v", d.id, prev, d.event)
			}
			continue
		}
		seen[d.id] = d.event
		out = append(out, d)
	}
	return out
}

func eventually(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
