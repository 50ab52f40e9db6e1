// Package redistest starts throwaway Redis processes for tests: one server, a small Redis Cluster, or a primary with
// a replica and three Sentinels (StartSentinelGroup), on free loopback ports, with persistence off, in a test's
// temporary directory, stopped when the test ends.
//
// When a Redis binary is not installed, the helpers skip the test with a message saying which package to install,
// unless the environment variable CI is set, in which case they fail it: CI must run the Redis tests.
package redistest

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/switchboard-relay/switchboard/internal/tcpfront"
)

const (
	startTimeout   = 10 * time.Second // for one server to accept connections
	clusterTimeout = 20 * time.Second // for a cluster to report cluster_state:ok everywhere
	portAttempts   = 10               // free-port races retried before giving up
)

// Server is one redis-server process. Its methods are safe for concurrent use.
//
// A single server (StartServer) is reached through a TCP front the test process holds for the whole test, so Addr
// never changes and never falls free: Restart starts the new redis-server on whatever port is free and points the
// front at it. Restarting on the old port instead could fail, because another process may take a port between
// the kill and the new bind. While the server is stopped, connections to Addr are accepted and closed at once.
type Server struct {
	// Immutable after start.
	Addr    string // host:port on 127.0.0.1 that clients use
	t       testing.TB
	bin     string
	dir     string
	cluster bool
	front   *tcpfront.Front // nil for a node on its own fixed port (a cluster node, a Sentinel group's member)
	extra   []string        // more redis-server arguments (a replica's --replicaof)
	conf    func() string   // if not nil, the process is a Sentinel and this is its configuration file's text

	// Guarded by mu.
	mu   sync.Mutex
	port int      // the redis-server's own port; fixed for a cluster node
	proc *process // nil while stopped
}

// process is one run of redis-server; done is closed when it has exited.
type process struct {
	cmd  *exec.Cmd
	done chan struct{}
	err  error // valid after done is closed
}

// Start starts an empty redis-server on a free loopback port and returns its address and an idempotent stop function.
// The server is also stopped when the test ends.
func Start(t testing.TB) (addr string, stop func()) {
	t.Helper()
	s := StartServer(t)
	return s.Addr, s.Stop
}

// StartServer is Start returning the Server, for tests that restart it.
func StartServer(t testing.TB) *Server {
	t.Helper()
	bin := lookRedis(t, "redis-server")
	front, err := tcpfront.Listen()
	if err != nil {
		t.Fatalf("redistest: %v", err)
	}
	t.Cleanup(func() { _ = front.Close() })
	s := &Server{t: t, bin: bin, dir: t.TempDir(), front: front, Addr: front.Addr()}
	if err := s.start(); err != nil {
		t.Fatalf("redistest: start redis-server: %v", err)
	}
	t.Cleanup(s.Stop)
	return s
}

// Stop kills the server and waits for it to exit. It is idempotent.
func (s *Server) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stopLocked()
}

// Restart kills the server and starts a new, empty one behind the same address, like a Redis that crashed and came
// back without its data. It fails the test if the new server does not come up.
func (s *Server) Restart() {
	s.t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stopLocked()
	if err := s.startLocked(); err != nil {
		s.t.Fatalf("redistest: restart redis-server behind %s: %v", s.Addr, err)
	}
}

func (s *Server) stopLocked() {
	if s.proc == nil {
		return
	}
	_ = s.proc.cmd.Process.Kill()
	<-s.proc.done
	s.proc = nil
}

func (s *Server) start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.startLocked()
}

// startLocked runs redis-server and waits until it answers PING. A server behind a front gets a free port, and
// another one if that port is taken before redis-server binds it; a cluster node keeps its port.
func (s *Server) startLocked() error {
	if s.front == nil {
		return s.runLocked()
	}
	var err error
	for range portAttempts {
		if s.port, err = freePort(false); err != nil {
			return err
		}
		if err = s.runLocked(); err == nil {
			s.front.Set(net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port)))
			return nil
		}
	}
	return err
}

// runLocked runs redis-server on s.port and waits until it answers PING there.
func (s *Server) runLocked() error {
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port))
	if s.conf != nil {
		return s.runSentinelLocked(addr)
	}
	args := []string{
		"--port", strconv.Itoa(s.port),
		"--bind", "127.0.0.1",
		"--save", "",
		"--appendonly", "no",
		"--dir", s.dir,
		"--daemonize", "no",
		"--logfile", "redis.log",
	}
	if s.cluster {
		// A fresh node each time: remove the node identity of a previous run.
		_ = os.Remove(filepath.Join(s.dir, "nodes.conf"))
		args = append(args, "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
			"--cluster-node-timeout", "2000")
	}
	args = append(args, s.extra...)
	return s.execLocked(addr, args)
}

// execLocked runs s.bin with args and waits until it answers at addr. The answer must come from that process: a
// port found free may be taken before the new server binds it, and if the taker is another test's Redis (another
// package's tests run at the same time), answering PING would hand this test that server, shared and stopped
// under it when its owner ends.
func (s *Server) execLocked(addr string, args []string) error {
	cmd := exec.Command(s.bin, args...)
	cmd.Dir = s.dir
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("run %s: %w", s.bin, err)
	}
	p := &process{cmd: cmd, done: make(chan struct{})}
	go p.wait() // owned by the Server: stopLocked waits for done
	deadline := time.Now().Add(startTimeout)
	for {
		pid, err := serverPID(addr)
		if err == nil && pid == cmd.Process.Pid {
			s.proc = p
			return nil
		}
		if err == nil {
			_ = cmd.Process.Kill() // it cannot bind the port: the caller tries another
			<-p.done
			return fmt.Errorf("port %d is taken by another Redis (pid %d)", s.port, pid)
		}
		select {
		case <-p.done:
			return fmt.Errorf("%s on port %d exited (%v): %s", filepath.Base(s.bin), s.port, p.err, s.logTail())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			_ = cmd.Process.Kill()
			<-p.done
			return fmt.Errorf("%s on port %d not ready after %v: %s", filepath.Base(s.bin), s.port, startTimeout,
				s.logTail())
		}
	}
}

func (p *process) wait() {
	p.err = p.cmd.Wait()
	close(p.done)
}

// logTail returns the end of the server's log, for failure messages.
func (s *Server) logTail() string {
	b, err := os.ReadFile(filepath.Join(s.dir, "redis.log"))
	if err != nil {
		return "(no log)"
	}
	const keep = 1000
	if len(b) > keep {
		b = b[len(b)-keep:]
	}
	return strings.TrimSpace(string(b))
}

// StartCluster starts a Redis Cluster of n masters (n ≥ 3) without replicas on free loopback ports and waits until
// every node reports cluster_state:ok. It returns the nodes' addresses, usable as a seed list, and an idempotent stop
// function; the nodes are also stopped when the test ends.
func StartCluster(t testing.TB, n int) (addrs []string, stop func()) {
	t.Helper()
	if n < 3 {
		t.Fatalf("redistest: a Redis Cluster needs at least 3 masters, asked for %d", n)
	}
	bin := lookRedis(t, "redis-server")
	cli := lookRedis(t, "redis-cli")
	nodes := make([]*Server, 0, n)
	stop = func() {
		for _, s := range nodes {
			s.Stop()
		}
	}
	t.Cleanup(stop)
	for range n {
		var err error
		started := false
		for range portAttempts {
			var port int
			if port, err = freePort(true); err != nil {
				t.Fatalf("redistest: %v", err)
			}
			s := &Server{t: t, bin: bin, dir: t.TempDir(), port: port, cluster: true,
				Addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port))}
			if err = s.start(); err == nil {
				nodes = append(nodes, s)
				addrs = append(addrs, s.Addr)
				started = true
				break
			}
		}
		if !started {
			t.Fatalf("redistest: start cluster node: %v", err)
		}
	}
	args := append([]string{"--cluster", "create"}, addrs...)
	args = append(args, "--cluster-replicas", "0", "--cluster-yes")
	if out, err := exec.Command(cli, args...).CombinedOutput(); err != nil {
		t.Fatalf("redistest: redis-cli --cluster create: %v: %s", err, out)
	}
	deadline := time.Now().Add(clusterTimeout)
	for _, addr := range addrs {
		for {
			out, err := exec.Command(cli, "-h", "127.0.0.1", "-p", portOf(addr), "cluster", "info").Output()
			if err == nil && strings.Contains(string(out), "cluster_state:ok") {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("redistest: cluster node %s not ok after %v: %v: %s", addr, clusterTimeout, err, out)
			}
			time.Sleep(50 * time.Millisecond) // polling an external process; bounded by deadline
		}
	}
	return addrs, stop
}

// RequireServer skips the test (fails it under CI) unless redis-server is on PATH, for tests whose code under test
// starts Redis itself.
func RequireServer(t testing.TB) {
	t.Helper()
	lookRedis(t, "redis-server")
}

// lookRedis finds a Redis binary, or skips (fails under CI) the test.
func lookRedis(t testing.TB, name string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err == nil {
		return path
	}
	pkg := "redis-server"
	switch name {
	case "redis-cli":
		pkg = "redis-tools"
	case "redis-sentinel":
		pkg = "redis-sentinel"
	}
	msg := fmt.Sprintf("redistest: %s not found in PATH; install %s (for example `apt-get install %s`) to run the Redis tests", name, pkg, pkg)
	if os.Getenv("CI") != "" {
		t.Fatal(msg + " (CI is set, so this is a failure)")
	}
	t.Skip(msg)
	return ""
}

// freePort returns a loopback TCP port that was free a moment ago. With bus set, port+10000 (the cluster bus port)
// must be free too.
func freePort(bus bool) (int, error) {
	for range 50 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, fmt.Errorf("find free port: %w", err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		if !bus {
			l.Close()
			return port, nil
		}
		if port+10000 > 65535 {
			l.Close()
			continue
		}
		lb, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port+10000)))
		l.Close()
		if err != nil {
			continue
		}
		lb.Close()
		return port, nil
	}
	return 0, errors.New("find free port: no port with a free cluster bus port")
}

// ping sends one inline PING and expects +PONG.
func ping(addr string) error {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write([]byte("PING\r\n")); err != nil {
		return err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	if !strings.HasPrefix(line, "+PONG") {
		return fmt.Errorf("ping %s: unexpected reply %q", addr, line)
	}
	return nil
}

// serverPID asks the server at addr for its process id (INFO server), which Redis and Sentinel both answer.
func serverPID(addr string) (int, error) {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write([]byte("INFO server\r\n")); err != nil {
		return 0, err
	}
	br := bufio.NewReader(c)
	line, err := br.ReadString('\n')
	if err != nil {
		return 0, err
	}
	n, err := strconv.Atoi(strings.TrimSpace(strings.TrimPrefix(line, "$")))
	if !strings.HasPrefix(line, "$") || err != nil || n < 0 {
		return 0, fmt.Errorf("info %s: unexpected reply %q", addr, line)
	}
	info := make([]byte, n)
	if _, err := io.ReadFull(br, info); err != nil {
		return 0, err
	}
	for l := range strings.Lines(string(info)) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(l), "process_id:"); ok {
			return strconv.Atoi(v)
		}
	}
	return 0, fmt.Errorf("info %s: no process_id", addr)
}

func portOf(addr string) string {
	_, port, _ := net.SplitHostPort(addr)
	return port
}
