package relay

import (
	"math/rand/v2"
	"net"
	"net/http"
	"sync"
	"time"

	"golang.org/x/time/rate"

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

// ipLimiter rate-limits tunnel upgrades per client IP. Entries idle for a while are swept.
type ipLimiter struct {
	limit rate.Limit
	burst int

	mu       sync.Mutex // guards limiters
	limiters map[string]*ipEntry
}

type ipEntry struct {
	lim  *rate.Limiter
	seen time.Time
}

func newIPLimiter(perSecond float64, burst int) *ipLimiter {
	return &ipLimiter{limit: rate.Limit(perSecond), burst: burst, limiters: make(map[string]*ipEntry)}
}

func (l *ipLimiter) allow(ip string, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	e := l.limiters[ip]
	if e == nil {
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
