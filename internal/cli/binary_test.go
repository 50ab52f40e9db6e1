package cli_test

import (
	"bufio"
	"bytes"
	"context"
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
	"syscall"
	"testing"
	"time"

	"github.com/switchboard-relay/switchboard/internal/auth"
)

// binary is the switchboard binary built once for these tests.
var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "switchboard-cli-test")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "switchboard")
	out, err := exec.Command("go", "build", "-o", binary, "../../cmd/switchboard").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "build switchboard: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	_ = os.RemoveAll(dir)
	os.Exit(code)
}

// proc is a running child process with its combined output.
type proc struct {
	cmd  *exec.Cmd
	mu   sync.Mutex
	out  bytes.Buffer
	done chan struct{}
	err  error
}

func (p *proc) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.Write(b)
}

func (p *proc) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.String()
}

// start runs the binary with args and extra environment; it is killed in t.Cleanup.
func start(t *testing.T, env []string, args ...string) *proc {
	t.Helper()
	p := &proc{cmd: exec.Command(binary, args...), done: make(chan struct{})}
	p.cmd.Env = append(cleanEnv(), env...)
	p.cmd.Stdout, p.cmd.Stderr = p, p
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.err = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		_ = p.cmd.Process.Kill()
		<-p.done
		if t.Failed() {
			t.Logf("output of %v:\n%s", args, p.output())
		}
	})
	return p
}

// wait waits for the process to exit and returns its exit code.
func (p *proc) wait(t *testing.T, timeout time.Duration) int {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(timeout):
		t.Fatalf("process did not exit within %v; output:\n%s", timeout, p.output())
	}
	return p.cmd.ProcessState.ExitCode()
}

// cleanEnv is the test's environment without switchboard or platform variables that would change behaviour.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "SWITCHBOARD_") || k == "FLY_APP_NAME" || k == "KUBERNETES_SERVICE_HOST" {
			continue
		}
		env = append(env, kv)
	}
	return env
}

// freeAddr returns a loopback address with a port that was free a moment ago.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// waitHTTP polls url until it answers want.
func waitHTTP(t *testing.T, url string, want int) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		resp, err := http.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == want {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not answer %d in time (last: %v)", url, want, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

const secret = "cli-test-secret-0123456789abcdef"

func mint(t *testing.T, args ...string) string {
	t.Helper()
	cmd := exec.Command(binary, args...)
	cmd.Env = append(cleanEnv(), "SWITCHBOARD_SECRET="+secret)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%v: %v", args, err)
	}
	return strings.TrimSpace(string(out))
}

// getAuth GETs url with a bearer token.
func getAuth(t *testing.T, url, token string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// tryGet GETs url with a bearer token and returns the status, or 0 if the request failed.
func tryGet(url, token string) int {
	req, _ := http.NewRequest("GET", url, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// TestQuickStart is the README's quick start: relay, token, host, client call, presence.
func TestQuickStart(t *testing.T) {
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "upstream saw %s as %s with %q", r.URL.Path, r.Header.Get("X-Switchboard-Subject"),
			r.Header.Get("X-Pre-Shared"))
	}))
	defer upstream.Close()
	addr := freeAddr(t)
	env := []string{"SWITCHBOARD_SECRET=" + secret}
	start(t, env, "serve", "--listen", addr, "--metrics-listen", freeAddr(t))
	waitHTTP(t, "http://"+addr+"/healthz", 200)

	hostToken := mint(t, "token", "host", "--id", "org:laptop")
	start(t, env, "host", "--relay", "http://"+addr, "--id", "org:laptop", "--token", hostToken,
		"--upstream", upstream.URL, "--upstream-header", "X-Pre-Shared: abc", "--name", "laptop", "--label", "env=dev")
	client := mint(t, "token", "client", "--hosts", "org:*", "--sub", "alice")
	deadline := time.Now().Add(15 * time.Second)
	for {
		code, body := getAuth(t, "http://"+addr+"/hosts/org:laptop/hello", client)
		if code == 200 {
			if want := `upstream saw /hello as alice with "abc"`; body != want {
				t.Fatalf("body = %q, want %q", body, want)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("host never became reachable: %d %s", code, body)
		}
		time.Sleep(50 * time.Millisecond)
	}
	code, body := getAuth(t, "http://"+addr+"/v1/hosts/org:laptop", client)
	if code != 200 || !strings.Contains(body, `"online":true`) || !strings.Contains(body, `"env":"dev"`) ||
		!strings.Contains(body, `"name":"laptop"`) {
		t.Fatalf("presence: %d %s", code, body)
	}
}

func TestServeGeneratesSecretAndSaysHowToMint(t *testing.T) {
	addr := freeAddr(t)
	p := start(t, nil, "serve", "--listen", addr, "--metrics-listen", "")
	waitHTTP(t, "http://"+addr+"/healthz", 200)
	out := p.output()
	if !strings.Contains(out, "SWITCHBOARD_SECRET is not set") || !strings.Contains(out, "switchboard token host") {
		t.Fatalf("serve without a secret did not explain itself:\n%s", out)
	}

	addr2 := freeAddr(t)
	p2 := start(t, []string{"SWITCHBOARD_SECRET=" + secret}, "serve", "--listen", addr2, "--metrics-listen", "")
	waitHTTP(t, "http://"+addr2+"/healthz", 200)
	if strings.Contains(p2.output(), "is not set") {
		t.Fatalf("serve with a secret still claims it has none:\n%s", p2.output())
	}
}

func TestSingleInstanceGuard(t *testing.T) {
	for _, v := range []string{"FLY_APP_NAME=app", "KUBERNETES_SERVICE_HOST=10.0.0.1"} {
		t.Run(v, func(t *testing.T) {
			p := start(t, []string{v, "SWITCHBOARD_SECRET=" + secret}, "serve", "--listen", freeAddr(t), "--metrics-listen", "")
			if code := p.wait(t, 10*time.Second); code != 2 {
				t.Fatalf("exit code %d, want 2", code)
			}
			var errorLines []string
			sc := bufio.NewScanner(strings.NewReader(p.output()))
			for sc.Scan() {
				if strings.Contains(sc.Text(), `"level":"ERROR"`) {
					errorLines = append(errorLines, sc.Text())
				}
			}
			if len(errorLines) != 1 {
				t.Fatalf("want exactly one ERROR line, got %d:\n%s", len(errorLines), p.output())
			}
			if !strings.Contains(errorLines[0], "SWITCHBOARD_SINGLE_INSTANCE=1") || !strings.Contains(errorLines[0], "redis") {
				t.Fatalf("the ERROR line must name the bypass and the Redis directory: %s", errorLines[0])
			}
		})
	}
	t.Run("bypassed", func(t *testing.T) {
		addr := freeAddr(t)
		start(t, []string{"FLY_APP_NAME=app", "SWITCHBOARD_SINGLE_INSTANCE=1", "SWITCHBOARD_SECRET=" + secret},
			"serve", "--listen", addr, "--metrics-listen", "")
		waitHTTP(t, "http://"+addr+"/healthz", 200)
	})
}

func TestAuthNoneWarns(t *testing.T) {
	addr := freeAddr(t)
	p := start(t, nil, "serve", "--listen", addr, "--metrics-listen", "", "--auth", "none")
	waitHTTP(t, "http://"+addr+"/healthz", 200)
	if !strings.Contains(p.output(), `"level":"WARN"`) || !strings.Contains(p.output(), "AUTH DISABLED") {
		t.Fatalf("--auth none did not warn:\n%s", p.output())
	}
}

// TestDrainOnSIGTERM: in-flight exchanges finish, /readyz turns 503, new tunnels are refused, exit 0, and the
// agent comes back to a relay started again on the same address.
func TestDrainOnSIGTERM(t *testing.T) {
	release := make(chan struct{})
	started := make(chan struct{}, 1)
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			started <- struct{}{}
			<-release
		}
		_, _ = io.WriteString(w, "done "+r.URL.Path)
	}))
	defer upstream.Close()
	defer close(release)

	addr, maddr := freeAddr(t), freeAddr(t)
	env := []string{"SWITCHBOARD_SECRET=" + secret}
	relayArgs := []string{"serve", "--listen", addr, "--metrics-listen", maddr, "--drain-timeout", "20s", "--drain-jitter", "100ms"}
	relay := start(t, env, relayArgs...)
	waitHTTP(t, "http://"+addr+"/healthz", 200)
	start(t, env, "host", "--relay", "http://"+addr, "--id", "h1", "--token", mint(t, "token", "host", "--id", "h1"),
		"--upstream", upstream.URL, "--min-backoff", "100ms", "--max-backoff", "300ms")
	client := mint(t, "token", "client", "--hosts", "h1")
	waitFor(t, func() bool { return tryGet("http://"+addr+"/hosts/h1/ping", client) == 200 })

	type result struct {
		code int
		body string
	}
	slow := make(chan result, 1)
	go func() {
		req, _ := http.NewRequest("GET", "http://"+addr+"/hosts/h1/slow", nil)
		req.Header.Set("Authorization", "Bearer "+client)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			slow <- result{0, err.Error()}
			return
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		slow <- result{resp.StatusCode, string(b)}
	}()
	<-started
	if err := relay.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	waitHTTP(t, "http://"+maddr+"/readyz", 503)

	// A new tunnel is refused while draining.
	req, _ := http.NewRequest("GET", "http://"+addr+"/v1/tunnel", nil)
	req.Header.Set("Authorization", "Bearer "+mint(t, "token", "host", "--id", "h2"))
	req.Header.Set("Switchboard-Host-Id", "h2")
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", "switchboard.v1")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 503 {
		t.Fatalf("tunnel upgrade while draining: %d, want 503", resp.StatusCode)
	}

	release <- struct{}{}
	if r := <-slow; r.code != 200 || r.body != "done /slow" {
		t.Fatalf("in-flight exchange: %d %q", r.code, r.body)
	}
	if code := relay.wait(t, 25*time.Second); code != 0 {
		t.Fatalf("relay exit code %d, want 0", code)
	}

	start(t, env, relayArgs...)
	waitFor(t, func() bool { return tryGet("http://"+addr+"/hosts/h1/again", client) == 200 })
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in time")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestTokenCommands(t *testing.T) {
	cmd := exec.Command(binary, "token", "client", "--hosts", "a,b*")
	cmd.Env = cleanEnv()
	out, err := cmd.CombinedOutput()
	if code := cmd.ProcessState.ExitCode(); err == nil || code != 2 || !strings.Contains(string(out), "SWITCHBOARD_SECRET") {
		t.Fatalf("token without a secret: exit %d, output %q", code, out)
	}
	tok := mint(t, "token", "client", "--hosts", "a,b*", "--sub", "bob")
	claims, err := auth.NewHS256([]byte(secret)).Verify(context.Background(), tok)
	if err != nil {
		t.Fatal(err)
	}
	if claims.Subject != "bob" || !claims.MayReach("a") || !claims.MayReach("b7") || claims.MayReach("c") {
		t.Fatalf("claims %+v", claims)
	}
	host := mint(t, "token", "host", "--id", "x:y")
	hc, err := auth.NewHS256([]byte(secret)).Verify(context.Background(), host)
	if err != nil || !hc.MayRegister("x:y") || hc.MayRegister("x:z") {
		t.Fatalf("host claims %+v, %v", hc, err)
	}
}

func TestBadFlagsExit2AndHelpExits0(t *testing.T) {
	cmd := exec.Command(binary, "serve", "--no-such-flag")
	cmd.Env = cleanEnv()
	out, _ := cmd.CombinedOutput()
	if code := cmd.ProcessState.ExitCode(); code != 2 || !strings.Contains(string(out), "no-such-flag") {
		t.Fatalf("bad flag: exit %d, output %q", code, out)
	}
	cmd = exec.Command(binary, "--help")
	cmd.Env = cleanEnv()
	out, _ = cmd.CombinedOutput()
	if code := cmd.ProcessState.ExitCode(); code != 0 || !strings.Contains(string(out), "serve") {
		t.Fatalf("--help: exit %d, output %q", code, out)
	}
}

// TestTokenCommandRunsOnEveryAttempt: the agent asks --token-command for a token before every connection attempt,
// so it reconnects with a fresh one after the relay restarts.
func TestTokenCommandRunsOnEveryAttempt(t *testing.T) {
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "ok")
	}))
	defer upstream.Close()
	dir := t.TempDir()
	tokenFile, countFile := filepath.Join(dir, "token"), filepath.Join(dir, "count")
	if err := os.WriteFile(tokenFile, []byte(mint(t, "token", "host", "--id", "h1")), 0o600); err != nil {
		t.Fatal(err)
	}
	addr := freeAddr(t)
	env := []string{"SWITCHBOARD_SECRET=" + secret}
	relay := start(t, env, "serve", "--listen", addr, "--metrics-listen", "", "--drain-timeout", "1s")
	waitHTTP(t, "http://"+addr+"/healthz", 200)
	start(t, nil, "host", "--relay", "http://"+addr, "--id", "h1", "--upstream", upstream.URL,
		"--token-command", fmt.Sprintf("echo x >> %s; cat %s", countFile, tokenFile),
		"--min-backoff", "100ms", "--max-backoff", "300ms")
	client := mint(t, "token", "client", "--hosts", "h1")
	waitFor(t, func() bool { return tryGet("http://"+addr+"/hosts/h1/", client) == 200 })
	runs := func() int {
		b, _ := os.ReadFile(countFile)
		return strings.Count(string(b), "x")
	}
	before := runs()
	if before < 1 {
		t.Fatalf("token command ran %d times before the first tunnel", before)
	}
	_ = relay.cmd.Process.Signal(syscall.SIGTERM)
	relay.wait(t, 10*time.Second)
	start(t, env, "serve", "--listen", addr, "--metrics-listen", "")
	waitFor(t, func() bool { return tryGet("http://"+addr+"/hosts/h1/", client) == 200 })
	if after := runs(); after <= before {
		t.Fatalf("token command ran %d times in all, %d before the restart: not re-run on reconnect", after, before)
	}
}
