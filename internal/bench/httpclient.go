package bench

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync/atomic"
	"time"
)

// conn is a lean HTTP/1.1 keep-alive client on one net.Conn: it writes a prebuilt request and parses just enough of
// the response (status, Content-Length, chunked encoding, Connection: close) to find its end. net/http's Transport
// costs two goroutines and a hand-off per request, which on a 2-core machine steals CPU from the system under test;
// this client does the exchange on the caller's goroutine.
type conn struct {
	nc net.Conn
	br *bufio.Reader
}

// errConnClose reports a response that asked to close the connection; the caller redials.
var errConnClose = errors.New("server closed the connection")

// dialConn connects to addr (host:port).
func dialConn(ctx context.Context, addr string) (*conn, error) {
	var d net.Dialer
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", addr, err)
	}
	return &conn{nc: nc, br: bufioReader(nc)}, nil
}

// Close closes the connection.
func (c *conn) Close() error { return c.nc.Close() }

// do writes req and reads one response, discarding its body. It returns the status code and the body length. An
// error means the connection is unusable; errConnClose comes with a complete response.
func (c *conn) do(req []byte) (status int, n int64, err error) {
	if _, err := c.nc.Write(req); err != nil {
		return 0, 0, fmt.Errorf("write request: %w", err)
	}
	return c.readResponse()
}

// readResponse reads one response and discards its body.
func (c *conn) readResponse() (status int, n int64, err error) {
	line, err := c.br.ReadSlice('\n')
	if err != nil {
		return 0, 0, fmt.Errorf("read status line: %w", err)
	}
	// "HTTP/1.1 200 OK\r\n"
	if len(line) < 12 || !bytes.HasPrefix(line, []byte("HTTP/1.")) {
		return 0, 0, fmt.Errorf("malformed status line %q", line)
	}
	status, err = strconv.Atoi(string(line[9:12]))
	if err != nil {
		return 0, 0, fmt.Errorf("malformed status code %q", line)
	}
	contentLength := int64(-1)
	chunked, closeConn := false, false
	for {
		line, err := c.br.ReadSlice('\n')
		if err != nil {
			return 0, 0, fmt.Errorf("read header: %w", err)
		}
		line = bytes.TrimRight(line, "\r\n")
		if len(line) == 0 {
			break
		}
		k, v, ok := bytes.Cut(line, []byte(":"))
		if !ok {
			return 0, 0, fmt.Errorf("malformed header %q", line)
		}
		v = bytes.TrimSpace(v)
		switch {
		case bytes.EqualFold(k, []byte("Content-Length")):
			contentLength, err = strconv.ParseInt(string(v), 10, 64)
			if err != nil || contentLength < 0 {
				return 0, 0, fmt.Errorf("malformed Content-Length %q", v)
			}
		case bytes.EqualFold(k, []byte("Transfer-Encoding")):
			chunked = bytes.EqualFold(v, []byte("chunked"))
		case bytes.EqualFold(k, []byte("Connection")):
			closeConn = bytes.EqualFold(v, []byte("close"))
		}
	}
	switch {
	case status == 204 || status == 304 || status/100 == 1:
	case chunked:
		n, err = c.discardChunked()
	case contentLength >= 0:
		var m int
		m, err = c.br.Discard(int(contentLength))
		n = int64(m)
	default:
		// Body until EOF.
		n, err = io.Copy(io.Discard, c.br)
		closeConn = true
	}
	if err != nil {
		return status, n, fmt.Errorf("read body: %w", err)
	}
	if closeConn {
		return status, n, errConnClose
	}
	return status, n, nil
}

// discardChunked reads a chunked body and its trailers.
func (c *conn) discardChunked() (int64, error) {
	var total int64
	for range 1 << 30 {
		line, err := c.br.ReadSlice('\n')
		if err != nil {
			return total, err
		}
		line = bytes.TrimRight(line, "\r\n")
		if i := bytes.IndexByte(line, ';'); i >= 0 {
			line = line[:i]
		}
		size, err := strconv.ParseInt(string(bytes.TrimSpace(line)), 16, 64)
		if err != nil || size < 0 {
			return total, fmt.Errorf("malformed chunk size %q", line)
		}
		if size == 0 {
			// Trailers, then an empty line.
			for {
				t, err := c.br.ReadSlice('\n')
				if err != nil {
					return total, err
				}
				if len(bytes.TrimRight(t, "\r\n")) == 0 {
					return total, nil
				}
			}
		}
		m, err := c.br.Discard(int(size))
		total += int64(m)
		if err != nil {
			return total, err
		}
		if _, err := c.br.Discard(2); err != nil {
			return total, err
		}
	}
	return total, errors.New("too many chunks")
}

// buildGET returns the bytes of a keep-alive GET request.
func buildGET(hostport, path, bearer string) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "GET %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: switchboard-bench\r\n", path, hostport)
	if bearer != "" {
		fmt.Fprintf(&b, "Authorization: Bearer %s\r\n", bearer)
	}
	b.WriteString("\r\n")
	return b.Bytes()
}

// loadSpec is one closed-loop HTTP load run: Workers goroutines, each with its own keep-alive connection, send
// Request back to back until Duration passes or MaxCount requests were sent in total.
type loadSpec struct {
	Addr     string
	Request  []byte
	Workers  int
	Duration time.Duration
	MaxCount int64
	// Warmup requests per worker are sent before the clock starts and not counted.
	Warmup int
}

// loadResult is the outcome of a loadSpec.
type loadResult struct {
	OK      int64
	Errors  int64 // transport errors and non-2xx answers
	Elapsed time.Duration
	Lat     Histogram
	CPU     cpuDelta // the bench process's CPU during the run
}

// RPS is successful requests per second.
func (r *loadResult) RPS() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.OK) / r.Elapsed.Seconds()
}

// add merges o into r: counts, time and latencies (CPU figures are not merged).
func (r *loadResult) add(o *loadResult) {
	r.OK += o.OK
	r.Errors += o.Errors
	r.Elapsed += o.Elapsed
	r.Lat.Merge(&o.Lat)
}

// loadWorker is one connection of a load run. Its fields are owned by its goroutine until runLoad has waited for it.
type loadWorker struct {
	c      *conn
	lat    Histogram
	ok     int64
	errors int64
	err    error // the last error seen
}

// runLoad runs spec and returns its figures. It fails only when no request at all succeeded.
func runLoad(ctx context.Context, spec loadSpec) (*loadResult, error) {
	if spec.Workers < 1 {
		spec.Workers = 1
	}
	ws := make([]*loadWorker, spec.Workers)
	for i := range ws {
		c, err := dialConn(ctx, spec.Addr)
		if err != nil {
			for _, w := range ws[:i] {
				w.c.Close()
			}
			return nil, err
		}
		ws[i] = &loadWorker{c: c}
	}
	defer func() {
		for _, w := range ws {
			if w.c != nil {
				w.c.Close()
			}
		}
	}()
	// Warm up every connection (and the path behind it) before measuring.
	for _, w := range ws {
		for range spec.Warmup {
			st, _, err := w.c.do(spec.Request)
			if err != nil || st/100 != 2 {
				return nil, fmt.Errorf("warm-up request: status %d: %v", st, err)
			}
		}
	}
	b := newBudget(spec.MaxCount)
	start := time.Now()
	deadline := start.Add(spec.Duration)
	cpu0 := readSelfCPU()
	done := make(chan struct{}, len(ws))
	for _, w := range ws {
		go func() {
			defer func() { done <- struct{}{} }()
			w.run(ctx, spec, deadline, b)
		}()
	}
	for range ws {
		<-done
	}
	res := &loadResult{Elapsed: time.Since(start), CPU: readSelfCPU().sub(cpu0)}
	var firstErr error
	for _, w := range ws {
		res.OK += w.ok
		res.Errors += w.errors
		res.Lat.Merge(&w.lat)
		if firstErr == nil {
			firstErr = w.err
		}
	}
	if res.OK == 0 {
		return res, fmt.Errorf("no request succeeded: %v", firstErr)
	}
	return res, nil
}

// maxRedials bounds how often one worker reconnects after errors in one run.
const maxRedials = 100

// run is one load worker's loop: send, time, repeat until the deadline, the budget or ctx ends it. It redials
// after a connection error, at most maxRedials times.
func (w *loadWorker) run(ctx context.Context, spec loadSpec, deadline time.Time, b *budget) {
	redials := 0
	for ctx.Err() == nil && b.take() {
		t0 := time.Now()
		if !t0.Before(deadline) {
			return
		}
		st, _, err := w.c.do(spec.Request)
		if err == nil || errors.Is(err, errConnClose) {
			if st/100 == 2 {
				w.lat.Record(time.Since(t0))
				w.ok++
			} else {
				w.errors++
				w.err = fmt.Errorf("status %d", st)
			}
		} else {
			w.errors++
			w.err = err
		}
		if err != nil {
			w.c.Close()
			w.c = nil
			if redials >= maxRedials {
				return
			}
			redials++
			c, err := dialConn(ctx, spec.Addr)
			if err != nil {
				w.err = err
				return
			}
			w.c = c
		}
	}
}

// budget hands out at most max tokens across goroutines; max <= 0 means unlimited.
type budget struct {
	left atomic.Int64
	max  int64
}

func newBudget(max int64) *budget {
	b := &budget{max: max}
	b.left.Store(max)
	return b
}

// take reports whether one more request may be sent.
func (b *budget) take() bool {
	if b.max <= 0 {
		return true
	}
	return b.left.Add(-1) >= 0
}

// bufioReader wraps r the way dialConn does.
func bufioReader(r io.Reader) *bufio.Reader { return bufio.NewReaderSize(r, 32<<10) }
