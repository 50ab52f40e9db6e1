// Package sse writes Server-Sent Events to a client that may stop reading. A stream outlives any server write
// timeout, so each write instead gets a deadline of its own (the relay's StallTimeout): a consumer that stops
// reading is cut, and counted, rather than holding its handler's goroutine and buffers until the relay stops. The
// presence events of the hosts API (internal/hostsapi) and the relay's status page (internal/relay) stream through
// it.
package sse

import (
	"bytes"
	"errors"
	"net/http"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Stream is an event stream being answered. Events are appended to a buffer and written by Flush. It is used by
// its handler's goroutine only.
type Stream struct {
	w       http.ResponseWriter
	rc      *http.ResponseController
	stall   time.Duration
	stalled prometheus.Counter
	buf     bytes.Buffer
}

// Start answers 200 with the headers of an event stream (not cached, not buffered by a proxy such as nginx) and
// returns the stream: each Flush may take at most stall, and a Flush cut for that adds one to stalled (if not nil).
func Start(w http.ResponseWriter, stall time.Duration, stalled prometheus.Counter) *Stream {
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	return &Stream{w: w, rc: http.NewResponseController(w), stall: stall, stalled: stalled}
}

// Append appends text as it is: a retry field, a comment, ending in a blank line.
func (s *Stream) Append(text string) { s.buf.WriteString(text) }

// Event appends one event block. id and kind must not contain newlines (log ids and closed kinds); data is one
// line (of JSON). An empty id writes no id field.
func (s *Stream) Event(id, kind string, data []byte) {
	if id != "" {
		s.buf.WriteString("id: " + id + "\n")
	}
	s.buf.WriteString("event: " + kind + "\ndata: ")
	s.buf.Write(data)
	s.buf.WriteString("\n\n")
}

// Flush writes what was appended, if anything, and flushes it to the client, under a write deadline stall ahead.
// After an error the stream is over: the handler returns.
func (s *Stream) Flush() error {
	if s.buf.Len() == 0 {
		return nil
	}
	_ = s.rc.SetWriteDeadline(time.Now().Add(s.stall))
	_, err := s.w.Write(s.buf.Bytes())
	if err == nil {
		err = s.rc.Flush()
	}
	if err != nil {
		if errors.Is(err, os.ErrDeadlineExceeded) && s.stalled != nil {
			s.stalled.Inc()
		}
		return err
	}
	s.buf.Reset()
	return nil
}
