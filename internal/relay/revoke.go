package relay

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/switchboard-relay/switchboard/internal/auth"
	"github.com/switchboard-relay/switchboard/internal/directory"
	"github.com/switchboard-relay/switchboard/internal/tunnel"
)

// Revocation (POST /v1/admin/revoke). The list lives in the directory (Directory.Revoke), shared by every replica,
// each entry until the operator's time. Every replica keeps a copy in memory, which the verifier checks on every
// token use (a map lookup, no directory read per request). The copy is brought up to date two ways:
//
//   - at once: the replica that took the revocation sends it to every peer over the internal protocol (signed
//     hops), and each peer adds it and closes what it holds of the revoked tokens;
//   - by a poll of the directory every revokePoll: one read per replica per interval, whatever the traffic, that
//     covers a peer that was unreachable when the revocation was sent, and a replica that starts later.
//
// A poll was chosen over a pub/sub channel because it needs no connection of its own and no replay logic for
// missed messages: the list is small (directory.MaxRevocations) and reading it whole is its own repair.

// revokePoll is how often a replica reads the revocation list from the directory.
const revokePoll = 2 * time.Second

// revocations is this replica's copy of the revocation list. Guarded by mu.
type revocations struct {
	mu  sync.RWMutex
	jti map[string]time.Time
	sub map[string]time.Time
	any atomic.Bool // the maps are not empty: the common case, nothing revoked, takes no lock
}

// revoked reports whether claims are of a revoked token: by its jti, or by its subject.
func (rv *revocations) revoked(c auth.Claims, now time.Time) bool {
	if !rv.any.Load() {
		return false
	}
	rv.mu.RLock()
	defer rv.mu.RUnlock()
	if u, ok := rv.jti[c.ID]; ok && c.ID != "" && now.Before(u) {
		return true
	}
	if u, ok := rv.sub[c.Subject]; ok && c.Subject != "" && now.Before(u) {
		return true
	}
	return false
}

// add records one revocation, keeping the later end.
func (rv *revocations) add(r directory.Revocation) {
	rv.mu.Lock()
	defer rv.mu.Unlock()
	m := &rv.sub
	key := r.Subject
	if r.TokenID != "" {
		m, key = &rv.jti, r.TokenID
	}
	if *m == nil {
		*m = make(map[string]time.Time)
	}
	if u := r.Until.Truncate(time.Millisecond); u.After((*m)[key]) {
		(*m)[key] = u
	}
	rv.any.Store(true)
}

// replace installs the list read from the directory, plus what was added locally and is not over yet (a
// revocation this replica took or was sent may reach the directory's read replica after this poll began). It
// returns those local ones the list lacks (or has with an earlier end): the directory may have lost them (Redis
// restarted empty, flushed, or failed over before replicating), and the caller writes them back. Ends are compared
// in whole milliseconds, the directory's precision (add keeps no finer), so that a revocation read back is not
// taken for a lost one and written again at every poll.
func (rv *revocations) replace(list []directory.Revocation, now time.Time) (missing []directory.Revocation) {
	jti, sub := make(map[string]time.Time), make(map[string]time.Time)
	for _, r := range list {
		if r.TokenID != "" {
			jti[r.TokenID] = r.Until
		} else if r.Subject != "" {
			sub[r.Subject] = r.Until
		}
	}
	rv.mu.Lock()
	defer rv.mu.Unlock()
	for i, pair := range [2][2]map[string]time.Time{{rv.jti, jti}, {rv.sub, sub}} {
		for k, u := range pair[0] {
			if now.Before(u) && u.UnixMilli() > pair[1][k].UnixMilli() {
				pair[1][k] = u
				r := directory.Revocation{Subject: k, Until: u}
				if i == 0 {
					r = directory.Revocation{TokenID: k, Until: u}
				}
				missing = append(missing, r)
			}
		}
	}
	rv.jti, rv.sub = jti, sub
	rv.any.Store(len(jti)+len(sub) > 0)
	return missing
}

// revokingVerifier refuses the tokens on the revocation list, after the inner verifier accepted them.
type revokingVerifier struct {
	inner auth.Verifier
	list  *revocations
}

// errRevoked is the cause of a refused revoked token; it matches auth.ErrInvalidToken, so every endpoint answers
// it with 401 as it does any other refused token.
var errRevoked = fmt.Errorf("%w: revoked", auth.ErrInvalidToken)

// Verify implements auth.Verifier.
func (v revokingVerifier) Verify(ctx context.Context, token string) (auth.Claims, error) {
	c, err := v.inner.Verify(ctx, token)
	if err != nil {
		return c, err
	}
	if v.list.revoked(c, time.Now()) {
		return auth.Claims{}, errRevoked
	}
	return c, nil
}

// revokeLoop keeps the revocation copy up to date until ctx ends (see revokePoll).
func (s *Server) revokeLoop(ctx context.Context) {
	t := time.NewTicker(revokePoll)
	defer t.Stop()
	for {
		list, err := s.dir.Revocations(ctx)
		if err == nil {
			// What this replica holds and the directory lacks is written back: a revocation must survive the
			// directory losing data as long as one replica remembers it.
			for _, r := range s.revoked.replace(list, time.Now()) {
				if err := s.dir.Revoke(ctx, r); err != nil {
					s.log.Debug("revocation not written back", "err", err)
				}
			}
			s.cutRevoked()
		} else if ctx.Err() == nil {
			s.log.Debug("revocation list not read", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// cutRevoked closes every tunnel and live client session of this replica whose token is revoked, and returns how
// many it closed.
func (s *Server) cutRevoked() int {
	if !s.revoked.any.Load() {
		return 0 // nothing is revoked: no tunnel or exchange to look at
	}
	now := time.Now()
	n := 0
	for _, t := range s.snapshot() {
		if t.expiring.Load() || !s.revoked.revoked(t.token, now) {
			continue
		}
		if t.expiring.CompareAndSwap(false, true) { // the same mark as expiry: close once
			n++
			s.spawn(func() { // none once Close began: Close closes it
				t.log.Info("tunnel closed: its host token was revoked", "token_subject", t.token.Subject)
				t.close(tunnel.CloseTokenExpired, "host token revoked", "revoked")
			})
		}
	}
	return n + s.live.cut(func(c auth.Claims) bool { return s.revoked.revoked(c, now) })
}

// liveUses are this replica's long-lived client exchanges (WebSockets, raw TCP streams, event streams), with the
// claims of their tokens, so that a revocation can end them. Short exchanges are not tracked: they end on their
// own, and the next one is refused.
type liveUses struct {
	mu sync.Mutex
	m  map[*liveUse]struct{}
}

// liveUse is one long-lived exchange. cancel ends it; revoked tells the exchange why (a WebSocket then closes the
// client's side with 4401).
type liveUse struct {
	claims  auth.Claims
	cancel  context.CancelFunc
	revoked atomic.Bool
}

type liveUseKey struct{}

// track registers a long-lived exchange of claims and returns the context it must run under, and the function
// that unregisters it.
func (l *liveUses) track(ctx context.Context, c auth.Claims) (context.Context, func()) {
	u := &liveUse{claims: c}
	ctx, u.cancel = context.WithCancel(context.WithValue(ctx, liveUseKey{}, u))
	l.mu.Lock()
	if l.m == nil {
		l.m = make(map[*liveUse]struct{})
	}
	l.m[u] = struct{}{}
	l.mu.Unlock()
	return ctx, func() {
		l.mu.Lock()
		delete(l.m, u)
		l.mu.Unlock()
		u.cancel()
	}
}

// cut ends every live exchange whose claims match, and returns how many it ended (one the poll or another
// revocation already cut is not counted again).
func (l *liveUses) cut(match func(auth.Claims) bool) int {
	l.mu.Lock()
	var hit []*liveUse
	for u := range l.m {
		if match(u.claims) {
			hit = append(hit, u)
		}
	}
	l.mu.Unlock()
	n := 0
	for _, u := range hit {
		if u.revoked.CompareAndSwap(false, true) {
			n++
		}
		u.cancel()
	}
	return n
}

// revokedExchange reports whether the exchange running under ctx was ended by a revocation.
func revokedExchange(ctx context.Context) bool {
	u, _ := ctx.Value(liveUseKey{}).(*liveUse)
	return u != nil && u.revoked.Load()
}

// longLiveBody is the request body length from which an upload is tracked as long-lived.
const longLiveBody = 1 << 20

// longLived reports whether a client request will likely hold its exchange open: an upgrade (WebSocket, raw TCP,
// or any other protocol), an event stream, or an upload of unknown length (chunked) or over longLiveBody. Other
// exchanges are not tracked (it costs a context and a map entry each): an answer already streaming when its
// token is revoked runs to its end, and the next request is refused.
func longLived(r *http.Request) bool {
	return websocketRequested(r) || r.Header.Get("Upgrade") != "" ||
		headerHasToken(r.Header, "Accept", "text/event-stream") ||
		r.ContentLength < 0 || r.ContentLength > longLiveBody
}
