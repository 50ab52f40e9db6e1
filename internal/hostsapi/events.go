package hostsapi

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/switchboard-relay/switchboard/internal/presence"
	"github.com/switchboard-relay/switchboard/internal/reply"
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
// id-only block, and no wake-up that writes. Event ids are sealed log positions (Config.EventIDs), so the ids of two
// events the caller sees do not count the events between them. Heartbeats come on a fixed schedule from the
// stream's start, whatever the log does. A position the relay did not seal is answered like one that fell out of
// the log: event: reset, then the present.
func (a *API) handleEvents(w http.ResponseWriter, r *http.Request) {
	claims, ok := a.authorizeClient(w, r)
	if !ok {
		return
	}
	if a.cfg.Relay.Stopping() {
		reply.Error(w, http.StatusServiceUnavailable, reply.CodeDraining, "relay is draining; connect to another replica")
		return
	}
	ctx, release := a.cfg.Relay.Hold(r.Context(), claims) // a revocation of its token ends it, as the relay's Close
	defer release()

	sealed, resume := r.Header.Get("Last-Event-ID"), true
	if sealed == "" {
		q := r.URL.Query()
		sealed, resume = q.Get("after"), q.Has("after")
	}
	after, gap := "", false // after "" with resume: ?after= asks for the oldest retained event
	if resume && sealed != "" {
		var err error
		if after, err = a.cfg.EventIDs.Open(sealed); err != nil {
			gap = true // not a position this cluster handed out: as if it fell out of the log
			a.metrics.refused.WithLabelValues("event_id").Inc()
		}
	}
	if !resume || gap {
		var err error
		if after, err = a.cfg.Events.Newest(ctx); err != nil {
			a.log.Warn("presence: event log unavailable", "err", err)
			reply.Error(w, http.StatusServiceUnavailable, reply.CodeHostOffline, "event log unavailable")
			return
		}
	}
	a.metrics.subscribers.Inc()
	defer a.metrics.subscribers.Dec()

	// The stream outlives any server write timeout; each write instead gets StallTimeout (package sse).
	st := sse.Start(w, a.cfg.StallTimeout, a.cfg.Stalled)
	st.Append("retry: 2000\n: switchboard presence events\n\n")
	if gap {
		st.Event(a.cfg.EventIDs.SealRandom(after), "reset", []byte(`{"reason":"gap"}`))
	}
	beat := a.cfg.EventsHeartbeat
	nextBeat := time.Now().Add(beat)
	for {
		if st.Flush() != nil {
			return
		}
		if ctx.Err() != nil || a.cfg.Relay.Stopping() {
			return
		}
		if now := time.Now(); !now.Before(nextBeat) {
			st.Append(": heartbeat\n\n")
			for !nextBeat.After(now) { // beats missed while blocked are not made up: the schedule stays fixed
				nextBeat = nextBeat.Add(beat)
			}
			continue
		}
		evs, err := a.cfg.Events.Read(ctx, after, sseBatch, min(time.Until(nextBeat), time.Second))
		switch {
		case errors.Is(err, presence.ErrGap):
			// Events were lost: the client must re-read state. It does so after receiving the reset, so the stream
			// goes on from the newest event now, and nothing after it is missed.
			newest, nerr := a.cfg.Events.Newest(ctx)
			if nerr != nil {
				if !pause(ctx) {
					return
				}
				continue
			}
			after = newest
			st.Event(a.cfg.EventIDs.SealRandom(newest), "reset", []byte(`{"reason":"gap"}`))
			continue
		case err != nil:
			if ctx.Err() != nil {
				return
			}
			a.log.Debug("presence: event log read failed", "err", err)
			if !pause(ctx) {
				return
			}
			continue
		}
		for _, e := range evs {
			after = e.ID
			if !claims.MayReach(e.HostID) {
				continue // nothing written, not even the position: see above
			}
			e.ID = a.cfg.EventIDs.Seal(e.ID)
			data, err := json.Marshal(e)
			if err != nil {
				continue
			}
			st.Event(e.ID, string(e.Kind), data)
		}
	}
}

// pause waits a second before retrying a failing log, and reports false if ctx ended meanwhile.
func pause(ctx context.Context) bool {
	select {
	case <-ctx.Done():
		return false
	case <-time.After(time.Second): // collected once unreferenced (Go 1.23), so no Stop is owed
		return true
	}
}

// metrics count event streams and refused positions.
type metrics struct {
	subscribers prometheus.Gauge
	refused     *prometheus.CounterVec // kind: cursor, event_id
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		subscribers: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "switchboard", Name: "presence_subscribers",
			Help: "Open GET /v1/presence/events streams on this replica.",
		}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "switchboard", Name: "positions_refused_total",
			Help: "GET /v1/hosts cursors (400 invalid_cursor) and presence Last-Event-IDs (answered with a reset) that this cluster did not issue, by kind: forged, altered, or sealed under another cluster secret.",
		}, []string{"kind"}),
	}
	for _, k := range []string{"cursor", "event_id"} {
		m.refused.WithLabelValues(k)
	}
	reg.MustRegister(m.subscribers, m.refused)
	return m
}
