package relay_test

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/switchboard-relay/switchboard/internal/directory"
	"github.com/switchboard-relay/switchboard/internal/presence"
	"github.com/switchboard-relay/switchboard/internal/redistest"
	"github.com/switchboard-relay/switchboard/internal/relay"
	"github.com/switchboard-relay/switchboard/internal/relaytest"
)

// The scope checker of the adversarial suite: hosts of two tenants (a:* and b:*, plus ab:on, whose id starts like
// tenant a's), online and offline, and clients with narrow tokens walking every client-facing API. Nothing outside
// a token's scope may leak: out-of-scope online, offline and unknown ids are answered with the same status,
// headers and body; no out-of-scope id appears in any byte of any answer (headers, bodies, cursors, event
// streams); event streams carry nothing about other hosts (their timing is TestEventsRevealNothingOutOfScope's).
// It runs on one relay, and on two replicas of a memory directory and of Redis, with hosts on both and every probe
// sent to each replica (an out-of-scope host held by the other replica must not be forwarded to, or answered
// differently).

// scopeHosts: where each host of the checker lives (index of the replica its agent connects to), and whether it
// stays online.
var scopeHosts = []struct {
	id      string
	replica int
	online  bool
}{
	{"b:on", 1, true},
	{"b:off", 0, false},
	{"ab:on", 0, true},
	{"a:on", 0, true},
	{"a:off", 1, false}, // last: the log's newest event is a:off's offline, in scope of a:*
}

// scopeTokens: the narrow tokens, the ids each may reach (in id order, as a listing returns them), and the ids it
// must learn nothing about.
var scopeTokens = []struct {
	name    string
	hosts   []string
	reach   []string
	outside []string
}{
	{"one host", []string{"a:on"}, []string{"a:on"}, []string{"a:off", "a:none", "ab:on", "b:on", "b:off", "b:none"}},
	{"prefix", []string{"a:*"}, []string{"a:off", "a:on"}, []string{"ab:on", "b:on", "b:off", "b:none", "a", "b:"}},
}

func TestScopeChecker(t *testing.T) {
	t.Run("single relay", func(t *testing.T) {
		r := relaytest.StartRelay(t, func(c *relay.Config) { c.FlapWindow = -1; c.EventsHeartbeat = 200 * time.Millisecond })
		checkScope(t, []string{r.URL})
	})
	t.Run("two replicas on the memory directory", func(t *testing.T) {
		dir := directory.NewMemory()
		t.Cleanup(func() { _ = dir.Close() })
		log := presence.NewMemory(presence.MemoryConfig{})
		var urls []string
		for range 2 {
			rep := relaytest.StartRelayOn(t, dir, func(c *relay.Config) {
				c.FlapWindow = -1
				c.EventsHeartbeat = 200 * time.Millisecond
				c.Events = log
			})
			urls = append(urls, rep.URL)
		}
		checkScope(t, urls)
	})
	t.Run("two replicas on Redis", func(t *testing.T) {
		addr, _ := redistest.Start(t)
		prefix := fmt.Sprintf("scope%d:", clusterSeq.Add(1))
		var urls []string
		for _, id := range []string{"A", "B"} {
			rep := startEventReplica(t, addr, prefix, id, relaytest.ReplicaLease, func(c *relay.Config) {
				c.FlapWindow = -1
				c.EventsHeartbeat = 200 * time.Millisecond
			})
			urls = append(urls, rep.URL)
		}
		checkScope(t, urls)
	})
}

// answer is a response as a client sees it, Date aside.
type answer struct {
	status int
	header http.Header
	body   string
}

func (a answer) String() string { return fmt.Sprintf("%d %v %s", a.status, a.header, a.body) }

func (a answer) equal(b answer) bool {
	return a.status == b.status && a.body == b.body && fmt.Sprint(a.header) == fmt.Sprint(b.header)
}

// ask sends a GET with token and extra headers to u.
func ask(t *testing.T, u, token string, extra http.Header) answer {
	t.Helper()
	req, err := http.NewRequest("GET", u, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header = extra.Clone()
	if req.Header == nil {
		req.Header = http.Header{}
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", u, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	resp.Header.Del("Date")
	return answer{resp.StatusCode, resp.Header, string(b)}
}

// noLeak fails t if any out-of-scope id appears in what.
func noLeak(t *testing.T, where, what string, outside []string) {
	t.Helper()
	for _, id := range outside {
		if len(id) > 2 && strings.Contains(what, id) {
			t.Fatalf("%s: mentions out-of-scope %q: %s", where, id, what)
		}
	}
}

func checkScope(t *testing.T, bases []string) {
	for _, h := range scopeHosts {
		l := relaytest.StartHost(t, bases[h.replica%len(bases)], h.id, textHandler(h.id), nil)
		if !h.online {
			_ = l.Close()
		}
	}
	all := relaytest.ClientToken(t, "admin", "*")
	for _, h := range scopeHosts {
		relaytest.Eventually(t, 10*time.Second, h.id+" settled", func() bool {
			_, got := getHost(t, &relaytest.Relay{URL: bases[0]}, h.id, all)
			return got.ID == h.id && got.Online == h.online
		})
	}

	for _, tk := range scopeTokens {
		tok := relaytest.ClientToken(t, "c", tk.hosts...)
		// A live event stream, open while the probes run.
		live := subscribeRaw(t, bases[len(bases)-1], tok, "")
		for i, base := range bases {
			where := fmt.Sprintf("%s via replica %d", tk.name, i)
			checkScopeOn(t, where, base, tok, tk.reach, tk.outside)
		}

		// The replay: exactly the token's events, then only heartbeats.
		replayed := subscribeRawAt(t, bases[0]+"/v1/presence/events?after=", tok, "")
		var hosts []string
		lines := replayed.until(t, 10*time.Second, "the replay's end", func(l string) bool {
			if d, ok := strings.CutPrefix(l, "data: "); ok {
				var e presence.Event
				_ = json.Unmarshal([]byte(d), &e)
				hosts = append(hosts, e.HostID)
			}
			return l == ": heartbeat"
		})
		noLeak(t, tk.name+" replayed stream", fmt.Sprint(lines), tk.outside)
		for i, l := range lines {
			if strings.HasPrefix(l.text, "id: ") && (i+1 == len(lines) || !strings.HasPrefix(lines[i+1].text, "event: ")) {
				t.Fatalf("%s: an id-only block in the replay: %v", tk.name, lines)
			}
		}
		// Which events, not their order across hosts: two hosts' events are appended by their own setups, and a
		// host's WaitUp does not wait for its online event to be in the log.
		if got, want := slices.Sorted(slices.Values(hosts)), scopeEvents(tk.reach); strings.Join(got, " ") != want {
			t.Fatalf("%s: replay has events of %q, want %q", tk.name, hosts, want)
		}
		// The live stream saw nothing but heartbeats while the probes ran (nothing changed in scope).
		relaytest.Eventually(t, 10*time.Second, "a heartbeat on the live stream", func() bool {
			for _, l := range live.drain() {
				if l.text != "" && l.text != ": heartbeat" && !strings.HasPrefix(l.text, "retry:") && !strings.HasPrefix(l.text, ": switchboard") {
					t.Fatalf("%s: the live stream wrote %q", tk.name, l.text)
				}
				if l.text == ": heartbeat" {
					return true
				}
			}
			return false
		})
	}

	// The other tenant's hosts were served all along.
	for i, base := range bases {
		if code, body := getText(t, base+"/hosts/b:on/", all); code != 200 || body != "b:on" {
			t.Fatalf("b:on via replica %d: %d %q", i, code, body)
		}
	}
}

// scopeEvents is the hosts of the events of the reachable ids, sorted: each host's online, and the offline of
// those that left.
func scopeEvents(reach []string) string {
	var out []string
	for _, h := range scopeHosts {
		if slices.Contains(reach, h.id) {
			out = append(out, h.id)
			if !h.online {
				out = append(out, h.id)
			}
		}
	}
	slices.Sort(out)
	return strings.Join(out, " ")
}

// checkScopeOn walks the client-facing API of one replica with tok.
func checkScopeOn(t *testing.T, where, base, tok string, reach, outside []string) {
	t.Helper()
	unknown := "zz:none"

	// GET /v1/hosts/{id}, and /hosts/{id}/ (plain and WebSocket): every id outside is answered like one nobody has.
	upgrade := http.Header{"Connection": {"Upgrade"}, "Upgrade": {"websocket"}, "Sec-Websocket-Version": {"13"},
		"Sec-Websocket-Key": {"dGhlIHNhbXBsZSBub25jZQ=="}}
	for _, probe := range []struct {
		name  string
		url   func(id string) string
		extra http.Header
	}{
		{"presence", func(id string) string { return base + "/v1/hosts/" + url.PathEscape(id) }, nil},
		{"batch", func(id string) string { return base + "/v1/hosts?ids=" + url.QueryEscape(id) }, nil},
		{"batch with an own id", func(id string) string { return base + "/v1/hosts?ids=" + url.QueryEscape(reach[0]+","+id) }, nil},
		{"proxy", func(id string) string { return base + "/hosts/" + url.PathEscape(id) + "/x?y=1" }, nil},
		{"proxy websocket", func(id string) string { return base + "/hosts/" + url.PathEscape(id) + "/ws" }, upgrade},
	} {
		want := ask(t, probe.url(unknown), tok, probe.extra)
		if want.status == 200 && probe.name != "batch" && probe.name != "batch with an own id" {
			t.Fatalf("%s %s of an unknown host: %v", where, probe.name, want)
		}
		for _, id := range outside {
			got := ask(t, probe.url(id), tok, probe.extra)
			if !got.equal(want) {
				t.Fatalf("%s %s: %s answered\n%v\nbut an unknown id\n%v", where, probe.name, id, got, want)
			}
			noLeak(t, where+" "+probe.name+" "+id, fmt.Sprint(got), outside)
		}
	}

	// GET /v1/hosts: every filter and page size, every cursor; only the token's hosts, and cursors that read as
	// nothing.
	for _, q := range []string{"", "online=true", "online=false", "prefix=a", "prefix=a:", "prefix=b", "prefix=ab",
		"prefix=a:o", "label=x=y"} {
		for _, limit := range []int{1, 2, 100} {
			var ids []string
			cursor := ""
			for pages := 0; ; pages++ {
				if pages > 20 {
					t.Fatalf("%s: listing %q does not end", where, q)
				}
				u := fmt.Sprintf("%s/v1/hosts?%s&limit=%d", base, q, limit)
				if cursor != "" {
					u += "&cursor=" + url.QueryEscape(cursor)
				}
				got := ask(t, u, tok, nil)
				if got.status != 200 {
					t.Fatalf("%s: GET %s: %v", where, u, got)
				}
				noLeak(t, where+" list "+q, fmt.Sprint(got), outside)
				var p hostPage
				if err := json.Unmarshal([]byte(got.body), &p); err != nil {
					t.Fatal(err)
				}
				for _, h := range p.Hosts {
					ids = append(ids, h.ID)
				}
				if p.NextCursor == "" {
					break
				}
				raw, _ := base64.RawURLEncoding.DecodeString(p.NextCursor)
				noLeak(t, where+" cursor", string(raw), append(slices.Clone(reach), outside...))
				cursor = p.NextCursor
			}
			for _, id := range ids {
				if !slices.Contains(reach, id) {
					t.Fatalf("%s: listing %q shows %q", where, q, id)
				}
			}
			if q == "" && strings.Join(ids, " ") != strings.Join(reach, " ") {
				t.Fatalf("%s: listing shows %q, want %q", where, ids, reach)
			}
		}
	}
	// Probing the id space with prefix= answers the same bytes whether other tenants have hosts there or not.
	want := ask(t, base+"/v1/hosts?prefix=zz:", tok, nil)
	for _, id := range outside {
		for i := 1; i <= len(id); i++ {
			if strings.HasPrefix(reach[0], id[:i]) {
				continue // a prefix of the caller's own hosts lists them
			}
			if got := ask(t, base+"/v1/hosts?prefix="+url.QueryEscape(id[:i]), tok, nil); !got.equal(want) {
				t.Fatalf("%s: prefix %q answered %v, an empty prefix %v", where, id[:i], got, want)
			}
		}
	}

	// Errors mention no id outside the scope.
	for _, u := range []string{
		base + "/v1/hosts?ids=" + strings.Repeat("b:on,", 200),
		base + "/v1/hosts?ids=b:on,a%2Fb",
		base + "/v1/hosts?cursor=" + base64.RawURLEncoding.EncodeToString([]byte("b:on")),
		base + "/hosts/b:on%2F/x",
	} {
		got := ask(t, u, tok, nil)
		if got.status != 400 {
			t.Fatalf("%s: GET %s: %v, want 400", where, u, got)
		}
		noLeak(t, where+" error", fmt.Sprint(got), outside)
	}
}
