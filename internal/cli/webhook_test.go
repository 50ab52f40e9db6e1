package cli_test

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/switchboard-relay/switchboard/internal/redistest"
)

// TestWebhookFlagErrors: bad --webhook-* flags exit 2 before anything starts, with one line naming the flag, and
// never echo the secret or a URL's credentials.
func TestWebhookFlagErrors(t *testing.T) {
	for _, tc := range []struct {
		env  []string
		args []string
		want string
	}{
		{nil, []string{"--webhook-url", "http://127.0.0.1:1/hook"}, "--webhook-url needs --webhook-secret (or SWITCHBOARD_WEBHOOK_SECRET)"},
		{[]string{"SWITCHBOARD_WEBHOOK_URL=http://127.0.0.1:1/a"}, nil, "--webhook-url needs --webhook-secret"},
		{nil, []string{"--webhook-secret", hookSecretFlag, "--webhook-url", "ftp://example.com/x"}, `--webhook-url: invalid webhook: URL "ftp://example.com/x" is not an absolute http:// or https:// URL`},
		{nil, []string{"--webhook-secret", hookSecretFlag, "--webhook-url", "example.com/hook"}, `is not an absolute http:// or https:// URL`},
		{nil, []string{"--webhook-secret", hookSecretFlag, "--webhook-url", "https://user:pw@/hook?token=tok"}, `has no host`},
		{nil, []string{"--webhook-secret", hookSecretFlag, "--webhook-url", "http://a/1", "--webhook-url", "http://a/1"}, "the same URL is given twice"},
		{[]string{"SWITCHBOARD_WEBHOOK_SECRET=" + hookSecretFlag}, []string{"--webhook-url", "http://a/1", "--webhook-timeout=-1s"}, "--webhook-timeout -1s must not be negative"},
	} {
		t.Run(strings.Join(append(tc.env, tc.args...), " "), func(t *testing.T) {
			r := run(t, append(withSecret, tc.env...), append([]string{"serve"}, tc.args...)...)
			if r.code != 2 || r.stdout != "" || !strings.Contains(r.stderr, tc.want) {
				t.Fatalf("exit %d, stdout %q, stderr %q; want exit 2 and %q", r.code, r.stdout, r.stderr, tc.want)
			}
			if lines := strings.Count(strings.TrimSpace(r.stderr), "\n") + 1; lines != 1 {
				t.Fatalf("%d lines on stderr, want one:\n%s", lines, r.stderr)
			}
			for _, secret := range []string{hookSecretFlag, "pw", "tok"} {
				if strings.Contains(r.stderr, secret) {
					t.Fatalf("stderr shows %q: %s", secret, r.stderr)
				}
			}
		})
	}
}

// hookReceiver is a webhook endpoint in the test process: it checks each request's signature with its own HMAC
// code and records the verified events.
type hookReceiver struct {
	secret []byte
	srv    *httptest.Server

	mu     sync.Mutex
	events []hookEvent
	bad    int
	down   bool // answer 503 to everything
}

func (h *hookReceiver) setDown(down bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.down = down
}

type hookEvent struct {
	ID     string `json:"id"`
	Type   string `json:"type"`
	HostID string `json:"host_id"`
	Seq    uint64 `json:"seq"`
	header string // Switchboard-Event-Id
}

func newHookReceiver(t *testing.T, secret string) *hookReceiver {
	h := &hookReceiver{secret: []byte(secret)}
	h.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		var ts, v1 string
		for _, kv := range strings.Split(r.Header.Get("Switchboard-Signature"), ",") {
			k, v, _ := strings.Cut(kv, "=")
			switch k {
			case "t":
				ts = v
			case "v1":
				v1 = v
			}
		}
		m := hmac.New(sha256.New, h.secret)
		m.Write([]byte(ts + "." + string(body)))
		var e hookEvent
		h.mu.Lock()
		defer h.mu.Unlock()
		if h.down {
			http.Error(w, "maintenance", http.StatusServiceUnavailable)
			return
		}
		if !hmac.Equal([]byte(v1), []byte(hex.EncodeToString(m.Sum(nil)))) || json.Unmarshal(body, &e) != nil {
			h.bad++
			http.Error(w, "bad signature", http.StatusUnauthorized)
			return
		}
		e.header = r.Header.Get("Switchboard-Event-Id")
		h.events = append(h.events, e)
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(h.srv.Close)
	return h
}

func (h *hookReceiver) badCount() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.bad
}

// unique returns the events received, without repeats of an event ID.
func (h *hookReceiver) unique() []hookEvent {
	h.mu.Lock()
	defer h.mu.Unlock()
	seen := map[string]bool{}
	var out []hookEvent
	for _, e := range h.events {
		if !seen[e.header] {
			seen[e.header] = true
			out = append(out, e)
		}
	}
	return out
}

// TestServeWebhooks: `serve --webhook-url` POSTs a host's online and offline, signed with
// SWITCHBOARD_WEBHOOK_SECRET, and never logs the secret.
func TestServeWebhooks(t *testing.T) {
	const hookSecret = "webhook-secret-for-the-test-0123456789"
	rc := newHookReceiver(t, hookSecret)
	relay, addr, metrics := startRelay(t, append(withSecret, "SWITCHBOARD_WEBHOOK_SECRET="+hookSecret),
		"--webhook-url", rc.srv.URL+"/hook", "--flap-window", "200ms")
	up := upstream(t, func(w http.ResponseWriter, r *http.Request) {})
	host := start(t, nil, "host", "--relay", "http://"+addr, "--id", "org:laptop",
		"--token", mint(t, "host", "--id", "org:laptop"), "--upstream", up)
	waitFor(t, "the online webhook", func() bool { return len(rc.unique()) >= 1 })
	host.signal(t, syscall.SIGTERM)
	host.exitCode(t, 10*time.Second)
	waitFor(t, "the offline webhook", func() bool { return len(rc.unique()) >= 2 })
	got := rc.unique()
	if len(got) != 2 || got[0].Type != "online" || got[1].Type != "offline" ||
		got[0].HostID != "org:laptop" || got[1].HostID != "org:laptop" || got[1].Seq <= got[0].Seq ||
		got[0].ID != got[0].header {
		t.Fatalf("webhooks %+v, want online then offline of org:laptop", got)
	}
	if bad := rc.badCount(); bad != 0 {
		t.Fatalf("%d webhook requests failed the signature check", bad)
	}
	waitFor(t, "webhook metrics", func() bool { // the receiver records an event before the relay counts it
		_, text := get("http://"+metrics+"/metrics", "")
		return strings.Contains(text, `switchboard_webhook_deliveries_total{outcome="delivered"} 2`) &&
			strings.Contains(text, "switchboard_webhook_leader 1")
	})
	relay.signal(t, syscall.SIGTERM)
	relay.exitCode(t, 15*time.Second)
	if strings.Contains(relay.output(), hookSecret) {
		t.Fatalf("the relay logged the webhook secret:\n%s", relay.output())
	}
}

// TestServeWebhooksTakeover: two replicas on one Redis; one delivers webhooks. When it is stopped, its host moves
// to the other replica and the other replica takes the webhook lease over and delivers the move, resuming from the
// cursor in Redis: the receiver sees online then moved, in order, each signed.
func TestServeWebhooksTakeover(t *testing.T) {
	const hookSecret = "webhook-secret-for-the-cluster-test-0123456789"
	addr, _ := redistest.Start(t)
	rc := newHookReceiver(t, hookSecret)
	env := append([]string{"SWITCHBOARD_CLUSTER_SECRET=cluster-test-secret-0123456789abcdef", "SWITCHBOARD_WEBHOOK_SECRET=" + hookSecret}, withSecret...)
	type replica struct {
		p             *proc
		addr, metrics string
	}
	start := func(id string) replica {
		p, a, m := startRelay(t, env, "--directory", "redis://"+addr+"/0", "--replica-id", id,
			"--internal-listen", "127.0.0.1:0", "--webhook-url", rc.srv.URL+"/hook", "--flap-window", "300ms",
			"--drain-jitter", "100ms")
		return replica{p, a, m}
	}
	leads := func(r replica) bool {
		_, text := get("http://"+r.metrics+"/metrics", "")
		return strings.Contains(text, "\nswitchboard_webhook_leader 1\n")
	}
	a, b := start("a"), start("b")
	var leader, standby replica
	waitFor(t, "one webhook leader", func() bool {
		la, lb := leads(a), leads(b)
		switch {
		case la && !lb:
			leader, standby = a, b
		case lb && !la:
			leader, standby = b, a
		}
		return la != lb
	})
	up := upstream(t, func(w http.ResponseWriter, r *http.Request) {})
	startHost(t, "h1", up, "http://"+leader.addr, "http://"+standby.addr)
	waitFor(t, "the online webhook", func() bool { return len(rc.unique()) >= 1 })

	leader.p.signal(t, syscall.SIGTERM)
	if code := leader.p.exitCode(t, 20*time.Second); code != 0 {
		t.Fatalf("leader exit code %d\n%s", code, leader.p.output())
	}
	waitFor(t, "the standby leads", func() bool { return leads(standby) })
	waitFor(t, "the moved webhook", func() bool { return len(rc.unique()) >= 2 })
	got := rc.unique()
	if got[0].Type != "online" || got[1].Type != "moved" || got[0].HostID != "h1" || got[1].HostID != "h1" ||
		got[1].Seq <= got[0].Seq {
		t.Fatalf("webhooks %+v, want online then moved of h1", got)
	}
	if bad := rc.badCount(); bad != 0 {
		t.Fatalf("%d webhook requests failed the signature check", bad)
	}
}

// startHost runs `switchboard host` for id, failing over between relays in order.
func startHost(t *testing.T, id, up string, relays ...string) *proc {
	t.Helper()
	return start(t, nil, "host", "--relay", strings.Join(relays, ","), "--id", id,
		"--token", mint(t, "host", "--id", id), "--upstream", up)
}

// TestServeWebhooksReceiverDown: while the receiver answers 503, hosts come and go; once it recovers it gets every
// event late, exactly in the order they happened, each signed.
func TestServeWebhooksReceiverDown(t *testing.T) {
	const hookSecret = "webhook-secret-for-the-outage-test-0123456789"
	rc := newHookReceiver(t, hookSecret)
	rc.setDown(true)
	_, addr, metrics := startRelay(t, append(withSecret, "SWITCHBOARD_WEBHOOK_SECRET="+hookSecret),
		"--webhook-url", rc.srv.URL+"/hook", "--flap-window", "200ms")
	up := upstream(t, func(w http.ResponseWriter, r *http.Request) {})
	tok := mint(t, "client", "--hosts", "*")
	online := func(id string, want bool) {
		waitFor(t, fmt.Sprintf("%s online=%v", id, want), func() bool {
			_, body := get("http://"+addr+"/v1/hosts/"+id, tok)
			return strings.Contains(body, fmt.Sprintf(`"online":%v`, want))
		})
	}
	h1 := startHost(t, "h1", up, "http://"+addr)
	online("h1", true)
	startHost(t, "h2", up, "http://"+addr)
	online("h2", true)
	h1.signal(t, syscall.SIGTERM)
	h1.exitCode(t, 10*time.Second)
	online("h1", false)
	waitFor(t, "the sender retrying", func() bool {
		_, text := get("http://"+metrics+"/metrics", "")
		return strings.Contains(text, `switchboard_webhook_attempts_total{result="server_error"}`) &&
			!strings.Contains(text, `switchboard_webhook_attempts_total{result="server_error"} 0`)
	})
	waitFor(t, "h1's offline in the log", func() bool { // after the flap window
		_, text := get("http://"+metrics+"/metrics", "")
		return strings.Contains(text, `switchboard_presence_events_total{type="offline"} 1`)
	})
	rc.setDown(false)
	waitFor(t, "three webhooks", func() bool { return len(rc.unique()) >= 3 })
	got := rc.unique()
	want := []string{"online h1", "online h2", "offline h1"}
	if len(got) != len(want) {
		t.Fatalf("webhooks %+v, want %v", got, want)
	}
	for i, e := range got {
		if e.Type+" "+e.HostID != want[i] {
			t.Fatalf("webhook %d is %s %s, want %s (all: %+v)", i, e.Type, e.HostID, want[i], got)
		}
	}
	if bad := rc.badCount(); bad != 0 {
		t.Fatalf("%d webhook requests failed the signature check", bad)
	}
}
