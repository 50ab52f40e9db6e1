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
		for _, tc := range s.snapshot() {
			if !tc.pinging.CompareAndSwap(false, true) {
				continue // the previous ping is still waiting for its answer
			}
			wg.Go(func() {
				defer tc.pinging.Store(false)
				if _, err := tc.sess.Ping(); err != nil && !tc.sess.IsClosed() {
					tc.log.Info("tunnel ping unanswered: closing", "err", err)
					tc.abort("ping_timeout")
				}
			})
		}
	}
}
