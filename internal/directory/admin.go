package directory

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/rueidis"
)

// This file holds the directory's admin state: host bans and token revocations (see Directory.Ban and
// Directory.Revoke).

// Revocation refuses tokens until Until: the one whose "jti" is TokenID, or every token whose "sub" is Subject.
// Exactly one of TokenID and Subject is set.
type Revocation struct {
	TokenID string    `json:"jti,omitempty"`
	Subject string    `json:"sub,omitempty"`
	Until   time.Time `json:"until"`
}

// MaxRevocations bounds the live revocations a directory holds, so that what every replica reads and keeps in
// memory (and checks on every token) stays small; Revoke fails with ErrInvalid beyond it.
const MaxRevocations = 10_000

// maxRevocationValue bounds a revoked token id or subject in bytes.
const maxRevocationValue = 256

// member is how rv is stored: "jti:<id>" or "sub:<subject>".
func (rv Revocation) member() (string, error) {
	switch {
	case (rv.TokenID == "") == (rv.Subject == ""):
		return "", fmt.Errorf("%w: a revocation names a jti or a sub, not both or neither", ErrInvalid)
	case len(rv.TokenID) > maxRevocationValue || len(rv.Subject) > maxRevocationValue:
		return "", fmt.Errorf("%w: revoked jti or sub longer than %d bytes", ErrInvalid, maxRevocationValue)
	case rv.TokenID != "":
		return "jti:" + rv.TokenID, nil
	default:
		return "sub:" + rv.Subject, nil
	}
}

// revocationOf reads a stored member back.
func revocationOf(member string, until time.Time) (Revocation, bool) {
	if v, ok := strings.CutPrefix(member, "jti:"); ok && v != "" {
		return Revocation{TokenID: v, Until: until}, true
	}
	if v, ok := strings.CutPrefix(member, "sub:"); ok && v != "" {
		return Revocation{Subject: v, Until: until}, true
	}
	return Revocation{}, false
}

// memAdmin is Memory's bans and revocations. Guarded by its own mutex, never held with Memory.mu.
type memAdmin struct {
	mu      sync.Mutex
	bans    map[string]time.Time
	revoked map[string]time.Time // member → until
}

func (m *Memory) admin() *memAdmin {
	m.adminOnce.Do(func() {
		m.adm = &memAdmin{bans: make(map[string]time.Time), revoked: make(map[string]time.Time)}
	})
	return m.adm
}

// Ban implements Directory.
func (m *Memory) Ban(ctx context.Context, hostID string, until time.Time) error {
	if err := checkIDs(hostID, "-"); err != nil {
		return fmt.Errorf("ban %s: %w", hostID, err)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("ban %s: %w", hostID, err)
	}
	a, now := m.admin(), m.now()
	a.mu.Lock()
	defer a.mu.Unlock()
	for id, u := range a.bans { // drop the expired, so bans of many hosts over time do not pile up
		if !u.After(now) {
			delete(a.bans, id)
		}
	}
	if until.After(now) {
		a.bans[hostID] = until
	} else {
		delete(a.bans, hostID)
	}
	return nil
}

// BannedUntil implements Directory.
func (m *Memory) BannedUntil(ctx context.Context, hostID string) (time.Time, error) {
	if err := ctx.Err(); err != nil {
		return time.Time{}, fmt.Errorf("banned %s: %w", hostID, err)
	}
	a := m.admin()
	a.mu.Lock()
	defer a.mu.Unlock()
	if u, ok := a.bans[hostID]; ok && u.After(m.now()) {
		return u, nil
	}
	return time.Time{}, nil
}

// Revoke implements Directory.
func (m *Memory) Revoke(ctx context.Context, rv Revocation) error {
	key, err := rv.member()
	if err != nil {
		return fmt.Errorf("revoke: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("revoke: %w", err)
	}
	a, now := m.admin(), m.now()
	a.mu.Lock()
	defer a.mu.Unlock()
	for k, u := range a.revoked {
		if !u.After(now) {
			delete(a.revoked, k)
		}
	}
	if old, ok := a.revoked[key]; ok {
		if rv.Until.After(old) {
			a.revoked[key] = rv.Until
		}
		return nil
	}
	if !rv.Until.After(now) {
		return nil
	}
	if len(a.revoked) >= MaxRevocations {
		return fmt.Errorf("revoke: %w: %d revocations are live already", ErrInvalid, MaxRevocations)
	}
	a.revoked[key] = rv.Until
	return nil
}

// Revocations implements Directory.
func (m *Memory) Revocations(ctx context.Context) ([]Revocation, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("revocations: %w", err)
	}
	a, now := m.admin(), m.now()
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make([]Revocation, 0, len(a.revoked))
	for k, u := range a.revoked {
		if rv, ok := revocationOf(k, u); ok && u.After(now) {
			out = append(out, rv)
		}
	}
	return out, nil
}

// banKey holds hostID's ban: the end as Unix milliseconds, expiring then (PXAT).
func (r *Redis) banKey(hostID string) string { return r.cfg.Prefix + "{" + hostID + "}:ban" }

// revokedKey is the sorted set of revocations: member "jti:<id>" or "sub:<subject>", score the end in Unix
// milliseconds. The key itself expires with its latest member.
func (r *Redis) revokedKey() string { return r.cfg.Prefix + "revoked" }

// Ban implements Directory: one SET with PXAT (or a DEL to lift it).
func (r *Redis) Ban(ctx context.Context, hostID string, until time.Time) error {
	if err := checkIDs(hostID, "-"); err != nil {
		return fmt.Errorf("ban %s: %w", hostID, err)
	}
	if r.closed.Load() {
		return fmt.Errorf("ban %s: %w", hostID, ErrClosed)
	}
	ctx, cancel := context.WithTimeout(ctx, r.cfg.Timeout)
	defer cancel()
	cmd := r.client.B().Del().Key(r.banKey(hostID)).Build()
	if ms := until.UnixMilli(); until.After(r.now()) {
		cmd = r.client.B().Set().Key(r.banKey(hostID)).Value(strconv.FormatInt(ms, 10)).Pxat(until).Build()
	}
	if err := r.client.Do(ctx, cmd).Error(); err != nil {
		return fmt.Errorf("ban %s: %w", hostID, err)
	}
	return nil
}

// BannedUntil implements Directory: one GET, beside the claim script every registration runs anyway. (Not through the
// client-side cache: its invalidation arrives asynchronously, and a ban must hold from the moment it was set.)
func (r *Redis) BannedUntil(ctx context.Context, hostID string) (time.Time, error) {
	if r.closed.Load() {
		return time.Time{}, fmt.Errorf("banned %s: %w", hostID, ErrClosed)
	}
	ctx, cancel := context.WithTimeout(ctx, r.cfg.Timeout)
	defer cancel()
	ms, err := r.client.Do(ctx, r.client.B().Get().Key(r.banKey(hostID)).Build()).AsInt64()
	if rueidis.IsRedisNil(err) {
		return time.Time{}, nil
	}
	if err != nil {
		return time.Time{}, fmt.Errorf("banned %s: %w", hostID, err)
	}
	if until := time.UnixMilli(ms); until.After(r.now()) {
		return until, nil
	}
	return time.Time{}, nil
}

// revokeScript adds a revocation keeping the later end, refuses a new one past the limit, and makes the set expire
// with its latest member. KEYS[1] revoked set; ARGV: member, until ms, now ms, limit. Returns 1, or 0 if full.
var revokeScript = rueidis.NewLuaScript(`
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[3])
local old = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not old and redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[4]) then return 0 end
if not old or tonumber(old) < tonumber(ARGV[2]) then redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1]) end
local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
if last[2] then redis.call('PEXPIREAT', KEYS[1], last[2]) end
return 1`)

// Revoke implements Directory: one script (revokeScript).
func (r *Redis) Revoke(ctx context.Context, rv Revocation) error {
	member, err := rv.member()
	if err != nil {
		return fmt.Errorf("revoke: %w", err)
	}
	if r.closed.Load() {
		return fmt.Errorf("revoke: %w", ErrClosed)
	}
	now := r.now()
	if !rv.Until.After(now) {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, r.cfg.Timeout)
	defer cancel()
	n, err := revokeScript.Exec(ctx, r.client, []string{r.revokedKey()}, []string{member,
		strconv.FormatInt(rv.Until.UnixMilli(), 10), strconv.FormatInt(now.UnixMilli(), 10),
		strconv.Itoa(MaxRevocations)}).AsInt64()
	if err != nil {
		return fmt.Errorf("revoke: %w", err)
	}
	if n == 0 {
		return fmt.Errorf("revoke: %w: %d revocations are live already", ErrInvalid, MaxRevocations)
	}
	return nil
}

// Revocations implements Directory: one ZRANGE BYSCORE from now on.
func (r *Redis) Revocations(ctx context.Context) ([]Revocation, error) {
	if r.closed.Load() {
		return nil, fmt.Errorf("revocations: %w", ErrClosed)
	}
	ctx, cancel := context.WithTimeout(ctx, r.cfg.Timeout)
	defer cancel()
	now := strconv.FormatInt(r.now().UnixMilli()+1, 10)
	zs, err := r.client.Do(ctx, r.client.B().Zrange().Key(r.revokedKey()).Min(now).Max("+inf").Byscore().
		Limit(0, MaxRevocations).Withscores().Build()).AsZScores()
	if err != nil {
		return nil, fmt.Errorf("revocations: %w", err)
	}
	out := make([]Revocation, 0, len(zs))
	for _, z := range zs {
		if rv, ok := revocationOf(z.Member, time.UnixMilli(int64(z.Score))); ok {
			out = append(out, rv)
		}
	}
	return out, nil
}
