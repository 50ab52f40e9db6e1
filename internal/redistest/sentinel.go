package redistest

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// SentinelMaster is the name under which a SentinelGroup's Sentinels monitor its primary.
const SentinelMaster = "switchboard"

// The user replicas authenticate as; clients use the default user.
const (
	replicationUser     = "replicator"
	replicationPassword = "replicator-password"
)

// Timings of a SentinelGroup: short, so that a failover takes a few seconds.
const (
	sentinelDownAfter       = 1000 * time.Millisecond // a primary silent this long is subjectively down
	sentinelFailoverTimeout = 2000 * time.Millisecond // a failover whose vote split is retried after twice this
	sentinelSetupTimeout    = 60 * time.Second        // for the group to be ready, or a failover to finish
)

// SentinelGroup is one Redis primary, one replica of it and three Sentinels monitoring the primary under
// SentinelMaster, all on loopback, persistence off. Its methods are safe for concurrent use.
//
// Each process has a port of its own, picked free just before it starts and picked again if it is taken before
// the process binds it: Sentinels announce the servers by their own addresses, so there is no front here.
type SentinelGroup struct {
	// Immutable after StartSentinelGroup.
	Addrs     []string // the Sentinels' addresses, host:port
	Nodes     []*Server
	Sentinels []*Server
	t         testing.TB
	cli       string
}

// StartSentinelGroup starts a SentinelGroup and waits until every Sentinel sees the primary, the replica and the two
// other Sentinels, so that a failover can be agreed. Everything is stopped when the test ends.
//
// It needs redis-server, redis-cli and redis-sentinel (Debian packages redis-server, redis-tools and
// redis-sentinel); without one it skips the test, or fails it under CI.
func StartSentinelGroup(t testing.TB) *SentinelGroup {
	t.Helper()
	server := lookRedis(t, "redis-server")
	g := &SentinelGroup{t: t, cli: lookRedis(t, "redis-cli")}
	sentinel := lookRedis(t, "redis-sentinel")
	primary := g.startNode(t, server, nil)
	g.startNode(t, server, []string{"--replicaof", "127.0.0.1", portOf(primary.Addr)})
	for range 3 {
		s := g.startSentinel(t, sentinel, primary.Addr)
		g.Sentinels = append(g.Sentinels, s)
		g.Addrs = append(g.Addrs, s.Addr)
	}
	g.waitReady(primary.Addr)
	return g
}

// startNode starts a data node on a free port.
func (g *SentinelGroup) startNode(t testing.TB, bin string, extra []string) *Server {
	t.Helper()
	s := g.startFixed(t, func(port int) *Server {
		return &Server{t: t, bin: bin, dir: t.TempDir(), port: port, extra: append([]string{
			"--repl-diskless-sync", "yes", "--repl-diskless-sync-delay", "0",
			// Replicas authenticate as their own user, so that CutReplication can shut them out alone.
			"--user", replicationUser, "on", ">" + replicationPassword, "~*", "&*", "+@all",
			"--masteruser", replicationUser, "--masterauth", replicationPassword,
		}, extra...)}
	})
	g.Nodes = append(g.Nodes, s)
	return s
}

// startSentinel starts a Sentinel monitoring primary on a free port.
func (g *SentinelGroup) startSentinel(t testing.TB, bin, primary string) *Server {
	t.Helper()
	return g.startFixed(t, func(port int) *Server {
		s := &Server{t: t, bin: bin, dir: t.TempDir(), port: port}
		s.conf = func() string {
			m := SentinelMaster
			return strings.Join([]string{
				"port " + strconv.Itoa(port),
				"bind 127.0.0.1",
				"daemonize no",
				"dir " + s.dir,
				"logfile redis.log",
				fmt.Sprintf("sentinel monitor %s 127.0.0.1 %s 2", m, portOf(primary)),
				fmt.Sprintf("sentinel down-after-milliseconds %s %d", m, sentinelDownAfter.Milliseconds()),
				fmt.Sprintf("sentinel failover-timeout %s %d", m, sentinelFailoverTimeout.Milliseconds()),
				fmt.Sprintf("sentinel parallel-syncs %s 1", m),
			}, "\n") + "\n"
		}
		return s
	})
}

// startFixed starts the server made by mk for a free port, trying other ports if one is taken meanwhile.
func (g *SentinelGroup) startFixed(t testing.TB, mk func(port int) *Server) *Server {
	t.Helper()
	var err error
	for range portAttempts {
		var port int
		if port, err = freePort(false); err != nil {
			t.Fatalf("redistest: %v", err)
		}
		s := mk(port)
		s.Addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		if err = s.start(); err == nil {
			t.Cleanup(s.Stop)
			return s
		}
	}
	t.Fatalf("redistest: start sentinel group member: %v", err)
	return nil
}

// runSentinelLocked writes the Sentinel's configuration file (Sentinel rewrites it as it learns) and runs it.
func (s *Server) runSentinelLocked(addr string) error {
	conf := filepath.Join(s.dir, "sentinel.conf")
	if err := os.WriteFile(conf, []byte(s.conf()), 0o600); err != nil {
		return err
	}
	return s.execLocked(addr, []string{conf, "--sentinel"})
}

// waitReady waits until every Sentinel monitors primary with one replica and two other Sentinels, and the replica's
// link to the primary is up.
func (g *SentinelGroup) waitReady(primary string) {
	g.t.Helper()
	g.wait("sentinel group ready", func() error {
		for _, s := range g.Sentinels {
			m, err := g.fields(s.Addr, "sentinel", "master", SentinelMaster)
			if err != nil {
				return err
			}
			if addr := net.JoinHostPort(m["ip"], m["port"]); addr != primary {
				return fmt.Errorf("sentinel %s: primary %s, want %s", s.Addr, addr, primary)
			}
			if m["num-slaves"] != "1" || m["num-other-sentinels"] != "2" {
				return fmt.Errorf("sentinel %s: %s replicas, %s other sentinels", s.Addr, m["num-slaves"],
					m["num-other-sentinels"])
			}
		}
		for _, n := range g.Nodes {
			if n.Addr == primary {
				continue
			}
			info, err := g.redisCLI(n.Addr, "info", "replication")
			if err != nil {
				return err
			}
			if !strings.Contains(info, "master_link_status:up") {
				return fmt.Errorf("replica %s: link to the primary not up", n.Addr)
			}
		}
		return nil
	})
}

// Primary returns the address every Sentinel names as the primary, once they agree and that server says it is a
// primary. It fails the test if that does not happen within the setup timeout.
func (g *SentinelGroup) Primary() string {
	g.t.Helper()
	var addr string
	g.wait("sentinels agree on a primary", func() error {
		var err error
		addr, err = g.agreedPrimary("")
		return err
	})
	return addr
}

// Node returns the data node at addr, or nil.
func (g *SentinelGroup) Node(addr string) *Server {
	for _, n := range g.Nodes {
		if n.Addr == addr {
			return n
		}
	}
	return nil
}

// KillPrimary kills the primary with SIGKILL, without a chance to flush or hand over, and returns its address.
func (g *SentinelGroup) KillPrimary() string {
	g.t.Helper()
	addr := g.Primary()
	g.Node(addr).Stop()
	return addr
}

// WaitFailover waits until every Sentinel names a primary other than old and that server says it is a primary, and
// returns its address.
func (g *SentinelGroup) WaitFailover(old string) string {
	g.t.Helper()
	var addr string
	g.wait("failover away from "+old, func() error {
		var err error
		addr, err = g.agreedPrimary(old)
		return err
	})
	return addr
}

// agreedPrimary returns the primary every Sentinel names if they agree, it is not not, and it has the master role.
func (g *SentinelGroup) agreedPrimary(not string) (string, error) {
	var addr string
	for _, s := range g.Sentinels {
		out, err := g.redisCLI(s.Addr, "sentinel", "get-master-addr-by-name", SentinelMaster)
		if err != nil {
			return "", err
		}
		f := strings.Fields(out)
		if len(f) != 2 {
			return "", fmt.Errorf("sentinel %s: primary %q", s.Addr, out)
		}
		a := net.JoinHostPort(f[0], f[1])
		if addr != "" && a != addr {
			return "", fmt.Errorf("sentinels disagree: %s and %s", addr, a)
		}
		addr = a
	}
	if addr == not {
		return "", fmt.Errorf("primary still %s", addr)
	}
	role, err := g.redisCLI(addr, "role")
	if err != nil {
		return "", err
	}
	if !strings.HasPrefix(role, "master") {
		return "", fmt.Errorf("%s: role %q", addr, strings.Fields(role))
	}
	return addr, nil
}

// CutReplication makes the primary refuse its replicas from now on (their user is switched off, their links are
// closed): what it acknowledges afterwards is never replicated, as when a primary fails right after acknowledging
// writes its replicas have not received. Replicas keep answering Sentinels, so they stay eligible for promotion.
func (g *SentinelGroup) CutReplication() {
	g.t.Helper()
	primary := g.Primary()
	if _, err := g.redisCLI(primary, "acl", "setuser", replicationUser, "off"); err != nil {
		g.t.Fatalf("redistest: %v", err)
	}
	if _, err := g.redisCLI(primary, "client", "kill", "type", "replica"); err != nil {
		g.t.Fatalf("redistest: %v", err)
	}
	g.wait("replicas cut off", func() error {
		info, err := g.redisCLI(primary, "info", "replication")
		if err != nil {
			return err
		}
		if !strings.Contains(info, "connected_slaves:0") {
			return errors.New("a replica is still connected")
		}
		return nil
	})
}

// Pause stops the server's process with SIGSTOP: it keeps its connections but answers nothing, and a replica takes
// no writes from its primary meanwhile. Resume continues it.
func (s *Server) Pause() { s.signal(syscall.SIGSTOP) }

// Resume continues a paused server with SIGCONT.
func (s *Server) Resume() { s.signal(syscall.SIGCONT) }

func (s *Server) signal(sig syscall.Signal) {
	s.t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc == nil {
		s.t.Fatalf("redistest: signal %v to stopped server %s", sig, s.Addr)
	}
	if err := s.proc.cmd.Process.Signal(sig); err != nil {
		s.t.Fatalf("redistest: signal %v to %s: %v", sig, s.Addr, err)
	}
}

// Do runs one command at addr through redis-cli and returns its output, for tests that look at a server directly.
func (g *SentinelGroup) Do(addr string, args ...string) (string, error) {
	return g.redisCLI(addr, args...)
}

// redisCLI runs one command at addr through redis-cli. A reply that is an error is returned as an error.
func (g *SentinelGroup) redisCLI(addr string, args ...string) (string, error) {
	host, port, _ := net.SplitHostPort(addr)
	cmd := exec.Command(g.cli, append([]string{"-h", host, "-p", port, "--no-raw"}, args...)...)
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("redis-cli %s %s: %w", addr, strings.Join(args, " "), err)
	}
	s := strings.TrimSpace(string(out))
	if strings.HasPrefix(s, "(error)") {
		return "", fmt.Errorf("redis-cli %s %s: %s", addr, strings.Join(args, " "), s)
	}
	return unquote(s), nil
}

// unquote turns redis-cli's --no-raw listing (`1) "a"` lines) into plain lines.
func unquote(s string) string {
	var lines []string
	for line := range strings.SplitSeq(s, "\n") {
		line = strings.TrimSpace(line)
		if i := strings.Index(line, ") "); i > 0 && strings.Trim(line[:i], "0123456789") == "" {
			line = line[i+2:]
		}
		if u, err := strconv.Unquote(line); err == nil {
			line = u
		}
		lines = append(lines, line)
	}
	return strings.Join(lines, "\n")
}

// fields runs a command answering a flat field/value list (SENTINEL MASTER) and returns it as a map.
func (g *SentinelGroup) fields(addr string, args ...string) (map[string]string, error) {
	out, err := g.redisCLI(addr, args...)
	if err != nil {
		return nil, err
	}
	lines := strings.Split(out, "\n")
	if len(lines)%2 != 0 {
		return nil, errors.New("odd field list from " + addr)
	}
	m := make(map[string]string, len(lines)/2)
	for i := 0; i < len(lines); i += 2 {
		m[lines[i]] = lines[i+1]
	}
	return m, nil
}

// wait polls cond until it returns nil, failing the test with cond's last error after sentinelSetupTimeout: a
// diagnostic for a group that never settles, not a performance bound.
func (g *SentinelGroup) wait(what string, cond func() error) {
	g.t.Helper()
	deadline := time.Now().Add(sentinelSetupTimeout)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			g.t.Fatalf("redistest: %s: not after %v: %v", what, sentinelSetupTimeout, err)
		}
		time.Sleep(50 * time.Millisecond) // polling external processes; bounded by deadline
	}
}
