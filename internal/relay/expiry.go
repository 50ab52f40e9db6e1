package relay

import (
	"context"
	"time"

	"github.com/switchboard-relay/switchboard/internal/tunnel"
)

// A tunnel lives no longer than the host token that opened it: at the token's "exp" the relay closes it with
// tunnel.CloseTokenExpired (4401), and an agent with a way to get fresh tokens opens a new tunnel before then
// (make-before-break; the new registration retires the old tunnel through retireReplaced, within
// Config.ReplaceGrace). The check runs on the ping loop's tick, so its precision is one PingInterval, and it costs
// an idle tunnel no timer of its own. The verifier's leeway on "exp" (auth.Leeway) is for clock skew at the moment
// a token is presented; it does not extend a tunnel, and a host token already past its "exp" is refused at the
// upgrade even within the leeway, so an agent holding a stale token cannot re-register and be closed again on
// every tick.

// expiredAt reports whether a token with expiry exp has expired at now. A zero exp (auth.AllowAll) never expires.
func expiredAt(exp, now time.Time) bool {
	return !exp.IsZero() && !now.Before(exp)
}

// closeExpired closes t, whose host token has expired, with 4401. Exchanges in flight are cut: the agent had until
// "exp" to move them to a tunnel with a fresh token.
func (s *Server) closeExpired(t *tunnelConn) {
	t.log.Info("host token expired: closing the tunnel", "expired_at", t.expiresAt.UTC().Format(time.RFC3339))
	t.close(tunnel.CloseTokenExpired, "host token expired; reconnect with a fresh token", closeTokenExpired)
}

// closeTokenExpired is the tunnels_closed_total reason of closeExpired.
const closeTokenExpired = "token_expired"

// retireReplaced ends old, which a newer registration of its host replaced on this relay: it admits no new
// exchange (they go to the new tunnel), lets those in flight finish for up to Config.ReplaceGrace (long-lived
// WebSockets and event streams are then cut), and closes with 4409. An agent renewing its token this way loses no
// exchange.
func (s *Server) retireReplaced(old *tunnelConn) {
	ctx, cancel := context.WithTimeout(s.ctx, s.cfg.ReplaceGrace)
	defer cancel()
	if err := old.retire(ctx); err != nil && s.ctx.Err() == nil {
		s.metrics.replaceCut.Inc()
		old.log.Info("replaced tunnel still busy after the replace grace: closing it under its exchanges",
			"active", old.active.Load(), "grace", s.cfg.ReplaceGrace.String())
	}
	old.close(tunnel.CloseReplaced, "replaced by a newer tunnel", "replaced")
}
