package relay

import (
	"context"
	"sync"
	"time"
)

// pingSlices is how many slices the ping loop cuts PingInterval into: each tick, one slice of the tunnels is
// pinged, so that the pings (and the goroutine and timer each holds while its answer is awaited) are spread over
// the interval instead of all firing at the same instant.
const pingSlices = 10

// pingLoop pings every tunnel once per PingInterval and closes a tunnel whose ping is not answered within two
// intervals (yamux's Ping waits ConnectionWriteTimeout), so a blackholed agent is gone within three intervals.
// One loop for all tunnels replaces yamux's keepalive goroutine per session, which cost a goroutine stack and a
// timer on every idle tunnel.
//
// The loop ticks pingSlices times per interval and each tick pings the tunnels of one slice (tunnelConn.phase,
// dealt round-robin at registration, so slices are even). A ping waits for its answer on a short-lived goroutine
// of its own, so a thousand dead tunnels are found as fast as one; at any instant only the pings of one slice are
// outstanding, and each only for a round trip when the agent is alive.
//
// The same tick closes every tunnel of its slice whose host token has expired (closeExpired), so a tunnel outlives
// its token's "exp" by at most one PingInterval, at no cost per idle tunnel: no timer of its own. It also closes the
// slice's kept streams idle for streamIdleTimeout (streamPool.prune), so each tunnel's pool is pruned once per
// interval, and each ping first looks for bytes the agent wrote on the control stream (tunnelConn.checkControl): no
// goroutine reads an idle tunnel's control stream.
func (s *Server) pingLoop(ctx context.Context) { s.pingEvery(ctx, s.ping) }

// pingEvery is pingLoop with its ping as a parameter, so that the schedule can be tested without yamux (whose
// pooled timers must not be used inside a synctest bubble). ping must clear tc.pinging when it is done.
func (s *Server) pingEvery(ctx context.Context, ping func(tc *tunnelConn)) {
	t := time.NewTicker(max(s.cfg.PingInterval/pingSlices, time.Millisecond))
	defer t.Stop()
	var wg sync.WaitGroup
	defer wg.Wait()
	for slice := uint32(0); ; slice = (slice + 1) % pingSlices {
		select {
		case <-ctx.Done():
			return
		case <-s.ctx.Done():
			return
		case <-t.C:
		}
		now := time.Now()
		for _, tc := range s.snapshot() {
			if tc.phase%pingSlices != slice {
				continue
			}
			tc.streams.prune(now) // each tunnel's kept streams, once per interval with its ping
			if expiredAt(tc.expiresAt, now) {
				if tc.expiring.CompareAndSwap(false, true) {
					wg.Go(func() { s.closeExpired(tc) }) // close waits for the agent's answer
				}
				continue
			}
			if !tc.pinging.CompareAndSwap(false, true) {
				continue // the previous ping is still waiting for its answer
			}
			wg.Go(func() { ping(tc) })
		}
	}
}

// ping checks tc's control stream (checkControl), pings tc once, records the round trip, and aborts tc if the ping
// is not answered.
func (s *Server) ping(tc *tunnelConn) {
	defer tc.pinging.Store(false)
	if tc.checkControl() {
		return
	}
	rtt, err := tc.sess.Ping()
	if err == nil {
		tc.rtt.Store(int64(rtt)) // the admin API's and status page's round trip
		return
	}
	if !tc.sess.IsClosed() {
		tc.log.Info("tunnel ping unanswered: closing", "err", err)
		tc.abort("ping_timeout")
	}
}
