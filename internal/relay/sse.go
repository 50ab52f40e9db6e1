package relay

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"time"

	"github.com/switchboard-relay/switchboard/internal/presence"
)

// sseHeartbeat is how often an idle event stream gets a comment line, so that proxies keep it open and clients
// notice a dead connection.
const sseHeartbeat = 15 * time.Second

// sseBatch bounds the events read from the log per step.
const sseBatch = 100

// handleEvents serves GET /v1/presence/events: presence events as Server-Sent Events (docs/presence.md), filtered to
// the hosts the client token may reach. It starts after the Last-Event-ID header or the after query parameter if
// given, else at the newest event; it ends when the client goes, or when the relay drains or closes (the client
// reconnects, to another replica, with Last-Event-ID).
func (s *Server) handleEvents(w http.ResponseWriter, r *http.Request) {
	claims, ok := s.authorizeClient(w, r)
	if !ok {
		return
	}
	if s.draining.Load() || s.closed.Load() {
		writeError(w, http.StatusServiceUnavailable, codeDraining, "relay is draining; connect to another replica")
		return
	}
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	stop := context.AfterFunc(s.ctx, cancel)
	defer stop()

	after, resume := r.Header.Get("Last-Event-ID"), true
	if after == "" {
		q := r.URL.Query()
		after, resume = q.Get("after"), q.Has("after")
	}
	if !resume {
		var err error
		if after, err = presence.Newest(ctx, s.events); err != nil {
			s.log.Warn("presence: event log unavailable", "err", err)
			writeError(w, http.StatusServiceUnavailable, codeHostOffline, "event log unavailable")
			return
		}
	}
	s.evm.subscribers.Inc()
	defer s.evm.subscribers.Dec()

	rc := http.NewResponseController(w)
	_ = rc.SetWriteDeadline(time.Time{}) // the stream outlives any server write timeout
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)

	var buf bytes.Buffer
	buf.WriteString("retry: 2000\n: switchboard presence events\n\n")
	lastWrite := time.Now()
	for {
		if buf.Len() > 0 {
			if _, err := w.Write(buf.Bytes()); err != nil {
				return
			}
			if err := rc.Flush(); err != nil {
				return
			}
			buf.Reset()
			lastWrite = time.Now()
		}
		if ctx.Err() != nil || s.draining.Load() {
			return
		}
		evs, err := s.hub.Read(ctx, after, sseBatch, min(sseHeartbeat, time.Second))
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
			writeSSE(&buf, newest, "reset", []byte(`{"reason":"gap"}`))
			continue
		case err != nil:
			if ctx.Err() != nil {
				return
			}
			s.log.Debug("presence: event log read failed", "err", err)
			if !s.pause(ctx) {
				return
			}
			if time.Since(lastWrite) >= sseHeartbeat {
				buf.WriteString(": heartbeat\n\n")
			}
			continue
		}
		skipped := false
		for _, e := range evs {
			after = e.ID
			if !claims.MayReach(e.HostID) {
				skipped = true
				continue
			}
			skipped = false
			data, err := json.Marshal(e)
			if err != nil {
				continue
			}
			writeSSE(&buf, e.ID, string(e.Kind), data)
		}
		if skipped {
			// An id-only block moves the client's Last-Event-ID past events it may not see, without an event.
			buf.WriteString("id: " + after + "\n\n")
		}
		if buf.Len() == 0 && time.Since(lastWrite) >= sseHeartbeat {
			buf.WriteString(": heartbeat\n\n")
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

// writeSSE appends one event block. id and kind never contain newlines (log IDs and closed kinds); data is one line
// of JSON.
func writeSSE(buf *bytes.Buffer, id, kind string, data []byte) {
	if id != "" {
		buf.WriteString("id: " + id + "\n")
	}
	buf.WriteString("event: " + kind + "\ndata: ")
	buf.Write(data)
	buf.WriteString("\n\n")
}
