package cli_test

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// These tests run the real switchboard binary as child processes on free loopback ports: the flags, environment,
// exit codes, signals and log lines a user meets are what they check.

// binary is the switchboard binary, built once in TestMain.
var binary string

// client is every test's HTTP client: bounded in time, its idle connections closed before the leak check.
var client = &http.Client{Timeout: 15 * time.Second, Transport: &http.Transport{}}

func TestMain(m *testing.M) {
	os.Exit(testMain(m))
}

func testMain(m *testing.M) int {
	dir, err := os.MkdirTemp("", "switchboard-cli-test")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	binary = filepath.Join(dir, "switchboard")
	flag.Parse()
	if w := flag.Lookup("test.fuzzworker"); w == nil || w.Value.String() != "true" { // a fuzz worker runs no tests
		if err := build(binary); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
	}
	code := m.Run()
	client.CloseIdleConnections()
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			return 1
		}
	}
	return code
}

// The test binary is stamped as a release would be (scripts/release.sh), so tests can tell its version from a
// default "devel".
const (
	versionPkg   = "github.com/switchboard-relay/switchboard/internal/version"
	testVersion  = "v0.0.0-clitest"
	testRevision = "0123456789abcdef0123456789abcdef01234567"
)

// build compiles ./cmd/switchboard from the module root to out.
func build(out string) error {
	gomod, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return fmt.Errorf("go env GOMOD: %w", err)
	}
	root := filepath.Dir(strings.TrimSpace(string(gomod)))
	cmd := exec.Command("go", "build", "-o", out, "-ldflags", "-X "+versionPkg+".tag="+testVersion+" -X "+versionPkg+".revision="+testRevision, "./cmd/switchboard")
	cmd.Dir = root
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("build switchboard: %w\n%s", err, b)
	}
	return nil
}

// secret is the signing secret of the tests' relays.
const secret = "cli-test-secret-0123456789abcdef"

// clusterSecret and hookSecretFlag are long enough for serve's secret check (32 bytes).
const (
	clusterSecret  = "cluster-flag-secret-0123456789abcdef"
	hookSecretFlag = "hook-flag-secret-0123456789abcdefgh"
)

// withSecret is the environment of a relay (or token command) that signs with secret.
var withSecret = []string{"SWITCHBOARD_SECRET=" + secret}

// proc is a running child process and its combined output.
type proc struct {
	cmd  *exec.Cmd
	done chan struct{} // closed when the process has exited and been waited for

	mu  sync.Mutex
	out bytes.Buffer // guarded by mu
}

func (p *proc) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.Write(b)
}

// output is everything the process wrote so far, stdout and stderr interleaved.
func (p *proc) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.String()
}

// start runs the binary with args in a clean environment plus env. The process is killed (if still running) and
// waited for in t.Cleanup; its output is logged if the test failed.
func start(t *testing.T, env []string, args ...string) *proc {
	t.Helper()
	return startFiles(t, env, nil, args...)
}

// startFiles is start passing files down as file descriptors 3, 4, …
func startFiles(t *testing.T, env []string, files []*os.File, args ...string) *proc {
	t.Helper()
	p := &proc{cmd: exec.Command(binary, args...), done: make(chan struct{})}
	p.cmd.Env = append(cleanEnv(), env...)
	p.cmd.ExtraFiles = files
	p.cmd.Stdout, p.cmd.Stderr = p, p
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go p.wait()
	t.Cleanup(func() {
		_ = p.cmd.Process.Kill()
		<-p.done
		if t.Failed() {
			t.Logf("output of switchboard %s:\n%s", strings.Join(args, " "), p.output())
		}
	})
	return p
}

// wait reaps the process; it is the body of the goroutine start starts, which ends with the process.
func (p *proc) wait() {
	_ = p.cmd.Wait()
	close(p.done)
}

// exitCode waits up to timeout for the process to exit and returns its exit code (-1 if a signal killed it).
func (p *proc) exitCode(t *testing.T, timeout time.Duration) int {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(timeout):
		t.Fatalf("process did not exit within %v", timeout)
	}
	return p.cmd.ProcessState.ExitCode()
}

// signal sends sig to the process.
func (p *proc) signal(t *testing.T, sig os.Signal) {
	t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		t.Fatal(err)
	}
}

// waitOutput polls the output until it contains s.
func (p *proc) waitOutput(t *testing.T, s string) {
	t.Helper()
	waitFor(t, "output containing "+s, func() bool { return strings.Contains(p.output(), s) })
}

// result is how a short command ended.
type result struct {
	code           int
	stdout, stderr string
}

// run runs the binary to completion (at most 20 s) in a clean environment plus env.
func run(t *testing.T, env []string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary, args...)
	cmd.Env = append(cleanEnv(), env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if _, exited := err.(*exec.ExitError); err != nil && !exited {
		t.Fatalf("switchboard %s: %v", strings.Join(args, " "), err)
	}
	return result{cmd.ProcessState.ExitCode(), stdout.String(), stderr.String()}
}

// mint prints a token with the tests' secret: mint(t, "host", "--id", "h1").
func mint(t *testing.T, args ...string) string {
	t.Helper()
	r := run(t, withSecret, append([]string{"token"}, args...)...)
	if r.code != 0 {
		t.Fatalf("token %v: exit %d: %s", args, r.code, r.stderr)
	}
	return strings.TrimSpace(r.stdout)
}

// cleanEnv is the test's environment without the switchboard and platform variables that change behaviour.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "SWITCHBOARD_") || strings.HasPrefix(k, "FLY_") || k == "KUBERNETES_SERVICE_HOST" {
			continue
		}
		env = append(env, kv)
	}
	return env
}

// sockets are loopback listening sockets the test holds until it ends and passes to children as fd:3, fd:4, … A
// relay serves them, and one started again serves the same ones: a port the test let go of could be taken by
// another process before the relay binds it.
type sockets struct {
	addrs []string
	files []*os.File
	lns   []net.Listener
}

// release closes the test's copies: the sockets then live exactly as long as the process serving them, so a relay
// killed later leaves its address refusing connections, as a dead replica's does.
func (s sockets) release() {
	for i := range s.files {
		_ = s.files[i].Close()
		_ = s.lns[i].Close()
	}
}

func listenSockets(t *testing.T, n int) sockets {
	t.Helper()
	var s sockets
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		f, err := ln.(*net.TCPListener).File()
		if err != nil {
			t.Fatal(err)
		}
		s.addrs = append(s.addrs, ln.Addr().String())
		s.files = append(s.files, f)
		s.lns = append(s.lns, ln)
	}
	t.Cleanup(s.release)
	return s
}

// startRelay runs `serve` on sockets of its own with extra args and waits until it is healthy. It returns the
// process and the main and metrics addresses. The sockets are the relay's alone: they close when it exits. Tests
// that start a relay again on the same address use listenSockets and startRelayOn.
func startRelay(t *testing.T, env []string, args ...string) (p *proc, addr, metrics string) {
	t.Helper()
	s := listenSockets(t, 2)
	p = startRelayOn(t, env, s, args...)
	s.release()
	return p, s.addrs[0], s.addrs[1]
}

// startRelayOn runs `serve` on s (main, then metrics) with extra args and waits until it is healthy.
func startRelayOn(t *testing.T, env []string, s sockets, args ...string) *proc {
	t.Helper()
	p := startFiles(t, env, s.files, append([]string{"serve", "--listen", "fd:3", "--metrics-listen", "fd:4"}, args...)...)
	waitStatus(t, "http://"+s.addrs[0]+"/healthz", "", 200)
	return p
}

// get sends GET url with a bearer token (if any) and returns the status and body; status 0 if it failed.
func get(url, token string) (int, string) {
	req, err := http.NewRequest("GET", url, nil)
	if err != nil {
		return 0, err.Error()
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, err.Error()
	}
	return resp.StatusCode, string(b)
}

// waitStatus polls GET url until it answers want.
func waitStatus(t *testing.T, url, token string, want int) string {
	t.Helper()
	var code int
	var body string
	waitFor(t, fmt.Sprintf("GET %s to answer %d", url, want), func() bool {
		code, body = get(url, token)
		return code == want
	})
	return body
}

// waitFor polls cond every 20 ms for up to 15 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// upstream starts an HTTP server for an agent to expose; it is closed in t.Cleanup.
func upstream(t *testing.T, h http.HandlerFunc) string {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv.URL
}
