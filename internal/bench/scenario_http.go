package bench

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"
)

// benchHostID is the host id of the agent in front of the origin.
const benchHostID = "bench-origin"

// trafficStack is a relay with an agent in front of the origin, for the scenarios that carry traffic.
type trafficStack struct {
	relay *relayProc
	agent *agentProc
	meter *meter
}

// startTraffic starts a relay and an agent (or, against an existing relay, just the agent) and a meter on them.
func (e *env) startTraffic(ctx context.Context, name string) (*trafficStack, error) {
	r, err := e.startRelay(ctx, "relay-"+name)
	if err != nil {
		return nil, err
	}
	a, err := e.startAgent(ctx, r, benchHostID)
	if err != nil {
		r.stop()
		return nil, err
	}
	return &trafficStack{relay: r, agent: a, meter: e.newMeter(r, a)}, nil
}

// stop ends the agent and the relay.
func (s *trafficStack) stop() {
	s.agent.stop()
	s.relay.stop()
}

// paths returns the direct and the relay (address, request) pairs for a GET of path on the origin.
func (e *env) paths(s *trafficStack, path string) (directAddr string, direct []byte, relayAddr string, relay []byte) {
	return e.origin.Addr, buildGET(e.origin.Addr, path, ""),
		s.relay.Addr, buildGET(s.relay.Addr, hostPath(benchHostID, path), e.clientToken)
}

// measurePair runs the same closed-loop load direct and through the relay.
func (e *env) measurePair(ctx context.Context, s *trafficStack, path string, workers int) (direct, relay *loadResult, err error) {
	da, dreq, ra, rreq := e.paths(s, path)
	spec := loadSpec{Workers: workers, Duration: e.cfg.Duration, MaxCount: e.cfg.MaxRequests, Warmup: 20}
	spec.Addr, spec.Request = da, dreq
	direct, err = runLoad(ctx, spec)
	if err != nil {
		return nil, nil, fmt.Errorf("direct c=%d: %w", workers, err)
	}
	spec.Addr, spec.Request = ra, rreq
	stopProfile := e.profile(ctx, s.relay, fmt.Sprintf("c%d", workers))
	s.meter.begin()
	relay, err = runLoad(ctx, spec)
	s.meter.end()
	stopProfile()
	if err != nil {
		return nil, nil, fmt.Errorf("relay c=%d: %w", workers, err)
	}
	return direct, relay, nil
}

// runRPS measures small keep-alive GETs at each concurrency level.
func runRPS(ctx context.Context, e *env) (*Result, error) {
	res := &Result{}
	s, err := e.startTraffic(ctx, "rps")
	if err != nil {
		return res, err
	}
	defer s.stop()
	for _, c := range e.cfg.Concurrency {
		d, r, err := e.measurePair(ctx, s, "/small", c)
		if err != nil {
			return res, err
		}
		ds, rs := d.Lat.Summary(), r.Lat.Summary()
		e.progressf("rps c=%-4d direct %8.0f rps p50 %6.0f µs p99 %6.0f µs | relay %8.0f rps p50 %6.0f µs p99 %6.0f µs | %.2f× (errors %d/%d, generator CPU %.0f%%)",
			c, d.RPS(), ds.P50, ds.P99, r.RPS(), rs.P50, rs.P99, r.RPS()/d.RPS(), d.Errors, r.Errors, 100*r.CPU.share())
		rpsRow := row(fmt.Sprintf("rps c=%d", c), "req/s", r.RPS(), d.RPS(), true)
		if c == 50 {
			rpsRow = rpsRow.withGoal("≥ 0.6× direct", rpsRow.Ratio >= 0.6)
		}
		res.add(rpsRow,
			row(fmt.Sprintf("p50 c=%d", c), "µs", rs.P50, ds.P50, false),
			row(fmt.Sprintf("p99 c=%d", c), "µs", rs.P99, ds.P99, false))
		if r.Errors > 0 || d.Errors > 0 {
			res.notef("c=%d: %d relay and %d direct requests failed", c, r.Errors, d.Errors)
		}
	}
	s.meter.fill(ctx, res)
	return res, nil
}

// runLatency measures the latency the relay adds at concurrency 1.
func runLatency(ctx context.Context, e *env) (*Result, error) {
	res := &Result{}
	s, err := e.startTraffic(ctx, "latency")
	if err != nil {
		return res, err
	}
	defer s.stop()
	d, r, err := e.measurePair(ctx, s, "/small", 1)
	if err != nil {
		return res, err
	}
	ds, rs := d.Lat.Summary(), r.Lat.Summary()
	added := rs.P50 - ds.P50
	e.progressf("latency c=1 direct p50 %.0f µs p99 %.0f µs | relay p50 %.0f µs p99 %.0f µs | added p50 %.0f µs",
		ds.P50, ds.P99, rs.P50, rs.P99, added)
	res.add(
		row("p50", "µs", rs.P50, ds.P50, false).withGoal("≤ +100 µs", added <= 100),
		row("p90", "µs", rs.P90, ds.P90, false),
		row("p99", "µs", rs.P99, ds.P99, false),
		row("p99.9", "µs", rs.P999, ds.P999, false),
		row("added p50", "µs", added, 0, false).withBaseline("relay − direct"),
		row("added p99", "µs", rs.P99-ds.P99, 0, false).withBaseline("relay − direct"),
	)
	s.meter.fill(ctx, res)
	return res, nil
}

// runBulk measures one large download and one large upload on a single connection.
func runBulk(ctx context.Context, e *env) (*Result, error) {
	res := &Result{}
	s, err := e.startTraffic(ctx, "bulk")
	if err != nil {
		return res, err
	}
	defer s.stop()
	// A generous bound: 10 s plus 20 s per GiB (50 MiB/s).
	timeout := 10*time.Second + time.Duration(float64(e.cfg.Download+e.cfg.Upload)/(50<<20)*float64(time.Second))
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	directBase := "http://" + e.origin.Addr
	relayBase := s.relay.Base + hostPath(benchHostID, "")
	mib := func(n int64, d time.Duration) float64 { return float64(n) / (1 << 20) / d.Seconds() }

	dl := fmt.Sprintf("/bytes?n=%d", e.cfg.Download)
	dd, err := transfer(ctx, http.MethodGet, directBase+dl, "", e.cfg.Download)
	if err != nil {
		return res, fmt.Errorf("direct download: %w", err)
	}
	stopProfile := e.profile(ctx, s.relay, "download")
	s.meter.begin()
	rd, err := transfer(ctx, http.MethodGet, relayBase+dl, e.clientToken, e.cfg.Download)
	s.meter.end()
	stopProfile()
	if err != nil {
		return res, fmt.Errorf("relay download: %w", err)
	}
	e.progressf("bulk download %d MiB: direct %.0f MiB/s | relay %.0f MiB/s", e.cfg.Download>>20, mib(e.cfg.Download, dd), mib(e.cfg.Download, rd))

	du, err := transfer(ctx, http.MethodPost, directBase+"/sink", "", e.cfg.Upload)
	if err != nil {
		return res, fmt.Errorf("direct upload: %w", err)
	}
	s.meter.begin()
	ru, err := transfer(ctx, http.MethodPost, relayBase+"/sink", e.clientToken, e.cfg.Upload)
	s.meter.end()
	if err != nil {
		return res, fmt.Errorf("relay upload: %w", err)
	}
	e.progressf("bulk upload %d MiB: direct %.0f MiB/s | relay %.0f MiB/s", e.cfg.Upload>>20, mib(e.cfg.Upload, du), mib(e.cfg.Upload, ru))
	dlRow := row(fmt.Sprintf("download %d MiB", e.cfg.Download>>20), "MiB/s", mib(e.cfg.Download, rd), mib(e.cfg.Download, dd), true)
	res.add(dlRow.withGoal("≥ 1024 MiB/s", dlRow.Relay >= 1024),
		row(fmt.Sprintf("upload %d MiB", e.cfg.Upload>>20), "MiB/s", mib(e.cfg.Upload, ru), mib(e.cfg.Upload, du), true))
	s.meter.fill(ctx, res)
	return res, nil
}

// transfer downloads (GET, expecting size bytes) or uploads (POST of size bytes) over a fresh connection and
// returns the time from sending the request to the end of the response.
func transfer(ctx context.Context, method, url, bearer string, size int64) (time.Duration, error) {
	tr := &http.Transport{
		DialContext:        (&net.Dialer{}).DialContext,
		DisableCompression: true,
		ReadBufferSize:     256 << 10,
		WriteBufferSize:    256 << 10,
	}
	defer tr.CloseIdleConnections()
	var body io.Reader
	if method == http.MethodPost {
		body = &patternReader{left: size}
	}
	req, err := http.NewRequestWithContext(ctx, method, url, body)
	if err != nil {
		return 0, err
	}
	if body != nil {
		req.ContentLength = size
	}
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	t0 := time.Now()
	resp, err := tr.RoundTrip(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	buf := make([]byte, 256<<10)
	n, err := io.CopyBuffer(io.Discard, resp.Body, buf)
	elapsed := time.Since(t0)
	if err != nil {
		return 0, fmt.Errorf("read response after %d bytes: %w", n, err)
	}
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("status %d", resp.StatusCode)
	}
	if method == http.MethodGet && n != size {
		return 0, fmt.Errorf("got %d bytes, want %d", n, size)
	}
	return elapsed, nil
}

// patternReader yields left bytes of a fixed pattern, in large slices.
type patternReader struct{ left int64 }

var pattern = []byte(strings.Repeat("switchboard-bench-upload-pattern", 8192)) // 256 KiB

func (p *patternReader) Read(b []byte) (int, error) {
	if p.left <= 0 {
		return 0, io.EOF
	}
	n := copy(b, pattern[:min(int64(len(pattern)), p.left)])
	p.left -= int64(n)
	return n, nil
}

// WriteTo lets io.Copy skip its own buffer.
func (p *patternReader) WriteTo(w io.Writer) (int64, error) {
	var total int64
	for p.left > 0 {
		n, err := w.Write(pattern[:min(int64(len(pattern)), p.left)])
		total += int64(n)
		p.left -= int64(n)
		if err != nil {
			return total, err
		}
	}
	return total, nil
}
