package presence

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Client calls a relay's presence API. Its fields are read at every call; do not change them while a call runs.
// The zero value is not usable: Relay and a Token or TokenSource are required.
type Client struct {
	// Relay is the relay's base URL (http or https), for example "https://relay.example.com". Required.
	Relay string
	// Token is the client token (a JWT whose "hosts" claim decides which hosts are visible). Ignored when
	// TokenSource is set.
	Token string
	// TokenSource, if set, is called before every request for a fresh client token; an error from it ends the call
	// (List) or is retried with backoff (Watch) unless it wraps ErrUnauthorized. If nil, Token is used.
	TokenSource func(ctx context.Context) (string, error)
	// HTTPClient makes the requests. If nil, a client without a total timeout (the event stream is long-lived) and
	// with the default transport. Its Timeout, if any, must not cut the event stream short.
	HTTPClient *http.Client
	// MinBackoff and MaxBackoff bound Watch's full-jitter exponential reconnect backoff. Zero means 500 ms and 30 s.
	MinBackoff, MaxBackoff time.Duration
}

// ErrUnauthorized matches (errors.Is) an answer 401 or 403 from the relay: the client token is missing, invalid,
// expired, or not a client token. With a static Token, Watch returns it rather than retrying.
var ErrUnauthorized = errors.New("presence: the relay refused the client token")

// APIError is an error answer of the relay: its HTTP status and the code and message of its JSON error body.
type APIError struct {
	// Status is the HTTP status, for example 400 or 503.
	Status int
	// Code is the relay's error code (for example "invalid_cursor"); empty if the body had none.
	Code string
	// Message is the relay's error message, or the status text.
	Message string
}

func (e *APIError) Error() string {
	return fmt.Sprintf("presence: relay answered %d %s: %s", e.Status, e.Code, e.Message)
}

// Is makes errors.Is(err, ErrUnauthorized) true for 401 and 403.
func (e *APIError) Is(target error) bool {
	return target == ErrUnauthorized && (e.Status == http.StatusUnauthorized || e.Status == http.StatusForbidden)
}

// temporary reports whether a retry may get another answer.
func (e *APIError) temporary() bool {
	return e.Status >= 500 || e.Status == http.StatusTooManyRequests || e.Status == http.StatusRequestTimeout
}

// Bounds on what the relay may make the client read.
const (
	maxListBody  = 16 << 20 // one page of at most 1000 hosts
	maxErrorBody = 4 << 10
	maxListPages = 1 << 20 // a relay that keeps answering with a cursor cannot keep List going for ever
)

// ListOptions filter List. The zero value lists every host the token may reach.
type ListOptions struct {
	// IDs, if not empty, lists only these hosts (at most 100: the relay's limit per call); the other filters are
	// ignored then.
	IDs []string
	// Online, if not nil, keeps only hosts online (true) or offline (false).
	Online *bool
	// Labels keeps only hosts with every one of these labels. If nil, no label filter.
	Labels map[string]string
	// Prefix keeps only hosts whose id starts with it. If empty, no prefix filter.
	Prefix string
}

// List returns the hosts the token may reach and the relay has seen, in id order, following the relay's pages.
func (c *Client) List(ctx context.Context, opts ListOptions) ([]Host, error) {
	q := url.Values{}
	if len(opts.IDs) > 0 {
		q.Set("ids", strings.Join(opts.IDs, ","))
	} else {
		q.Set("limit", "1000")
		if opts.Online != nil {
			q.Set("online", strconv.FormatBool(*opts.Online))
		}
		for k, v := range opts.Labels {
			q.Add("label", k+"="+v)
		}
		if opts.Prefix != "" {
			q.Set("prefix", opts.Prefix)
		}
	}
	var hosts []Host
	for range maxListPages {
		var page struct {
			Hosts      []Host `json:"hosts"`
			NextCursor string `json:"next_cursor"`
		}
		if err := c.getJSON(ctx, "/v1/hosts?"+q.Encode(), &page); err != nil {
			return nil, err
		}
		hosts = append(hosts, page.Hosts...)
		if page.NextCursor == "" {
			return hosts, nil
		}
		q.Set("cursor", page.NextCursor)
	}
	return nil, errors.New("presence: list: the relay kept answering with a next cursor")
}

// Host returns one host's record. A host never seen, or not visible to the token, is an *APIError with Status 404.
func (c *Client) Host(ctx context.Context, id string) (Host, error) {
	var h Host
	err := c.getJSON(ctx, "/v1/hosts/"+url.PathEscape(id), &h)
	return h, err
}

func (c *Client) getJSON(ctx context.Context, path string, v any) error {
	resp, err := c.get(ctx, path, nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxListBody)).Decode(v); err != nil {
		return fmt.Errorf("presence: decode %s: %w", strings.SplitN(path, "?", 2)[0], err)
	}
	return nil
}

// get sends GET path with the client token; a non-2xx answer is an *APIError.
func (c *Client) get(ctx context.Context, path string, h http.Header) (*http.Response, error) {
	base, err := c.base()
	if err != nil {
		return nil, err
	}
	token := c.Token
	if c.TokenSource != nil {
		if token, err = c.TokenSource(ctx); err != nil {
			return nil, fmt.Errorf("presence: get token: %w", err)
		}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+path, nil)
	if err != nil {
		return nil, fmt.Errorf("presence: %w", err)
	}
	for k, v := range h {
		req.Header[k] = v
	}
	req.Header.Set("Authorization", "Bearer "+token)
	hc := c.HTTPClient
	if hc == nil {
		hc = http.DefaultClient
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("presence: %w", err)
	}
	if resp.StatusCode/100 != 2 {
		defer resp.Body.Close()
		return nil, apiError(resp)
	}
	return resp, nil
}

func (c *Client) base() (string, error) {
	u, err := url.Parse(c.Relay)
	if err != nil {
		return "", fmt.Errorf("presence: relay URL: %w", err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return "", fmt.Errorf("presence: relay URL %q: want http(s)://host[:port]", c.Relay)
	}
	return strings.TrimSuffix(c.Relay, "/"), nil
}

func apiError(resp *http.Response) *APIError {
	e := &APIError{Status: resp.StatusCode}
	var body struct {
		Error struct{ Code, Message string } `json:"error"`
	}
	if json.NewDecoder(io.LimitReader(resp.Body, maxErrorBody)).Decode(&body) == nil {
		e.Code, e.Message = body.Error.Code, body.Error.Message
	}
	if e.Message == "" {
		e.Message = http.StatusText(resp.StatusCode)
	}
	return e
}

// Watch delivers presence events to handle, in the relay's order, until ctx ends (it returns ctx's error), handle
// returns an error (Watch returns it), or the relay refuses the request for good: a static Token refused
// (ErrUnauthorized) or another 4xx (*APIError). Everything else (relay restarts, drains, network loss, 5xx) is
// retried with backoff, resuming after the last event delivered.
//
// after is where to start: "" for the present (events from now on; read the current state with List after Watch
// has connected, for example on the first event, or right away and drop stale events by Seq), or the ID of the
// last event the caller applied. If events after that position are gone, the first event is a Reset.
//
// handle runs on Watch's goroutine; while it runs, no further event is read.
func (c *Client) Watch(ctx context.Context, after string, handle func(Event) error) error {
	if _, err := c.base(); err != nil {
		return err
	}
	minB, maxB := c.MinBackoff, c.MaxBackoff
	if minB <= 0 {
		minB = 500 * time.Millisecond
	}
	if maxB <= 0 {
		maxB = 30 * time.Second
	}
	maxB = max(maxB, minB)
	last := after
	for attempt := 0; ; attempt++ {
		got, err := c.stream(ctx, last, func(e Event) error {
			last = e.ID
			return handle(e)
		})
		if ctx.Err() != nil {
			return ctx.Err()
		}
		var he handlerError
		if errors.As(err, &he) {
			return he.err
		}
		if c.permanent(err) {
			return err
		}
		if got {
			attempt = 0 // the stream worked for a while: this is a fresh loss
		}
		t := time.NewTimer(backoff(minB, maxB, attempt))
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		}
	}
}

// permanent reports whether Watch should give up on err.
func (c *Client) permanent(err error) bool {
	var ae *APIError
	if errors.As(err, &ae) {
		if errors.Is(ae, ErrUnauthorized) {
			return c.TokenSource == nil
		}
		return !ae.temporary()
	}
	return errors.Is(err, ErrUnauthorized) // from the TokenSource
}

// handlerError carries the error of Watch's handler out of stream.
type handlerError struct{ err error }

func (e handlerError) Error() string { return e.err.Error() }

// stream reads one connection of the event stream, resuming after last. got reports whether it delivered an event
// or at least connected.
func (c *Client) stream(ctx context.Context, last string, handle func(Event) error) (got bool, err error) {
	h := http.Header{"Accept": {"text/event-stream"}}
	path := "/v1/presence/events"
	if last != "" {
		h.Set("Last-Event-ID", last)
	}
	resp, err := c.get(ctx, path, h)
	if err != nil {
		return false, err
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/event-stream") {
		return false, fmt.Errorf("presence: events: content type %q, want text/event-stream", ct)
	}
	r := newSSEReader(resp.Body)
	for {
		m, err := r.next()
		if err != nil {
			return true, fmt.Errorf("presence: events: %w", err)
		}
		e, ok, err := decodeEvent(m)
		if err != nil {
			return true, fmt.Errorf("presence: events: %w", err)
		}
		if !ok {
			continue
		}
		if err := handle(e); err != nil {
			return true, handlerError{err}
		}
	}
}

// decodeEvent turns one SSE message into an Event; ok is false for messages that carry none (comments, retry).
func decodeEvent(m sseMessage) (e Event, ok bool, err error) {
	switch {
	case m.event == string(Reset):
		if m.id == "" {
			return Event{}, false, errors.New("reset without an id")
		}
		return Event{ID: m.id, Type: Reset}, true, nil
	case len(m.data) == 0:
		return Event{}, false, nil
	}
	if err := json.Unmarshal(m.data, &e); err != nil {
		return Event{}, false, fmt.Errorf("event %q: %w", m.id, err)
	}
	if m.id != "" {
		e.ID = m.id
	}
	if e.ID == "" || e.Type == "" || e.HostID == "" {
		return Event{}, false, fmt.Errorf("event %q: missing id, type or host_id", m.id)
	}
	return e, true, nil
}

// backoff is full jitter: uniform in [min/2, min(max, min·2^attempt)].
func backoff(minB, maxB time.Duration, attempt int) time.Duration {
	ceil := minB << min(attempt, 20)
	if ceil > maxB || ceil <= 0 {
		ceil = maxB
	}
	floor := minB / 2
	if ceil <= floor {
		return ceil
	}
	return floor + rand.N(ceil-floor)
}
