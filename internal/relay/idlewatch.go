package relay

import (
	"context"
	"sync"
	"time"
)

// idleWatch times out the host streams of exchanges in flight that made no progress for their idle timeout. It
// replaces a yamux deadline on each stream, moved as bytes move: yamux makes a timer for every read or write that
// blocks under a deadline (four per small exchange), while the watch costs a slot per exchange and one scan of the
// exchanges in flight per tick. A stream is timed out between its idle timeout and one tick more after its last
// progress; the watch's loop runs under Server.Run (idleLoop), as the ping loop does.
type idleWatch struct {
	mu    sync.Mutex
	conns []*idleConn // the watched streams; each knows its index (idleConn.slot). Guarded by mu.
}

// add watches c from now until remove.
func (w *idleWatch) add(c *idleConn) {
	c.progress()
	w.mu.Lock()
	c.slot = len(w.conns)
	w.conns = append(w.conns, c)
	w.mu.Unlock()
}

// remove stops watching c.
func (w *idleWatch) remove(c *idleConn) {
	w.mu.Lock()
	last := len(w.conns) - 1
	w.conns[c.slot] = w.conns[last]
	w.conns[c.slot].slot = c.slot
	w.conns[last] = nil
	w.conns = w.conns[:last]
	w.mu.Unlock()
}

// expire times out every watched stream idle for its timeout at now: a deadline in the past wakes its blocked
// reads and writes with yamux.ErrTimeout, and the stream reads as timed out from then on (idleConn.classify).
func (w *idleWatch) expire(now time.Time) {
	var late []*idleConn
	w.mu.Lock()
	for _, c := range w.conns {
		if now.UnixNano()-c.moved.Load() >= int64(c.idle) && !c.timedOut.Load() {
			late = append(late, c)
		}
	}
	w.mu.Unlock()
	for _, c := range late {
		c.timedOut.Store(true)
		_ = c.Stream.SetDeadline(time.Unix(1, 0))
	}
}

// idleTicks is how many times per IdleTimeout the idle loop looks at the exchanges in flight.
const idleTicks = 8

// idleLoop runs the idle watch until ctx ends.
func (s *Server) idleLoop(ctx context.Context) {
	t := time.NewTicker(max(s.cfg.IdleTimeout/idleTicks, time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.ctx.Done():
			return
		case now := <-t.C:
			s.idle.expire(now)
		}
	}
}
