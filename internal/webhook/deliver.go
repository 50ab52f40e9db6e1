package webhook

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/switchboard-relay/switchboard/internal/presence"
	"github.com/switchboard-relay/switchboard/webhook"
)

// The request headers of a delivery; the public package webhook (for receivers) defines them.
const (
	SignatureHeader = webhook.SignatureHeader
	EventIDHeader   = webhook.EventIDHeader
	EventTypeHeader = webhook.EventTypeHeader
	AttemptHeader   = webhook.AttemptHeader
)

const maxResponseDrain = 64 << 10 // response bytes read (and discarded) so the connection can be reused

// deliverLoop delivers the log to u from its stored cursor until ctx ends (nil) or the lease is lost
// (ErrNotLeader).
func (s *Sender) deliverLoop(ctx context.Context, u string) error {
	log := s.log.With("url", redactURL(u))
	defer s.clearPending(u)
	var cursor string
	for attempt := 1; ; attempt++ {
		sctx, cancel := context.WithTimeout(ctx, s.storeTimeout())
		c, err := s.cfg.Store.Cursor(sctx, u)
		cancel()
		if err == nil {
			cursor = c
			break
		}
		if ctx.Err() != nil {
			return nil
		}
		log.Warn("webhook cursor not loaded; retrying", "err", err)
		if !sleep(ctx, s.backoff(attempt)) {
			return nil
		}
	}
	log.Debug("webhook delivery resuming", "after", cursor)
	readFailures := 0
	for {
		evs, err := s.cfg.Log.Read(ctx, cursor, readBatch, s.cfg.Block)
		if ctx.Err() != nil {
			return nil
		}
		switch {
		case errors.Is(err, presence.ErrGap):
			s.m.gaps.Inc()
			log.Warn("presence events were dropped before this webhook's cursor; continuing from the oldest retained",
				"after", cursor, "oldest", firstID(evs))
			if len(evs) == 0 {
				cursor = "" // the log is empty: follow it from its start
			}
		case err != nil:
			readFailures++
			log.Warn("presence log read failed; retrying", "err", err)
			if !sleep(ctx, s.backoff(readFailures)) {
				return nil
			}
			continue
		}
		readFailures = 0
		if len(evs) == 0 {
			s.clearPending(u)
			continue
		}
		for _, e := range evs {
			s.setPending(u, e.At)
			if err := s.deliver(ctx, u, e, log); err != nil {
				return nil // ctx ended
			}
			cursor = e.ID
			if err := s.setCursor(ctx, u, e.ID); errors.Is(err, ErrNotLeader) {
				return err
			} else if err != nil && ctx.Err() == nil {
				// Keep delivering from the cursor in memory; the next write catches up. If the store stays
				// unreachable, the lease renewals fail too and this sender steps down.
				log.Warn("webhook cursor not saved", "event_id", e.ID, "err", err)
			}
		}
	}
}

// storeTimeout bounds one Store call: a third of the lease, so a hung store cannot outlast it unnoticed.
func (s *Sender) storeTimeout() time.Duration { return max(s.cfg.Lease/3, time.Millisecond) }

func (s *Sender) setCursor(ctx context.Context, u, id string) error {
	ctx, cancel := context.WithTimeout(ctx, s.storeTimeout())
	defer cancel()
	return s.cfg.Store.SetCursor(ctx, s.cfg.Holder, u, id)
}

func firstID(evs []presence.Event) string {
	if len(evs) == 0 {
		return ""
	}
	return evs[0].ID
}

// deliver posts e to u until a 2xx, a drop after too many rejections (both nil), or ctx ends (its error).
func (s *Sender) deliver(ctx context.Context, u string, e presence.Event, log *slog.Logger) error {
	body, err := json.Marshal(e)
	if err != nil { // an Event always marshals; a broken invariant
		panic(fmt.Sprintf("webhook: marshal event: %v", err))
	}
	rejections := 0
	for attempt := 1; ; attempt++ {
		res := s.attempt(ctx, u, e, body, attempt)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		s.m.attempts.WithLabelValues(res.result).Inc()
		if res.result == resultOK {
			s.m.deliveries.WithLabelValues(outcomeDelivered).Inc()
			return nil
		}
		if res.result == resultRejected || res.result == resultRedirect {
			rejections++
			if rejections >= s.cfg.MaxRejections {
				s.m.deliveries.WithLabelValues(outcomeDropped).Inc()
				log.Error("webhook event dropped: the receiver rejected it every time", "event_id", e.ID,
					"host_id", e.HostID, "type", string(e.Kind), "attempts", attempt, "status", res.status,
					"result", res.result)
				return nil
			}
		}
		if attempt == 1 || attempt&(attempt-1) == 0 { // 1, 2, 4, 8...: visible, not a flood
			log.Warn("webhook delivery failed; retrying", "event_id", e.ID, "attempt", attempt,
				"result", res.result, "status", res.status, "err", res.err)
		}
		wait := s.backoff(attempt)
		if res.retryAfter > wait {
			wait = min(res.retryAfter, maxRetryAfter)
		}
		if !sleep(ctx, wait) {
			return ctx.Err()
		}
	}
}

// attemptResult is how one HTTP attempt ended.
type attemptResult struct {
	result     string // a result* label value
	status     int    // HTTP status, 0 without a response
	retryAfter time.Duration
	err        error
}

func (s *Sender) attempt(ctx context.Context, u string, e presence.Event, body []byte, n int) attemptResult {
	actx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(actx, http.MethodPost, u, bytes.NewReader(body))
	if err != nil { // ValidateURL accepted u; only a broken invariant gets here
		return attemptResult{result: resultNetwork, err: err}
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "switchboard-webhook/1")
	req.Header.Set(EventIDHeader, e.ID)
	req.Header.Set(EventTypeHeader, string(e.Kind))
	req.Header.Set(AttemptHeader, strconv.Itoa(n))
	req.Header.Set(SignatureHeader, webhook.Sign(s.cfg.Secret, body, time.Now()))
	resp, err := s.client.Do(req)
	if err == nil {
		_, err = io.Copy(io.Discard, io.LimitReader(resp.Body, maxResponseDrain))
		_ = resp.Body.Close()
		if err == nil || resp.StatusCode/100 != 2 {
			return classify(resp, time.Now())
		}
		// A 2xx whose body broke off: the receiver may not have committed it. Retry; it has the event ID.
	}
	var ne net.Error
	if errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout()) {
		return attemptResult{result: resultTimeout, err: err}
	}
	return attemptResult{result: resultNetwork, err: err}
}

func classify(resp *http.Response, now time.Time) attemptResult {
	r := attemptResult{status: resp.StatusCode}
	switch c := resp.StatusCode; {
	case c >= 200 && c < 300:
		r.result = resultOK
	case c == http.StatusRequestTimeout:
		r.result = resultTimeout
	case c == http.StatusTooManyRequests:
		r.result = resultRateLimited
	case c >= 500:
		r.result = resultServerError
	case c >= 300 && c < 400:
		r.result = resultRedirect
	default:
		r.result = resultRejected
	}
	if r.result == resultRateLimited || r.result == resultServerError {
		r.retryAfter, _ = parseRetryAfter(resp.Header.Get("Retry-After"), now)
	}
	return r
}

// parseRetryAfter reads a Retry-After value: delay seconds, or an HTTP date. It reports false if v is neither or
// lies in the past.
func parseRetryAfter(v string, now time.Time) (time.Duration, bool) {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0, false
	}
	if decimal(v) {
		n, _ := strconv.ParseInt(v, 10, 64)
		if n > int64(maxRetryAfter/time.Second) {
			return maxRetryAfter, true
		}
		return time.Duration(n) * time.Second, true
	}
	t, err := http.ParseTime(v)
	if err != nil {
		return 0, false
	}
	d := t.Sub(now)
	if d <= 0 {
		return 0, false
	}
	return min(d, maxRetryAfter), true
}

// backoff is the wait before attempt n+1: MinBackoff doubled n-1 times, capped at MaxBackoff, then jittered over
// its upper half so that retries of many senders do not line up.
func (s *Sender) backoff(n int) time.Duration {
	d := s.cfg.MinBackoff
	for i := 1; i < n && d < s.cfg.MaxBackoff; i++ {
		d *= 2
	}
	d = min(d, s.cfg.MaxBackoff)
	if d <= 1 {
		return d
	}
	return d/2 + rand.N(d/2+1)
}

// decimal reports whether s is 1–18 ASCII digits (fits an int64 without overflow).
func decimal(s string) bool {
	if s == "" || len(s) > 18 {
		return false
	}
	for i := range len(s) {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}
