package cli_test

import (
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/switchboard-relay/switchboard/internal/redistest"
)

// TestServeRedisCluster: two `serve` processes share a Redis directory; a host connected to one is reached through
// the other (forwarded to the owner's internal listener), and SIGTERM still exits 0.
func TestServeRedisCluster(t *testing.T) {
	addr, _ := redistest.Start(t)
	up := upstream(t, func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte("hi " + r.Header.Get("X-Switchboard-Subject")))
	})
	env := append([]string{"SWITCHBOARD_CLUSTER_SECRET=cluster-test-secret"}, withSecret...)
	replica := func(id string) (*proc, string) {
		p, a, _ := startRelay(t, env, "--directory", "redis://"+addr+"/0", "--replica-id", id,
			"--internal-listen", freeAddr(t))
		return p, a
	}
	pa, a := replica("a")
	pb, b := replica("b")
	start(t, nil, "host", "--relay", "http://"+a, "--id", "h1", "--token", mint(t, "host", "--id", "h1"), "--upstream", up)
	tok := mint(t, "client", "--hosts", "h1", "--sub", "alice")
	waitStatus(t, "http://"+a+"/hosts/h1/", tok, 200)
	if body := waitStatus(t, "http://"+b+"/hosts/h1/", tok, 200); body != "hi alice" {
		t.Fatalf("via the other replica: %q", body)
	}
	for _, p := range []*proc{pb, pa} {
		p.signal(t, syscall.SIGTERM)
		if code := p.exitCode(t, 20*time.Second); code != 0 {
			t.Fatalf("exit code after SIGTERM: %d\n%s", code, p.output())
		}
	}
}

// TestServeClusterFlagErrors: a shared directory without what forwarding needs is refused with exit 2.
func TestServeClusterFlagErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		env  []string
		args []string
		want string
	}{
		{"no secret", nil, []string{"--directory", "redis://127.0.0.1:1", "--internal-listen", "127.0.0.1:0"}, "--cluster-secret"},
		{"no internal listener", []string{"SWITCHBOARD_CLUSTER_SECRET=x"}, []string{"--directory", "redis://127.0.0.1:1"}, "--internal-listen"},
		{"bad directory", nil, []string{"--directory", "postgres"}, "--directory"},
		{"bad route mode", nil, []string{"--route-mode", "teleport"}, "route-mode"},
		{"wildcard internal listener", []string{"SWITCHBOARD_CLUSTER_SECRET=x"},
			[]string{"--directory", "redis://127.0.0.1:1", "--internal-listen", "0.0.0.0:0"}, "--advertise-internal"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"serve", "--listen", "127.0.0.1:0", "--metrics-listen", ""}, tc.args...)
			r := run(t, append(tc.env, withSecret...), args...)
			if r.code != 2 || !strings.Contains(r.stderr, tc.want) {
				t.Fatalf("exit %d, stderr %q; want 2 mentioning %q", r.code, r.stderr, tc.want)
			}
		})
	}
}

// TestServeRedisKill9: a replica is killed with SIGKILL (no drain, no release); its host reconnects to the other
// replica and is routable again there.
func TestServeRedisKill9(t *testing.T) {
	addr, _ := redistest.Start(t)
	up := upstream(t, func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write([]byte("alive")) })
	env := append([]string{"SWITCHBOARD_CLUSTER_SECRET=cluster-test-secret"}, withSecret...)
	replica := func(id string) (*proc, string) {
		p, a, _ := startRelay(t, env, "--directory", "redis://"+addr+"/0", "--replica-id", id,
			"--internal-listen", freeAddr(t))
		return p, a
	}
	pa, a := replica("a")
	_, b := replica("b")
	start(t, nil, "host", "--relay", "http://"+a, "--relay", "http://"+b, "--id", "h1",
		"--token", mint(t, "host", "--id", "h1"), "--upstream", up, "--min-backoff", "100ms", "--max-backoff", "500ms")
	tok := mint(t, "client", "--hosts", "h1")
	waitStatus(t, "http://"+a+"/hosts/h1/", tok, 200)
	waitStatus(t, "http://"+b+"/hosts/h1/", tok, 200)
	pa.signal(t, syscall.SIGKILL)
	pa.exitCode(t, 10*time.Second)
	if body := waitStatus(t, "http://"+b+"/hosts/h1/", tok, 200); body != "alive" {
		t.Fatalf("after the kill: %q", body)
	}
}
