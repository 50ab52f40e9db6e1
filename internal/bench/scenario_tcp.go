package bench

import (
	"context"
	be "encoding/binary"
	"fmt"
	"io"
	"net"
	"sync"
	"time"
)

// tcpHostID is the host that publishes the bench's TCP service.
const tcpHostID = "bench-tcp"

// runTCP measures a raw TCP service through the relay (`switchboard host --tcp` on one side, `switchboard
// forward` on the other, both children, as users run them) against a direct connection to the service: connect
// latency (dial to the first byte of an answer, which through the relay includes the stream's WebSocket upgrade),
// and download and upload throughput of one stream.
func runTCP(ctx context.Context, e *env) (*Result, error) {
	res := &Result{}
	svc, err := startTCPService()
	if err != nil {
		return res, err
	}
	defer svc.close()
	r, err := e.startRelay(ctx, "relay-tcp")
	if err != nil {
		return res, err
	}
	defer r.stop()
	token, err := e.hostToken(tcpHostID)
	if err != nil {
		return res, err
	}
	agent, err := startChild(e.exe, "agent-tcp", e.logDir, []string{"host", "--relay", r.Base, "--id", tcpHostID,
		"--token", token, "--tcp", "bench=" + svc.addr}, []string{"SWITCHBOARD_LOG_LEVEL=" + childLogLevel})
	if err != nil {
		return res, err
	}
	defer agent.stop(5 * time.Second)
	ss, err := sockets(1)
	if err != nil {
		return res, err
	}
	defer closeSockets(ss)
	fwd, err := startChild(e.exe, "forward-tcp", e.logDir, []string{"forward", "--listen", fdArg(0), "--relay", r.Base,
		tcpHostID, "bench"}, []string{"SWITCHBOARD_LOG_LEVEL=" + childLogLevel, "SWITCHBOARD_CLIENT_TOKEN=" + e.clientToken},
		files(ss)...)
	if err != nil {
		return res, err
	}
	defer fwd.stop(5 * time.Second)
	local := ss[0].Addr
	if err := waitTCP(ctx, local, agent, fwd); err != nil {
		return res, err
	}

	n := 200
	if e.cfg.Tiny {
		n = 20
	}
	timeout := 30*time.Second + time.Duration(float64(e.cfg.Download+e.cfg.Upload)/(20<<20)*float64(time.Second))
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var dLat, rLat Histogram
	for range n {
		d, err := tcpPing(ctx, svc.addr)
		if err != nil {
			return res, fmt.Errorf("direct connect: %w", err)
		}
		dLat.Record(d)
		d, err = tcpPing(ctx, local)
		if err != nil {
			return res, fmt.Errorf("relay connect: %w", err)
		}
		rLat.Record(d)
	}
	mib := func(n int64, d time.Duration) float64 { return float64(n) / (1 << 20) / d.Seconds() }
	dd, err := tcpDownload(ctx, svc.addr, e.cfg.Download)
	if err != nil {
		return res, fmt.Errorf("direct download: %w", err)
	}
	rd, err := tcpDownload(ctx, local, e.cfg.Download)
	if err != nil {
		return res, fmt.Errorf("relay download: %w", err)
	}
	du, err := tcpUpload(ctx, svc.addr, e.cfg.Upload)
	if err != nil {
		return res, fmt.Errorf("direct upload: %w", err)
	}
	ru, err := tcpUpload(ctx, local, e.cfg.Upload)
	if err != nil {
		return res, fmt.Errorf("relay upload: %w", err)
	}
	ds, rs := dLat.Summary(), rLat.Summary()
	e.progressf("tcp connect p50: direct %.0f µs | relay %.0f µs; download %d MiB: direct %.0f MiB/s | relay %.0f MiB/s; upload %d MiB: direct %.0f MiB/s | relay %.0f MiB/s",
		ds.P50, rs.P50, e.cfg.Download>>20, mib(e.cfg.Download, dd), mib(e.cfg.Download, rd),
		e.cfg.Upload>>20, mib(e.cfg.Upload, du), mib(e.cfg.Upload, ru))
	res.add(
		row("connect p50", "µs", rs.P50, ds.P50, false),
		row("connect p99", "µs", rs.P99, ds.P99, false),
		row(fmt.Sprintf("download %d MiB", e.cfg.Download>>20), "MiB/s", mib(e.cfg.Download, rd), mib(e.cfg.Download, dd), true),
		row(fmt.Sprintf("upload %d MiB", e.cfg.Upload>>20), "MiB/s", mib(e.cfg.Upload, ru), mib(e.cfg.Upload, du), true),
	)
	res.notef("relay path: client → switchboard forward → relay → tunnel → switchboard host → service; %d connects, one stream per transfer", n)
	return res, nil
}

// waitTCP retries a ping through the forwarder until the host's tunnel is up.
func waitTCP(ctx context.Context, addr string, children ...*child) error {
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	var last error
	for {
		if _, last = tcpPing(ctx, addr); last == nil {
			return nil
		}
		for _, c := range children {
			if c.exited() {
				return fmt.Errorf("tcp path: process ended: %s", c.describe())
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("tcp path not ready: %w", last)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// tcpService is the bench's TCP service: one command byte per connection. 'p' answers one byte, then waits for
// the client's end; 'd' followed by an 8-byte big-endian size sends that many bytes and closes; 'u' reads until
// the client's end and answers the count as 8 bytes.
type tcpService struct {
	ln   net.Listener
	addr string
	wg   sync.WaitGroup // the accept loop and one per connection

	mu    sync.Mutex
	conns map[net.Conn]struct{} // guarded by mu
}

func startTCPService() (*tcpService, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("tcp service: %w", err)
	}
	s := &tcpService{ln: ln, addr: ln.Addr().String(), conns: make(map[net.Conn]struct{})}
	s.wg.Go(s.accept)
	return s, nil
}

func (s *tcpService) accept() {
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		s.mu.Lock()
		s.conns[c] = struct{}{}
		s.mu.Unlock()
		s.wg.Go(func() {
			defer func() {
				s.mu.Lock()
				delete(s.conns, c)
				s.mu.Unlock()
				_ = c.Close()
			}()
			s.serve(c)
		})
	}
}

// close stops the service and waits for its goroutines.
func (s *tcpService) close() {
	_ = s.ln.Close()
	s.mu.Lock()
	for c := range s.conns {
		_ = c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
}

func (s *tcpService) serve(c net.Conn) {
	var cmd [9]byte
	if _, err := io.ReadFull(c, cmd[:1]); err != nil {
		return
	}
	switch cmd[0] {
	case 'p':
		if _, err := c.Write(cmd[:1]); err != nil {
			return
		}
		_, _ = io.Copy(io.Discard, c)
	case 'd':
		if _, err := io.ReadFull(c, cmd[1:]); err != nil {
			return
		}
		n := int64(be.BigEndian.Uint64(cmd[1:]))
		_, _ = io.CopyN(c, zeros{}, n)
	case 'u':
		n, err := io.Copy(io.Discard, c)
		if err != nil {
			return
		}
		be.BigEndian.PutUint64(cmd[1:], uint64(n))
		_, _ = c.Write(cmd[1:])
	}
}

// zeros reads as endless zero bytes.
type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

// dialTCP dials addr, closing the connection when ctx ends.
func dialTCP(ctx context.Context, addr string) (*net.TCPConn, func(), error) {
	c, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, nil, err
	}
	stop := context.AfterFunc(ctx, func() { _ = c.Close() })
	return c.(*net.TCPConn), func() { stop(); _ = c.Close() }, nil
}

// tcpPing is one connect: dial, send 'p', read the answer byte; then a clean close both ways.
func tcpPing(ctx context.Context, addr string) (time.Duration, error) {
	t0 := time.Now()
	c, done, err := dialTCP(ctx, addr)
	if err != nil {
		return 0, err
	}
	defer done()
	var b [1]byte
	if _, err := c.Write([]byte{'p'}); err != nil {
		return 0, err
	}
	if _, err := io.ReadFull(c, b[:]); err != nil {
		return 0, err
	}
	d := time.Since(t0)
	_ = c.CloseWrite()
	if _, err := io.Copy(io.Discard, c); err != nil {
		return 0, err
	}
	return d, nil
}

// tcpDownload receives n bytes on one connection and returns how long it took.
func tcpDownload(ctx context.Context, addr string, n int64) (time.Duration, error) {
	c, done, err := dialTCP(ctx, addr)
	if err != nil {
		return 0, err
	}
	defer done()
	t0 := time.Now()
	cmd := make([]byte, 9)
	cmd[0] = 'd'
	be.BigEndian.PutUint64(cmd[1:], uint64(n))
	if _, err := c.Write(cmd); err != nil {
		return 0, err
	}
	_ = c.CloseWrite()
	got, err := io.Copy(io.Discard, c)
	if err != nil {
		return 0, err
	}
	if got != n {
		return 0, fmt.Errorf("received %d bytes of %d", got, n)
	}
	return time.Since(t0), nil
}

// tcpUpload sends n bytes on one connection and returns how long until the service confirmed them all.
func tcpUpload(ctx context.Context, addr string, n int64) (time.Duration, error) {
	c, done, err := dialTCP(ctx, addr)
	if err != nil {
		return 0, err
	}
	defer done()
	t0 := time.Now()
	if _, err := c.Write([]byte{'u'}); err != nil {
		return 0, err
	}
	buf := make([]byte, 256<<10)
	if _, err := io.CopyBuffer(c, io.LimitReader(zeros{}, n), buf); err != nil {
		return 0, err
	}
	_ = c.CloseWrite()
	var ack [8]byte
	if _, err := io.ReadFull(c, ack[:]); err != nil {
		return 0, err
	}
	if got := int64(be.BigEndian.Uint64(ack[:])); got != n {
		return 0, fmt.Errorf("service counted %d bytes of %d", got, n)
	}
	return time.Since(t0), nil
}
