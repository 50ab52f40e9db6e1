package relay

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"time"

	"github.com/switchboard-relay/switchboard/internal/presence"
	"github.com/switchboard-relay/switchboard/internal/sse"
)

// sseBatch bounds the events read from the log per step.
const sseBatch = 100

// handleEvents serves GET /v1/presence/events: presence events as Server-Sent Events (docs/presence.md), filtered to
// the hosts the client token may reach. It starts after the Last-Event-ID header or the after query parameter if
// given, else at the newest event; it ends when the client goes, or when the relay drains or closes (the client
// reconnects, to another replica, with Last-Event-ID).
//
// Nothing on the stream depends on hosts outside the token's scope. Their events are skipped without a byte: no
// id-only block, and no wake-up that writes. Event ids are sealed log positions (seal.go), so the ids of two
// events the caller sees do not count the events between them. Heartbeats come on a fixed schedule from the
// stream's start, whatever the log does. A position the relay did not seal is answered like one that fell out of
// the log: event: reset, then the present.
func (s *Server) handleEvents(w http.ResponseWriter, r *http.Request) {
	claims, ok := s.authorizeClient(w, r)
	if !ok {
		return
	}
	if s.draining.Load() || s.closed.Load() {
		writeError(w, http.StatusServiceUnavailable, codeDraining, "relay is draining; connect to another replica")
		return
	}
	ctx, done := s.live.track(r.Context(), claims) // a revocation of its token ends it (revoke.go)
	defer done()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(s.ctx, cancel)
	defer stop()

	sealed, resume := r.Header.Get("Last-Event-ID"), true
	if sealed == "" {
		q := r.URL.Query()
		sealed, resume = q.Get("after"), q.Has("after")
	}
	after, gap := "", false // after "" with resume: ?after= asks for the oldest retained event
	if resume && sealed != "" {
		var err error
		if after, err = s.seal.open(sealEvent, sealed); err != nil {
			gap = true // not a position this cluster handed out: as if it fell out of the log
			s.evm.refused.WithLabelValues("event_id").Inc()
		}
	}
	if !resume || gap {
		var err error
		if after, err = presence.Newest(ctx, s.events); err != nil {
			s.log.Warn("presence: event log unavailable", "err", err)
			writeError(w, http.StatusServiceUnavailable, codeHostOffline, "event log unavailable")
			return
		}
	}
	s.evm.subscribers.Inc()
	defer s.evm.subscribers.Dec()

	// The stream outlives any server write timeout; each write instead gets StallTimeout (package sse).
	st := sse.Start(w, s.cfg.StallTimeout, s.bounds.cuts.WithLabelValues(cutStalledReader))
	st.Append("retry: 2000\n: switchboard presence events\n\n")
	if gap {
		st.Event(s.seal.sealRandom(sealEvent, after), "reset", []byte(`{"reason":"gap"}`))
	}
	beat := s.cfg.EventsHeartbeat
	nextBeat := time.Now().Add(beat)
	for {
		if st.Flush() != nil {
			return
		}
		if ctx.Err() != nil || s.draining.Load() {
			return
		}
		if now := time.Now(); !now.Before(nextBeat) {
			st.Append(": heartbeat\n\n")
			for !nextBeat.After(now) { // beats missed while blocked are not made up: the schedule stays fixed
				nextBeat = nextBeat.Add(beat)
			}
			continue
		}
		evs, err := s.hub.Read(ctx, after, sseBatch, min(time.Until(nextBeat), time.Second))
		switch {
		case errors.Is(err, presence.ErrGap):
			// Events were lost: the client must re-read state. It does so after receiving the reset, so the stream
			// goes on from the newest event now, and nothing after it is missed.
			newest, nerr := presence.Newest(ctx, s.events)
			if nerr != nil {
				if !s.pause(ctx) {
					return
				}
				continue
			}
			after = newest
			st.Event(s.seal.sealRandom(sealEvent, newest), "reset", []byte(`{"reason":"gap"}`))
			continue
		case err != nil:
			if ctx.Err() != nil {
				return
			}
			s.log.Debug("presence: event log read failed", "err", err)
			if !s.pause(ctx) {
				return
			}
			continue
		}
		for _, e := range evs {
			after = e.ID
			if !claims.MayReach(e.HostID) {
				continue // nothing written, not even the position: see above
			}
			e.ID = s.seal.seal(sealEvent, e.ID)
			data, err := json.Marshal(e)
			if err != nil {
				continue
			}
			st.Event(e.ID, string(e.Kind), data)
		}
	}
}

// pause waits a second before retrying a failing log, and reports false if ctx ended meanwhile.
func (s *Server) pause(ctx context.Context) bool {
	t := time.NewTimer(time.Second)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
