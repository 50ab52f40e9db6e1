package relay

import (
	"math/rand/v2"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/switchboard-relay/switchboard/internal/auth"
	"github.com/switchboard-relay/switchboard/internal/tunnel"
)

// validHostID reports whether id is a well-formed host id (tunnel.CheckHostID: 1..128 bytes of visible UTF-8, no
// '/').
func validHostID(id string) bool { return tunnel.ValidHostID(id) }

// reserveSlot takes a place under MaxTunnels for a tunnel of id about to be set up, or reports false at the limit.
// Setups in progress hold their place, so a burst of half-open upgrades cannot pass the limit. A tunnel for an id
// registered here will replace that one, so it needs no new place: a host whose old tunnel is a zombie the relay
// has not noticed yet can still reconnect at the limit. The place is given back by register or releaseSlot.
func (s *Server) reserveSlot(id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	used := len(s.tunnels) + s.settingUp
	if s.tunnels[id] != nil {
		used--
	}
	if used >= s.cfg.MaxTunnels {
		return false
	}
	s.settingUp++
	return true
}

// releaseSlot gives back the place of a setup that failed before register.
func (s *Server) releaseSlot() {
	s.mu.Lock()
	s.settingUp--
	s.mu.Unlock()
}

// maxLimiterEntries bounds the addresses an ipLimiter remembers: past it, a new address evicts an arbitrary one
// (whose bucket starts full again if it comes back), so a flood from many addresses cannot grow the map.
const maxLimiterEntries = 100_000

// ipLimiter rate-limits tunnel upgrades per client IP. Entries idle for a while are swept, and there are never
// more than max of them.
type ipLimiter struct {
	limit rate.Limit
	burst int
	max   int

	mu       sync.Mutex // guards limiters
	limiters map[string]*ipEntry
}

type ipEntry struct {
	lim  *rate.Limiter
	seen time.Time
}

func newIPLimiter(perSecond float64, burst int) *ipLimiter {
	return &ipLimiter{limit: rate.Limit(perSecond), burst: burst, max: maxLimiterEntries, limiters: make(map[string]*ipEntry)}
}

func (l *ipLimiter) allow(ip string, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	e := l.limiters[ip]
	if e == nil {
		if len(l.limiters) >= l.max {
			for old := range l.limiters { // map order is unspecified: an arbitrary victim
				delete(l.limiters, old)
				break
			}
		}
		e = &ipEntry{lim: rate.NewLimiter(l.limit, l.burst)}
		l.limiters[ip] = e
	}
	e.seen = now
	return e.lim.AllowN(now, 1)
}

// sweep forgets IPs not seen for ten minutes (their buckets are full again by then).
func (l *ipLimiter) sweep(now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for ip, e := range l.limiters {
		if now.Sub(e.seen) > 10*time.Minute {
			delete(l.limiters, ip)
		}
	}
}

// clientIP is the remote address of r without its port.
func clientIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// randDuration is uniform in [0, d).
func randDuration(d time.Duration) time.Duration {
	if d <= 0 {
		return 0
	}
	return rand.N(d)
}

// callerKey names whom an exchange is charged to under MaxStreamsPerClient: the token's subject when the client
// authenticated, else its IP. A forwarded exchange (hop) comes from a peer replica, which appended the address it
// saw to X-Forwarded-For.
func callerKey(r *http.Request, subject string, hop bool) string {
	if subject != "" && subject != auth.AnonymousSubject {
		return "sub:" + subject
	}
	if hop {
		if v := r.Header.Values("X-Forwarded-For"); len(v) > 0 {
			last := v[len(v)-1]
			if i := strings.LastIndexByte(last, ','); i >= 0 {
				last = last[i+1:]
			}
			if ip := strings.TrimSpace(last); ip != "" {
				return "ip:" + ip
			}
		}
	}
	return "ip:" + clientIP(r)
}

// admitCaller counts one more exchange of caller on t, or reports false if caller already has limit in flight.
// The map holds only callers with exchanges in flight, so it is bounded by MaxStreamsPerHost.
func (t *tunnelConn) admitCaller(caller string, limit int) bool {
	t.callersMu.Lock()
	defer t.callersMu.Unlock()
	if t.callers[caller] >= limit {
		return false
	}
	if t.callers == nil {
		t.callers = make(map[string]int)
	}
	t.callers[caller]++
	return true
}

// releaseCaller gives back a place taken by admitCaller.
func (t *tunnelConn) releaseCaller(caller string) {
	t.callersMu.Lock()
	defer t.callersMu.Unlock()
	if t.callers[caller] <= 1 {
		delete(t.callers, caller)
		return
	}
	t.callers[caller]--
}
