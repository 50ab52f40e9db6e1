package agent

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"
	"time"
)

// A tunnel lives no longer than its host token: the relay closes it at the token's "exp" with 4401. With a
// TokenSource the agent gets a fresh token before then and opens a new tunnel with it while the old one still
// serves (make-before-break); the relay then retires the old tunnel once its exchanges finish. The new tunnel is
// opened at 90% of the token's lifetime or one minute before its "exp", whichever is later (renewAt), measured from
// when the agent got the token, on the agent's clock; a failed renewal is retried with backoff until "exp".

// maxTokenLen bounds the token tokenExpiry decodes; the relay refuses longer ones anyway.
const maxTokenLen = 16 << 10

// tokenExpiry reads the "exp" claim of a JWT without verifying it (the relay verifies; the agent only plans its
// renewal). ok is false when tok is not a JWT with a numeric "exp".
func tokenExpiry(tok string) (exp time.Time, ok bool) {
	if len(tok) > maxTokenLen {
		return time.Time{}, false
	}
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		return time.Time{}, false
	}
	payload, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(parts[1], "="))
	if err != nil {
		return time.Time{}, false
	}
	var claims struct {
		Exp *float64 `json:"exp"`
	}
	if json.Unmarshal(payload, &claims) != nil || claims.Exp == nil {
		return time.Time{}, false
	}
	e := *claims.Exp
	if e < 1 || e > 1<<40 { // before 1970-01-01T00:00:01 or beyond year 36000: not a date anyone meant
		return time.Time{}, false
	}
	sec := int64(e)
	return time.Unix(sec, int64((e-float64(sec))*1e9)), true
}

// renewAt is when a tunnel opened with a token got at got and expiring at exp should be replaced: at 90% of the
// lifetime or a minute before exp, whichever is later. ok is false for a token that had no lifetime left.
func renewAt(got, exp time.Time) (at time.Time, ok bool) {
	life := exp.Sub(got)
	if life <= 0 {
		return time.Time{}, false
	}
	at = got.Add(life / 10 * 9)
	if late := exp.Add(-time.Minute); late.After(at) {
		at = late
	}
	return at, true
}

// token returns the token for the next attempt: TokenSource's, else Config.Token.
func (l *Listener) token(ctx context.Context) (string, error) {
	if l.cfg.TokenSource == nil {
		return l.cfg.Token, nil
	}
	t, err := l.cfg.TokenSource(ctx)
	if err != nil {
		return "", fmt.Errorf("get token: %w", err)
	}
	return t, nil
}

// planRenewal arms timer for s's renewal and returns its channel, or nil when s cannot or need not be renewed.
func (l *Listener) planRenewal(timer *time.Timer, s *session) <-chan time.Time {
	timer.Stop()
	if s.tokenExp.IsZero() {
		return nil
	}
	if l.cfg.TokenSource == nil {
		l.log.Warn("the host token expires and there is no token command to renew it: the relay will close the tunnel then",
			"expires_at", s.tokenExp.UTC().Format(time.RFC3339))
		return nil
	}
	at, ok := renewAt(s.tokenAt, s.tokenExp)
	if !ok {
		return nil
	}
	timer.Reset(time.Until(at))
	return timer.C
}

// renew opens a tunnel with a fresh token beside current, to the same relay. It returns the new session, or an
// error (current keeps serving); a token that expires no later than current's is refused, so a token command
// that keeps printing the same token does not make the agent reconnect over and over.
func (l *Listener) renew(current *session) (*session, error) {
	ctx, cancel := context.WithTimeout(l.ctx, l.cfg.ConnectTimeout)
	defer cancel()
	tok, err := l.token(ctx)
	if err != nil {
		return nil, err
	}
	if exp, ok := tokenExpiry(tok); ok && !exp.After(current.tokenExp) {
		return nil, fmt.Errorf("the token command returned a token expiring at %s, no later than the current one",
			exp.UTC().Format(time.RFC3339))
	}
	return l.dialWith(current.relay, tok)
}
