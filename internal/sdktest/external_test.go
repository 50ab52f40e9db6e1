package sdktest

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/switchboard-relay/switchboard/internal/relay"
	"github.com/switchboard-relay/switchboard/internal/relaytest"
	"github.com/switchboard-relay/switchboard/internal/webhook"
	pubwebhook "github.com/switchboard-relay/switchboard/webhook"
)

// repoRoot is the module root: two levels above this package.
func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		t.Fatalf("module root not found: %v", err)
	}
	return root
}

// buildApp writes testdata/app as its own module (example.com/app) that requires this repository through a replace
// directive, and builds it with the go command. The repository's go.sum seeds the module's, so the build needs no
// network when the module cache is warm; otherwise `go mod tidy` fetches from the module proxy.
func buildApp(t *testing.T) string {
	t.Helper()
	root := repoRoot(t)
	dir := t.TempDir()
	src, err := os.ReadFile(filepath.Join("testdata", "app", "main.go"))
	if err != nil {
		t.Fatal(err)
	}
	goVersion := strings.TrimPrefix(runtime.Version(), "go")
	if i := strings.IndexAny(goVersion, " -"); i > 0 {
		goVersion = goVersion[:i]
	}
	mod := "module example.com/app\n\ngo " + goVersion + "\n\n" +
		"require github.com/switchboard-relay/switchboard v0.0.0\n\n" +
		"replace github.com/switchboard-relay/switchboard => " + root + "\n"
	sum, err := os.ReadFile(filepath.Join(root, "go.sum"))
	if err != nil {
		t.Fatal(err)
	}
	files := map[string][]byte{"go.mod": []byte(mod), "go.sum": sum, "main.go": src,
		"readme/main.go": readmeProgram(t, root)}
	for name, b := range files {
		if err := os.MkdirAll(filepath.Dir(filepath.Join(dir, name)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	goCmd, err := exec.LookPath("go") // go test puts its own GOROOT/bin first in PATH
	if err != nil {
		t.Fatalf("the go command: %v", err)
	}
	run := func(args ...string) {
		t.Helper()
		cmd := exec.Command(goCmd, args...)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "GOFLAGS=-mod=mod", "GOWORK=off")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("go %s in the external module: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	run("mod", "tidy")
	bin := filepath.Join(dir, "app")
	run("build", "-o", bin, ".")
	run("vet", "./readme") // the README's program compiles as copied
	return bin
}

// readmeProgram is the Go block of the README's "A Go program as a host" section: a whole program to copy into a
// new module.
func readmeProgram(t *testing.T, root string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, sec, ok := strings.Cut(string(b), "## A Go program as a host")
	_, code, ok2 := strings.Cut(sec, "```go\n")
	code, _, ok3 := strings.Cut(code, "```")
	if !ok || !ok2 || !ok3 || !strings.HasPrefix(code, "package main") {
		t.Fatal(`README.md: no "A Go program as a host" section with a Go program (package main) in it`)
	}
	return []byte(code)
}

// TestExternalModule: a program in another module imports agent, presence and webhook (internal packages would not
// build there) and, against a real relay: serves a handler through agent.Listen that a client reaches through the
// relay; watches presence and sees its host come and go; receives webhooks and verifies real deliveries, refusing
// a forged one.
func TestExternalModule(t *testing.T) {
	bin := buildApp(t)

	r := relaytest.StartRelay(t, func(c *relay.Config) { c.FlapWindow = -1 })
	secret := "whsec-test"
	hookLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hookURL := "http://" + hookLn.Addr().String() + "/hook"
	hookFile, err := hookLn.(*net.TCPListener).File()
	if err != nil {
		t.Fatal(err)
	}
	_ = hookLn.Close() // the program owns the socket now, through its copy of the descriptor

	sender, err := webhook.New(webhook.Config{Log: r.Server.Events(), URLs: []string{hookURL}, Secret: []byte(secret),
		Holder: "test", Registerer: prometheus.NewRegistry(), Logger: relaytest.Logger(t),
		MinBackoff: 20 * time.Millisecond, MaxBackoff: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { _ = sender.Run(ctx) })
	t.Cleanup(func() { cancel(); wg.Wait(); _ = sender.Close() })

	cmd := exec.Command(bin)
	cmd.Env = append(os.Environ(), "RELAY="+r.URL, "HOST_ID=app1",
		"HOST_TOKEN="+relaytest.HostToken(t, "app1"), "CLIENT_TOKEN="+relaytest.ClientToken(t, "watcher", "*"),
		"WEBHOOK_SECRET="+secret)
	cmd.ExtraFiles = []*os.File{hookFile}
	cmd.Stderr = t.Output()
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	_ = hookFile.Close()
	lines := make(chan string, 1024) // the app prints a few lines; never blocks its reader
	wg.Go(func() {
		defer close(lines)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			t.Logf("app: %s", sc.Text())
			lines <- sc.Text()
		}
	})
	t.Cleanup(func() {
		_ = stdin.Close()
		if err := cmd.Wait(); err != nil {
			t.Errorf("app exited with %v", err)
		}
	})

	// expect waits for each wanted line, in any order, for up to a minute; other lines are kept for later.
	var seen []string
	expect := func(want ...string) {
		t.Helper()
		deadline := time.After(time.Minute)
		for _, w := range want {
			for !contains(seen, w) {
				select {
				case l, ok := <-lines:
					if !ok {
						t.Fatalf("app exited before printing %q; it printed %q", w, seen)
					}
					if strings.HasPrefix(l, "error:") {
						t.Fatalf("app: %s", l)
					}
					seen = append(seen, l)
				case <-deadline:
					t.Fatalf("no %q from the app within a minute; it printed %q", w, seen)
				}
			}
		}
	}

	expect("presence reset, 0 hosts", "host up")
	resp := relaytest.Do(t, "GET", r.URL+"/hosts/app1/hi", relaytest.ClientToken(t, "client", "app1"))
	body, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK || string(body) != "hello from app1 at /hi" {
		t.Fatalf("through the relay: %d %q", resp.StatusCode, body)
	}
	expect(`presence online app1 "sdk app"`, "webhook online app1")

	forged := `{"id":"1-0","type":"offline","host_id":"app1"}`
	req, _ := http.NewRequest("POST", hookURL, bytes.NewBufferString(forged))
	req.Header.Set("Switchboard-Signature", pubwebhook.Sign([]byte("wrong secret"), []byte(forged), time.Now()))
	fresp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_ = fresp.Body.Close()
	if fresp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("forged delivery answered %d, want 401", fresp.StatusCode)
	}
	expect("webhook rejected true")

	if _, err := io.WriteString(stdin, "stop\n"); err != nil {
		t.Fatal(err)
	}
	expect("host closed", "presence offline app1 -", "webhook offline app1")
}

func contains(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}
