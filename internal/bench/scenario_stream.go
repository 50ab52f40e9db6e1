package bench

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/coder/websocket"
)

// sseInterval is how often the origin emits an event on each SSE stream.
const sseInterval = 100 * time.Millisecond

// runSSE holds many SSE streams and measures event delivery latency (origin write → client read).
func runSSE(ctx context.Context, e *env) (*Result, error) {
	res := &Result{}
	s, err := e.startTraffic(ctx, "sse")
	if err != nil {
		return res, err
	}
	defer s.stop()
	events := int(e.cfg.Duration / sseInterval)
	events = max(events, 5)
	path := fmt.Sprintf("/sse?interval=%s&n=%d", sseInterval, events)
	d, err := sseRun(ctx, "http://"+e.origin.Addr+path, "", e.cfg.SSEClients, events)
	if err != nil {
		return res, fmt.Errorf("direct: %w", err)
	}
	p, err := sseRun(ctx, "http://"+e.pipe.Addr+path, "", e.cfg.SSEClients, events)
	if err != nil {
		return res, fmt.Errorf("pipe: %w", err)
	}
	s.meter.begin()
	r, err := sseRun(ctx, s.relay.Base+hostPath(benchHostID, path), e.clientToken, e.cfg.SSEClients, events)
	s.meter.end()
	if err != nil {
		return res, fmt.Errorf("relay: %w", err)
	}
	ds, ps, rs := d.lat.Summary(), p.lat.Summary(), r.lat.Summary()
	e.progressf("sse %d streams: direct p50 %.0f µs p99 %.0f µs | pipe p50 %.0f µs p99 %.0f µs | relay p50 %.0f µs p99 %.0f µs | %d/%d events",
		e.cfg.SSEClients, ds.P50, ds.P99, ps.P50, ps.P99, rs.P50, rs.P99, r.lat.Count(), e.cfg.SSEClients*events)
	res.add(
		row("delivery p50", "µs", rs.P50, ds.P50, false).withPipe(ps.P50),
		row("delivery p99", "µs", rs.P99, ds.P99, false).withPipe(ps.P99).
			withGoal("≤ direct + 2 ms", rs.P99-ds.P99 <= 2000),
		row("events", "events/s", r.rate(), d.rate(), true).withPipe(p.rate()),
	)
	res.notef("%d streams, one event per %s each", e.cfg.SSEClients, sseInterval)
	s.meter.fill(ctx, res)
	return res, nil
}

// sseResult is one SSE phase.
type sseResult struct {
	lat     Histogram
	elapsed time.Duration
}

func (r *sseResult) rate() float64 { return float64(r.lat.Count()) / r.elapsed.Seconds() }

// sseRun opens n streams on url, reads every event until each stream ends (events per stream), and records the
// delay between the origin's timestamp and the read. The origin runs on this machine, so the clocks agree.
func sseRun(ctx context.Context, url, bearer string, n, events int) (*sseResult, error) {
	timeout := time.Duration(events)*sseInterval + 30*time.Second
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tr := &http.Transport{MaxConnsPerHost: 0, MaxIdleConnsPerHost: n, DisableCompression: true}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr}
	hs := make([]Histogram, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	t0 := time.Now()
	for i := range n {
		wg.Go(func() { errs[i] = sseStream(ctx, client, url, bearer, &hs[i]) })
	}
	wg.Wait()
	res := &sseResult{elapsed: time.Since(t0)}
	for i := range hs {
		if errs[i] != nil {
			return nil, errs[i]
		}
		res.lat.Merge(&hs[i])
	}
	if res.lat.Count() == 0 {
		return nil, fmt.Errorf("no events arrived")
	}
	return res, nil
}

// sseStream reads one stream to its end.
func sseStream(ctx context.Context, client *http.Client, url, bearer string, h *Histogram) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Accept", "text/event-stream")
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("open stream: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("open stream: status %d", resp.StatusCode)
	}
	br := bufio.NewReader(resp.Body)
	for {
		line, err := br.ReadSlice('\n')
		if err != nil {
			return nil // the origin ended the stream
		}
		v, ok := bytes.CutPrefix(line, []byte("data: "))
		if !ok {
			continue
		}
		ns, err := strconv.ParseInt(string(bytes.TrimSpace(v)), 10, 64)
		if err != nil {
			return fmt.Errorf("malformed event %q", line)
		}
		h.Record(time.Since(time.Unix(0, ns)))
	}
}

// wsMessage is the size of one echo message.
const wsMessage = 64

// runWS measures WebSocket echo round trips.
func runWS(ctx context.Context, e *env) (*Result, error) {
	res := &Result{}
	s, err := e.startTraffic(ctx, "ws")
	if err != nil {
		return res, err
	}
	defer s.stop()
	d, err := wsRun(ctx, "ws://"+e.origin.Addr+"/ws", "", e.cfg.WSClients, e.cfg.Duration, e.cfg.MaxRequests)
	if err != nil {
		return res, fmt.Errorf("direct: %w", err)
	}
	p, err := wsRun(ctx, "ws://"+e.pipe.Addr+"/ws", "", e.cfg.WSClients, e.cfg.Duration, e.cfg.MaxRequests)
	if err != nil {
		return res, fmt.Errorf("pipe: %w", err)
	}
	stopProfile := e.profile(ctx, s.relay, "echo")
	s.meter.begin()
	r, err := wsRun(ctx, "ws://"+s.relay.Addr+hostPath(benchHostID, "/ws"), e.clientToken, e.cfg.WSClients, e.cfg.Duration, e.cfg.MaxRequests)
	s.meter.end()
	stopProfile()
	if err != nil {
		return res, fmt.Errorf("relay: %w", err)
	}
	ds, ps, rs := d.lat.Summary(), p.lat.Summary(), r.lat.Summary()
	e.progressf("ws %d clients: direct %.0f msg/s p50 %.0f µs p99 %.0f µs | pipe %.0f msg/s p50 %.0f µs | relay %.0f msg/s p50 %.0f µs p99 %.0f µs",
		e.cfg.WSClients, d.rate(), ds.P50, ds.P99, p.rate(), ps.P50, r.rate(), rs.P50, rs.P99)
	echo := row("echo", "msg/s", r.rate(), d.rate(), true).withPipe(p.rate())
	res.add(
		echo.withGoal("≥ 0.8× pipe", echo.PipeRatio >= 0.8),
		row("rtt p50", "µs", rs.P50, ds.P50, false).withPipe(ps.P50),
		row("rtt p99", "µs", rs.P99, ds.P99, false).withPipe(ps.P99),
	)
	res.notef("%d clients, %d-byte binary messages, one in flight per client", e.cfg.WSClients, wsMessage)
	s.meter.fill(ctx, res)
	return res, nil
}

// wsResult is one WebSocket phase; rate counts round trips.
type wsResult = sseResult

// wsRun runs n echo clients on url for d or until max round trips in total.
func wsRun(ctx context.Context, url, bearer string, n int, d time.Duration, maxCount int64) (*wsResult, error) {
	conns := make([]*websocket.Conn, n)
	defer func() {
		for _, c := range conns {
			if c != nil {
				c.CloseNow()
			}
		}
	}()
	for i := range conns {
		dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		opts := &websocket.DialOptions{}
		if bearer != "" {
			opts.HTTPHeader = http.Header{"Authorization": {"Bearer " + bearer}}
		}
		c, _, err := websocket.Dial(dctx, url, opts)
		cancel()
		if err != nil {
			return nil, fmt.Errorf("dial %s: %w", redactURL(url), err)
		}
		conns[i] = c
	}
	ctx, cancel := context.WithTimeout(ctx, d+30*time.Second)
	defer cancel()
	hs := make([]Histogram, n)
	errs := make([]error, n)
	b := newBudget(maxCount)
	start := time.Now()
	deadline := start.Add(d)
	var wg sync.WaitGroup
	for i, c := range conns {
		wg.Go(func() { errs[i] = wsEcho(ctx, c, deadline, b, &hs[i]) })
	}
	wg.Wait()
	res := &wsResult{elapsed: time.Since(start)}
	for i := range hs {
		if errs[i] != nil {
			return nil, errs[i]
		}
		res.lat.Merge(&hs[i])
	}
	for _, c := range conns {
		_ = c.Close(websocket.StatusNormalClosure, "")
	}
	return res, nil
}

// wsEcho sends a message, waits for its echo, and repeats until the deadline.
func wsEcho(ctx context.Context, c *websocket.Conn, deadline time.Time, b *budget, h *Histogram) error {
	msg := bytes.Repeat([]byte{'x'}, wsMessage)
	for b.take() {
		t0 := time.Now()
		if !t0.Before(deadline) {
			return nil
		}
		if err := c.Write(ctx, websocket.MessageBinary, msg); err != nil {
			return fmt.Errorf("write: %w", err)
		}
		_, got, err := c.Read(ctx)
		if err != nil {
			return fmt.Errorf("read: %w", err)
		}
		if len(got) != len(msg) {
			return fmt.Errorf("echo of %d bytes, want %d", len(got), len(msg))
		}
		h.Record(time.Since(t0))
	}
	return nil
}
