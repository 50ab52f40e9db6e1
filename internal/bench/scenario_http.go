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

// measured is one closed-loop load on each path: direct to the origin, through the pipe, through the relay.
type measured struct{ direct, pipe, relay *loadResult }

// measurePaths runs the same closed-loop load direct, through the pipe and through the relay. The direct and pipe
// requests are the same bytes (the pipe does not parse them); the relay's carries the host path and a token.
func (e *env) measurePaths(ctx context.Context, s *trafficStack, path string, workers int) (m measured, err error) {
	spec := loadSpec{Workers: workers, Duration: e.cfg.Duration, MaxCount: e.cfg.MaxRequests, Warmup: 20}
	spec.Addr, spec.Request = e.origin.Addr, buildGET(e.origin.Addr, path, "")
	if m.direct, err = runLoad(ctx, spec); err != nil {
		return m, fmt.Errorf("direct c=%d: %w", workers, err)
	}
	spec.Addr = e.pipe.Addr
	if m.pipe, err = runLoad(ctx, spec); err != nil {
		return m, fmt.Errorf("pipe c=%d: %w", workers, err)
	}
	spec.Addr, spec.Request = s.relay.Addr, buildGET(s.relay.Addr, hostPath(benchHostID, path), e.clientToken)
	stopProfile := e.profile(ctx, s.relay, fmt.Sprintf("c%d", workers))
	s.meter.begin()
	m.relay, err = runLoad(ctx, spec)
	s.meter.end()
	stopProfile()
	if err != nil {
		return m, fmt.Errorf("relay c=%d: %w", workers, err)
	}
	return m, nil
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
		m, err := e.measurePaths(ctx, s, "/small", c)
		if err != nil {
			return res, err
		}
		d, p, r := m.direct, m.pipe, m.relay
		ds, ps, rs := d.Lat.Summary(), p.Lat.Summary(), r.Lat.Summary()
		e.progressf("rps c=%-4d direct %8.0f rps p50 %6.0f µs | pipe %8.0f rps p50 %6.0f µs | relay %8.0f rps p50 %6.0f µs p99 %6.0f µs | %.2f× direct, %.2f× pipe (errors %d/%d/%d, generator CPU %.0f%%)",
			c, d.RPS(), ds.P50, p.RPS(), ps.P50, r.RPS(), rs.P50, rs.P99, r.RPS()/d.RPS(), r.RPS()/p.RPS(), d.Errors, p.Errors, r.Errors, 100*r.CPU.share())
		rpsRow := row(fmt.Sprintf("rps c=%d", c), "req/s", r.RPS(), d.RPS(), true).withPipe(p.RPS())
		if c == 50 {
			rpsRow = rpsRow.withGoal("≥ 1.0× pipe", rpsRow.PipeRatio >= 1)
		}
		res.add(rpsRow,
			row(fmt.Sprintf("p50 c=%d", c), "µs", rs.P50, ds.P50, false).withPipe(ps.P50),
			row(fmt.Sprintf("p99 c=%d", c), "µs", rs.P99, ds.P99, false).withPipe(ps.P99))
		if r.Errors > 0 || p.Errors > 0 || d.Errors > 0 {
			res.notef("c=%d: %d relay, %d pipe and %d direct requests failed", c, r.Errors, p.Errors, d.Errors)
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
	m, err := e.measurePaths(ctx, s, "/small", 1)
	if err != nil {
		return res, err
	}
	ds, ps, rs := m.direct.Lat.Summary(), m.pipe.Lat.Summary(), m.relay.Lat.Summary()
	added, pipeAdded := rs.P50-ds.P50, ps.P50-ds.P50
	e.progressf("latency c=1 direct p50 %.0f µs p99 %.0f µs | pipe p50 %.0f µs p99 %.0f µs | relay p50 %.0f µs p99 %.0f µs | added p50 %.0f µs (pipe %.0f µs)",
		ds.P50, ds.P99, ps.P50, ps.P99, rs.P50, rs.P99, added, pipeAdded)
	res.add(
		row("p50", "µs", rs.P50, ds.P50, false).withPipe(ps.P50),
		row("p90", "µs", rs.P90, ds.P90, false).withPipe(ps.P90),
		row("p99", "µs", rs.P99, ds.P99, false).withPipe(ps.P99),
		row("p99.9", "µs", rs.P999, ds.P999, false).withPipe(ps.P999),
		// Differences of two noisy figures may be negative: they are rows of their own, never a ratio's base.
		row("added p50", "µs", added, 0, false).withBaseline("relay − direct").
			withGoal("≤ pipe's + 25 µs", added <= pipeAdded+25),
		row("pipe added p50", "µs", pipeAdded, 0, false).withBaseline("pipe − direct"),
		row("added p99", "µs", rs.P99-ds.P99, 0, false).withBaseline("relay − direct").
			withGoal("≤ 1000 µs", rs.P99-ds.P99 <= 1000),
		row("pipe added p99", "µs", ps.P99-ds.P99, 0, false).withBaseline("pipe − direct"),
	)
	res.notef("added = path − direct; the pipe is two chained processes that only pass bytes on, the floor for any relay with two processes in the path")
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
	pipeBase := "http://" + e.pipe.Addr
	pd, err := transfer(ctx, http.MethodGet, pipeBase+dl, "", e.cfg.Download)
	if err != nil {
		return res, fmt.Errorf("pipe download: %w", err)
	}
	e.progressf("bulk download %d MiB: direct %.0f MiB/s | pipe %.0f MiB/s | relay %.0f MiB/s", e.cfg.Download>>20,
		mib(e.cfg.Download, dd), mib(e.cfg.Download, pd), mib(e.cfg.Download, rd))

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
	pu, err := transfer(ctx, http.MethodPost, pipeBase+"/sink", "", e.cfg.Upload)
	if err != nil {
		return res, fmt.Errorf("pipe upload: %w", err)
	}
	e.progressf("bulk upload %d MiB: direct %.0f MiB/s | pipe %.0f MiB/s | relay %.0f MiB/s", e.cfg.Upload>>20,
		mib(e.cfg.Upload, du), mib(e.cfg.Upload, pu), mib(e.cfg.Upload, ru))

	// The same two transfers through the copying pipe (see pipe.go): how much of the pipe's lead is splice(2).
	cp, err := e.startPipe(ctx, true)
	if err != nil {
		return res, err
	}
	defer cp.stop()
	cpBase := "http://" + cp.Addr
	cd, err := transfer(ctx, http.MethodGet, cpBase+dl, "", e.cfg.Download)
	if err != nil {
		return res, fmt.Errorf("copying pipe download: %w", err)
	}
	cu, err := transfer(ctx, http.MethodPost, cpBase+"/sink", "", e.cfg.Upload)
	if err != nil {
		return res, fmt.Errorf("copying pipe upload: %w", err)
	}
	e.progressf("bulk through the copying pipe: download %.0f MiB/s, upload %.0f MiB/s",
		mib(e.cfg.Download, cd), mib(e.cfg.Upload, cu))

	dlName, ulName := fmt.Sprintf("download %d MiB", e.cfg.Download>>20), fmt.Sprintf("upload %d MiB", e.cfg.Upload>>20)
	dlRow := row(dlName, "MiB/s", mib(e.cfg.Download, rd), mib(e.cfg.Download, dd), true).withPipe(mib(e.cfg.Download, pd))
	ulRow := row(ulName, "MiB/s", mib(e.cfg.Upload, ru), mib(e.cfg.Upload, du), true).withPipe(mib(e.cfg.Upload, pu))
	res.add(dlRow.withGoal("≥ 0.95× pipe", dlRow.PipeRatio >= 0.95), ulRow.withGoal("≥ 0.95× pipe", ulRow.PipeRatio >= 0.95),
		row(dlName+", copying pipe", "MiB/s", mib(e.cfg.Download, rd), mib(e.cfg.Download, dd), true).
			withPipe(mib(e.cfg.Download, cd)),
		row(ulName+", copying pipe", "MiB/s", mib(e.cfg.Upload, ru), mib(e.cfg.Upload, du), true).
			withPipe(mib(e.cfg.Upload, cu)))
	res.notef("the pipe splices (io.Copy between TCP connections: no byte enters its memory); in the copying-pipe rows " +
		"the pipe column is the same chain copying through a buffer, the floor of a relay that must read its bytes")
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
