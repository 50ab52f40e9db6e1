package bench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/switchboard-relay/switchboard/internal/listen"
)

// child is a process the bench started: the relay, a host agent or the origin.
type child struct {
	name string
	cmd  *exec.Cmd
	done chan struct{} // closed when the process has exited
	err  error         // the exit status; read after done
	tail *tailBuffer   // the last bytes of its output, for error messages
	log  *os.File      // its full output, when the report has a directory
}

// startChild runs exe with args. Output goes to logDir/name.log when logDir is set, and its tail is kept in memory.
// files are passed down as file descriptors 3, 4, … (listening sockets the child serves as fd:N).
func startChild(exe, name, logDir string, args, env []string, files ...*os.File) (*child, error) {
	c := &child{name: name, done: make(chan struct{}), tail: &tailBuffer{max: 4 << 10}}
	var out io.Writer = c.tail
	if logDir != "" {
		f, err := os.OpenFile(filepath.Join(logDir, name+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			return nil, fmt.Errorf("open %s log: %w", name, err)
		}
		c.log = f
		out = io.MultiWriter(f, c.tail)
	}
	// Not CommandContext: the owner stops children explicitly (SIGTERM, then SIGKILL) and waits for them.
	c.cmd = exec.Command(exe, args...)
	c.cmd.Env = append(os.Environ(), env...)
	c.cmd.Stdout = out
	c.cmd.Stderr = out
	c.cmd.ExtraFiles = files
	c.cmd.SysProcAttr = dieWithParent() // children die with the bench even if it is killed (Linux only)
	if err := c.cmd.Start(); err != nil {
		if c.log != nil {
			c.log.Close()
		}
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	go c.wait()
	return c, nil
}

// wait reaps the process; it is the goroutine started by startChild and ends when the process does.
func (c *child) wait() {
	c.err = c.cmd.Wait()
	if c.log != nil {
		c.log.Close()
	}
	close(c.done)
}

// PID is the process id.
func (c *child) PID() int { return c.cmd.Process.Pid }

// exited reports whether the process has ended.
func (c *child) exited() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// describe is a one-line account of the child's state and the tail of its output, for error messages.
func (c *child) describe() string {
	state := "running"
	if c.exited() {
		state = fmt.Sprintf("exited (%v)", c.err)
	}
	return fmt.Sprintf("%s %s; output tail:\n%s", c.name, state, c.tail.String())
}

// stop asks the process to end with SIGTERM and kills it after grace. It waits for the exit.
func (c *child) stop(grace time.Duration) {
	if c.exited() {
		return
	}
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-c.done:
	case <-t.C:
		c.kill()
	}
}

// kill ends the process at once and waits for the exit.
func (c *child) kill() {
	_ = c.cmd.Process.Kill()
	<-c.done
}

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	mu  sync.Mutex
	max int
	b   []byte
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.b = append(t.b, p...)
	if len(t.b) > t.max {
		t.b = append(t.b[:0], t.b[len(t.b)-t.max:]...)
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.b)
}

// freeAddr returns a loopback address with a port that was free a moment ago. Only for children that cannot serve
// an inherited socket (redis-server): the port may be taken before they bind it, so their start is retried.
func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("find a free port: %w", err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr, nil
}

// socket is a loopback listening socket the bench holds for the life of a child and every restart of it: the child
// serves it as fd:N, so its address never falls free between two runs (another process could take a port the bench
// let go of, and a restart "on the same port" would fail to bind).
type socket struct {
	ln   net.Listener
	file *os.File // the duplicate passed to children
	Addr string   // host:port
}

// newSocket opens a listening socket on a free loopback port.
func newSocket() (*socket, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("listen: %w", err)
	}
	f, err := listen.File(ln)
	if err != nil {
		ln.Close()
		return nil, err
	}
	return &socket{ln: ln, file: f, Addr: ln.Addr().String()}, nil
}

// close releases the socket; children that still serve it keep their own copies.
func (s *socket) close() {
	s.file.Close()
	s.ln.Close()
}

// sockets opens n listening sockets; the i-th is passed to a child as fd:(3+i).
func sockets(n int) ([]*socket, error) {
	out := make([]*socket, 0, n)
	for range n {
		s, err := newSocket()
		if err != nil {
			closeSockets(out)
			return nil, err
		}
		out = append(out, s)
	}
	return out, nil
}

func closeSockets(ss []*socket) {
	for _, s := range ss {
		s.close()
	}
}

// files are the sockets' descriptors for startChild, in order.
func files(ss []*socket) []*os.File {
	out := make([]*os.File, len(ss))
	for i, s := range ss {
		out[i] = s.file
	}
	return out
}

// fdArg is the listen spec of the i-th socket passed to a child.
func fdArg(i int) string { return "fd:" + strconv.Itoa(3+i) }

// waitReady polls url until it answers 200, the child exits, or timeout passes.
func waitReady(ctx context.Context, url string, c *child, timeout time.Duration, header http.Header) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	client := &http.Client{Timeout: 2 * time.Second}
	var last error
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		for k, v := range header {
			req.Header[k] = v
		}
		resp, err := client.Do(req)
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			last = fmt.Errorf("status %d", resp.StatusCode)
		} else {
			last = err
		}
		if c != nil && c.exited() {
			return fmt.Errorf("wait for %s: process ended: %s", redactURL(url), c.describe())
		}
		t := time.NewTimer(50 * time.Millisecond)
		select {
		case <-ctx.Done():
			t.Stop()
			msg := fmt.Sprintf("wait for %s: %v", redactURL(url), last)
			if c != nil {
				msg += ": " + c.describe()
			}
			return errors.New(msg)
		case <-t.C:
		}
	}
}

// redactURL drops a query, which may hold a token.
func redactURL(u string) string {
	if i := strings.IndexByte(u, '?'); i >= 0 {
		return u[:i] + "?…"
	}
	return u
}

// metricsSnapshot is what the bench reads from a relay's /metrics.
type metricsSnapshot struct {
	Goroutines float64 `json:"goroutines"`
	HeapInuse  float64 `json:"heap_inuse_bytes"`
	// HeapAlloc is go_memstats_heap_alloc_bytes: right after a forced GC, the live heap. Unlike HeapInuse it does
	// not count free space inside spans, which grows and shrinks with fragmentation, not with leaks.
	HeapAlloc float64 `json:"heap_alloc_bytes"`
	// HeapFree is go_memstats_heap_idle_bytes less go_memstats_heap_released_bytes: heap the runtime has freed but
	// not yet returned to the OS. It is part of RSS, and it is why RSS swings from run to run with the same live heap:
	// after a burst of allocation (10k tunnels connecting) the runtime may keep up to the GC goal (2× live with
	// GOGC=100) and returns it only slowly.
	HeapFree   float64 `json:"heap_free_bytes"`
	StackInuse float64 `json:"stack_inuse_bytes"`
	Found      bool    `json:"-"`
	ForcedGC   bool    `json:"forced_gc"`
}

// scrapeMetrics reads go_goroutines and go_memstats_heap_inuse_bytes from a Prometheus text endpoint. With gc it
// first asks /debug/pprof/heap?gc=1 on the same listener to run a collection, so heap figures compare.
func scrapeMetrics(ctx context.Context, base string, gc bool) (metricsSnapshot, error) {
	var s metricsSnapshot
	client := &http.Client{Timeout: 10 * time.Second}
	if gc {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/debug/pprof/heap?gc=1", nil)
		if err == nil {
			if resp, err := client.Do(req); err == nil {
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				s.ForcedGC = resp.StatusCode == http.StatusOK
			}
		}
	}
	n := 0
	err := eachSample(ctx, base, func(name, val string) {
		switch name {
		case "go_goroutines":
			s.Goroutines, _ = strconv.ParseFloat(val, 64)
			n++
		case "go_memstats_heap_inuse_bytes":
			s.HeapInuse, _ = strconv.ParseFloat(val, 64)
			n++
		case "go_memstats_heap_alloc_bytes":
			s.HeapAlloc, _ = strconv.ParseFloat(val, 64)
		case "go_memstats_heap_idle_bytes":
			v, _ := strconv.ParseFloat(val, 64)
			s.HeapFree += v
		case "go_memstats_heap_released_bytes":
			v, _ := strconv.ParseFloat(val, 64)
			s.HeapFree -= v
		case "go_memstats_stack_inuse_bytes":
			s.StackInuse, _ = strconv.ParseFloat(val, 64)
		}
	})
	if err != nil {
		return s, err
	}
	s.Found = n == 2
	if !s.Found {
		return s, errors.New("scrape metrics: go_goroutines or go_memstats_heap_inuse_bytes missing (is the Go collector registered?)")
	}
	return s, nil
}

// scrapeValue reads one metric from a Prometheus text endpoint: the sum of its samples over every label set.
func scrapeValue(ctx context.Context, base, metric string) (float64, error) {
	var sum float64
	found := false
	err := eachSample(ctx, base, func(name, val string) {
		if i := strings.IndexByte(name, '{'); i >= 0 {
			name = name[:i]
		}
		if name == metric {
			v, _ := strconv.ParseFloat(val, 64)
			sum += v
			found = true
		}
	})
	if err == nil && !found {
		err = fmt.Errorf("scrape metrics: no %s", metric)
	}
	return sum, err
}

// eachSample calls fn with the series name (labels included) and the value of every sample at base/metrics.
func eachSample(ctx context.Context, base string, fn func(name, val string)) error {
	if base == "" {
		return errors.New("scrape metrics: no metrics listener")
	}
	client := &http.Client{Timeout: 10 * time.Second}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/metrics", nil)
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("scrape metrics: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("scrape metrics: status %d", resp.StatusCode)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") {
			continue
		}
		// "name{labels} value": label values may hold spaces, so the value is after the last space.
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		fn(line[:i], strings.TrimSpace(line[i+1:]))
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("scrape metrics: %w", err)
	}
	return nil
}
