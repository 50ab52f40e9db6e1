package peering

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/singleflight"
	"golang.org/x/time/rate"
)

// This file holds a replica's list of its peers and their internal URLs, and the fallback for a directory that
// cannot say where a host is: a replica asks its peers which of them holds the host's tunnel. Answers are cached
// briefly per host and rounds are single-flighted per host, so any number of requests waiting for one host cost
// one round of questions at a time.

// Directory is what Peers reads of the directory: the internal URLs the replicas advertise.
type Directory interface {
	// PeerURL returns the internal URL replica advertised.
	PeerURL(ctx context.Context, replica string) (string, error)
	// ListPeers returns every advertised replica's internal URL by replica id; nil if the directory cannot tell.
	ListPeers(ctx context.Context) (map[string]string, error)
}

// Peers is this replica's view of the other replicas: their internal URLs, the list of them kept from the
// directory's listings (for when the directory is down), and the asking of them which holds a host. Its methods
// are safe for concurrent use.
type Peers struct {
	// Immutable after NewPeers.
	self     string // this replica's id
	selfURL  string // its advertised internal URL; "" if none
	dir      Directory
	client   Client
	asks     *peerAsker    // has its own lock
	missAsks *rate.Limiter // rounds for hosts the directory does not know

	list atomic.Pointer[peerSet] // replaced whole by Refresh
	urls urlCache                // has its own lock
}

// NewPeers returns the Peers of replica self, which advertises selfURL ("" if it advertises none), reading dir and
// asking with client. Without a cluster secret (client.Signer not Enabled) no peer is reachable.
func NewPeers(self, selfURL string, dir Directory, client Client) *Peers {
	return &Peers{self: self, selfURL: selfURL, dir: dir, client: client, asks: newPeerAsker(),
		missAsks: rate.NewLimiter(missAskRate, missAskRate), urls: urlCache{byRaw: make(map[string]*url.URL)}}
}

// urlCache caches parsed internal URLs of peers.
type urlCache struct {
	mu    sync.Mutex
	byRaw map[string]*url.URL // raw URL → parsed
}

// URL returns the internal base URL of replica.
func (p *Peers) URL(ctx context.Context, replica string) (*url.URL, error) {
	if !p.client.Signer.Enabled() {
		return nil, errors.New("forwarding disabled: no cluster secret")
	}
	raw, err := p.dir.PeerURL(ctx, replica)
	if err != nil {
		return nil, fmt.Errorf("internal url of %s: %w", replica, err)
	}
	p.urls.mu.Lock()
	defer p.urls.mu.Unlock()
	if u, ok := p.urls.byRaw[raw]; ok {
		return u, nil
	}
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("internal url of %s: %w", replica, err)
	}
	if len(p.urls.byRaw) > 1024 {
		clear(p.urls.byRaw)
	}
	p.urls.byRaw[raw] = u
	return u, nil
}

// KnownURL returns the internal URL of replica in the list kept from the directory's listings.
func (p *Peers) KnownURL(replica string) (*url.URL, bool) {
	l := p.list.Load()
	if l == nil {
		return nil, false
	}
	u, ok := l.urls[replica]
	return u, ok
}

// Known returns the peers of the list kept from the directory's listings: replica id → internal URL.
func (p *Peers) Known() map[string]string {
	l := p.list.Load()
	if l == nil {
		return nil
	}
	out := make(map[string]string, len(l.urls))
	for id, u := range l.urls {
		out[id] = u.String()
	}
	return out
}

// askTimeout bounds one round of asking peers.
const askTimeout = 500 * time.Millisecond

// MaxAsked bounds how many peers one round asks.
const MaxAsked = 64

// How long a round's answer is reused for its host: a peer that holds it (found), or none (not found). A host
// that moves between replicas during an outage is misrouted for at most askFoundTTL; a host that connects is
// found at most askMissTTL late (a request held on a miss asks again as it looks again).
const (
	askFoundTTL = time.Second
	askMissTTL  = 250 * time.Millisecond
)

// Bounds of the ask-peers machinery: rounds in flight at once over all hosts (each asks up to MaxAsked peers),
// hosts whose answers are cached, and the rate of rounds for hosts the directory says are connected nowhere (a
// client whose token reaches many host ids must not turn each request for an unknown one into a fan-out to every
// peer; while the directory is down, only maxAskRounds bounds them).
const (
	maxAskRounds  = 32
	maxAskAnswers = 4096
	missAskRate   = 50 // rounds per second, burst as many
)

// peerForget is how long a peer that advertised itself stays in this replica's list after listings stopped naming
// it. The directory's list never drops a replica by itself (docs/scaling.md), so a listing without a peer this
// replica knew means the directory lost data: the peer is kept until it advertises again, or for peerForget.
const peerForget = time.Minute

// Results of Ask, a closed set of values for a metric label (switchboard_ask_peers_total).
const (
	AskFound    = "found"
	AskNotFound = "not_found"
	AskCached   = "cached"
	AskBusy     = "busy"
)

// peerSet is this replica's list of peers. It is replaced whole (copy on write) by Refresh and read by Ask.
type peerSet struct {
	urls map[string]*url.URL  // replica id → internal URL, other replicas only
	seen map[string]time.Time // replica id → when a listing last named it
}

// mergePeers returns the peer list after a listing of advertised replicas (listed: replica id → internal URL).
// self and selfURL are this replica's id and its advertised URL ("" if it advertises none). A listing that does
// not name this replica at its URL is not trusted: the directory lost data since this replica advertised (or it
// has not advertised yet), so the previous list is kept and trusted is false. Otherwise every listed peer is taken
// at its listed URL, and a known peer the listing lacks is kept until peerForget after a listing last named it.
func mergePeers(prev *peerSet, listed map[string]string, self, selfURL string, now time.Time) (next *peerSet, trusted bool) {
	if prev == nil {
		prev = &peerSet{}
	}
	if selfURL != "" && listed[self] != selfURL {
		return prev, false
	}
	next = &peerSet{urls: make(map[string]*url.URL, len(listed)), seen: make(map[string]time.Time, len(listed))}
	for id, raw := range listed {
		if id == self {
			continue
		}
		u, err := url.Parse(raw)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			continue
		}
		if old, ok := prev.urls[id]; ok && old.String() == raw {
			u = old // keep the pointer: the lean forward pools connections by address, not by pointer, but why allocate
		}
		next.urls[id] = u
		next.seen[id] = now
	}
	for id, u := range prev.urls {
		if _, ok := next.urls[id]; ok {
			continue
		}
		if seen := prev.seen[id]; now.Sub(seen) < peerForget {
			next.urls[id] = u
			next.seen[id] = seen
		}
	}
	return next, true
}

// Refresh lists the advertised replicas and merges them into the peer list (mergePeers). It reports false when
// the listing lacks this replica at its URL: the directory lost data, and this replica should advertise itself
// again. A listing that fails keeps the last list.
func (p *Peers) Refresh(ctx context.Context) bool {
	m, err := p.dir.ListPeers(ctx)
	if err != nil || m == nil {
		return true // keep the last list
	}
	next, trusted := mergePeers(p.list.Load(), m, p.self, p.selfURL, time.Now())
	if trusted {
		p.list.Store(next)
	}
	return trusted
}

// askAnswer is one round's answer for a host: the peer that holds it, if found.
type askAnswer struct {
	replica string
	base    *url.URL
	found   bool
	until   time.Time // reused until then
}

// peerAsker caches answers per host and single-flights rounds per host. Its methods are safe for concurrent use.
type peerAsker struct {
	flights singleflight.Group
	rounds  chan struct{} // a slot per round in flight (maxAskRounds)

	mu      sync.Mutex
	answers map[string]askAnswer // host id → last answer; at most maxAskAnswers
}

func newPeerAsker() *peerAsker {
	return &peerAsker{rounds: make(chan struct{}, maxAskRounds), answers: make(map[string]askAnswer)}
}

// cached returns hostID's answer if it is still fresh.
func (a *peerAsker) cached(hostID string, now time.Time) (askAnswer, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	ans, ok := a.answers[hostID]
	if !ok || !now.Before(ans.until) {
		return askAnswer{}, false
	}
	return ans, true
}

// remember caches ans for hostID, making room if the cache is full.
func (a *peerAsker) remember(hostID string, ans askAnswer, now time.Time) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if _, ok := a.answers[hostID]; !ok && len(a.answers) >= maxAskAnswers {
		maps.DeleteFunc(a.answers, func(_ string, v askAnswer) bool { return !now.Before(v.until) })
		if len(a.answers) >= maxAskAnswers {
			clear(a.answers) // every answer is fresh: a flood of distinct hosts; they are cheap to ask again
		}
	}
	a.answers[hostID] = ans
}

// find answers from the cache, or joins or leads a round for hostID. The leader runs round in its goroutine
// (singleflight.Group.Do); round must bound itself and must not end with the leader's request, as the others wait
// for its answer. find returns the answer and the result to count: found, not_found, cached, busy (no round slot
// free) or "" (joined another caller's round).
func (a *peerAsker) find(hostID string, round func() (askAnswer, error)) (askAnswer, string) {
	if ans, ok := a.cached(hostID, time.Now()); ok {
		return ans, AskCached
	}
	led := false // set by the fn, which runs only in the leader's goroutine
	v, err, _ := a.flights.Do(hostID, func() (any, error) {
		led = true
		if ans, ok := a.cached(hostID, time.Now()); ok { // a round that ended just now
			return ans, nil
		}
		select {
		case a.rounds <- struct{}{}:
		default:
			return askAnswer{}, errAskBusy
		}
		defer func() { <-a.rounds }()
		ans, err := round()
		if err != nil {
			return askAnswer{}, err
		}
		now := time.Now()
		if ans.found {
			ans.until = now.Add(askFoundTTL)
		} else {
			ans.until = now.Add(askMissTTL)
		}
		a.remember(hostID, ans, now)
		return ans, nil
	})
	ans, _ := v.(askAnswer)
	switch {
	case !led:
		return ans, ""
	case err != nil:
		return askAnswer{}, AskBusy
	case ans.found:
		return ans, AskFound
	default:
		return ans, AskNotFound
	}
}

// errAskBusy: every round slot is taken (maxAskRounds), or rounds for unknown hosts are over missAskRate; the host
// is not looked for this time.
var errAskBusy = errors.New("too many ask-peers rounds in flight")

// Ask finds which peer holds hostID's tunnel, from the cache or by asking every known peer at once, and returns
// the result to count (AskFound, …; "" for a caller that joined another's round). unknown says the directory
// answered that the host is connected nowhere: such rounds are rate-limited (missAskRate). A round runs under ctx,
// which should be the replica's lifetime, not a request's: other requests may be waiting for its answer.
func (p *Peers) Ask(ctx context.Context, hostID string, unknown bool) (replica string, base *url.URL, result string) {
	l := p.list.Load()
	if l == nil || len(l.urls) == 0 || !p.client.Signer.Enabled() {
		return "", nil, ""
	}
	ans, result := p.asks.find(hostID, func() (askAnswer, error) {
		if unknown && !p.missAsks.Allow() {
			return askAnswer{}, errAskBusy
		}
		return p.askRound(ctx, l, hostID), nil
	})
	if !ans.found {
		return "", nil, result
	}
	return ans.replica, ans.base, result
}

// askRound asks up to MaxAsked peers of l at once whether they hold hostID's tunnel and returns the first that
// does.
func (p *Peers) askRound(ctx context.Context, l *peerSet, hostID string) askAnswer {
	ctx, cancel := context.WithTimeout(ctx, askTimeout)
	defer cancel()
	found := make(chan askAnswer, 1)
	var wg sync.WaitGroup
	n := 0
	for id, u := range l.urls {
		if n++; n > MaxAsked {
			break
		}
		wg.Go(func() {
			if p.client.Has(ctx, u, hostID) {
				select {
				case found <- askAnswer{replica: id, base: u, found: true}:
					cancel() // the others can stop
				default:
				}
			}
		})
	}
	wg.Wait()
	select {
	case a := <-found:
		return a
	default:
		return askAnswer{}
	}
}
