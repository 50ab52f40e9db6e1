package relay

import (
	"context"
	"sync"
	"time"
)

// pingLoop pings every tunnel once per PingInterval and closes a tunnel whose ping is not answered within two
// intervals (yamux's Ping waits ConnectionWriteTimeout), so a blackholed agent is gone within three intervals.
// One loop for all tunnels replaces yamux's keepalive goroutine per session, which cost a goroutine stack and a
// timer on every idle tunnel. Each ping runs on its own short-lived goroutine, so a thousand dead tunnels are found
// as fast as one.
//
// The same tick closes every tunnel whose host token has expired (closeExpired), so a tunnel outlives its token's
// "exp" by at most one PingInterval, at no cost per idle tunnel: no timer of its own.
func (s *Server) pingLoop(ctx context.Context) {
	t := time.NewTicker(s.cfg.PingInterval)
	defer t.Stop()
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.ctx.Done():
			return
		case <-t.C:
		}
		now := time.Now()
		for _, tc := range s.snapshot() {
			tc.streams.prune(now)
			if expiredAt(tc.expiresAt, now) {
				if tc.expiring.CompareAndSwap(false, true) {
					wg.Go(func() { s.closeExpired(tc) }) // close waits for the agent's answer
				}
				continue
			}
			if !tc.pinging.CompareAndSwap(false, true) {
				continue // the previous ping is still waiting for its answer
			}
			wg.Go(func() {
				defer tc.pinging.Store(false)
				rtt, err := tc.sess.Ping()
				if err == nil {
					tc.rtt.Store(int64(rtt))
				}
				if err != nil && !tc.sess.IsClosed() {
					tc.log.Info("tunnel ping unanswered: closing", "err", err)
					tc.abort("ping_timeout")
				}
			})
		}
	}
}
