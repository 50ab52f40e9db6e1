package cli_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/csv"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/switchboard-relay/switchboard/internal/redistest"
	"github.com/switchboard-relay/switchboard/internal/relaytest"
)

// requireTool returns the path of a program the test needs, or skips the test with one line naming the Debian
// package to install; under CI (CI set) a missing program fails the test instead.
func requireTool(t *testing.T, name, pkg string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err == nil {
		return path
	}
	msg := fmt.Sprintf("%s not found in PATH; install the Debian package %s (apt-get install %s) to run this test", name, pkg, pkg)
	if os.Getenv("CI") != "" {
		t.Fatal(msg + " (CI is set, so this is a failure)")
	}
	t.Skip(msg)
	return ""
}

// moduleRoot is the directory of go.mod.
func moduleRoot(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Dir(strings.TrimSpace(string(out)))
}

// freeAddr is a loopback address that was free a moment ago, for programs that bind it themselves and cannot serve an
// inherited socket (HAProxy, sshd, postgres): started once, never restarted on it.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// haproxyReplica is one `serve` process behind HAProxy, restartable on the same addresses.
type haproxyReplica struct {
	id, main, metrics, internal string
	socks                       sockets // main, metrics, internal: held by the test, so a restart never rebinds
	p                           *proc
}

// haproxyStatus reads HAProxy's stats page and returns each backend server's status (UP, DOWN, …).
func haproxyStatus(statsAddr string) map[string]string {
	resp, err := client.Get("http://" + statsAddr + "/stats;csv")
	if err != nil {
		return nil
	}
	defer resp.Body.Close()
	rows, err := csv.NewReader(resp.Body).ReadAll()
	if err != nil || len(rows) == 0 {
		return nil
	}
	col := -1
	for i, h := range rows[0] {
		if strings.TrimPrefix(h, "# ") == "status" {
			col = i
		}
	}
	st := map[string]string{}
	for _, r := range rows[1:] {
		if col >= 0 && len(r) > col && r[0] == "relays" {
			st[r[1]] = r[col]
		}
	}
	return st
}

// TestHAProxyInFront runs the HAProxy configuration shipped in deploy/haproxy in front of three replicas on one
// Redis. HAProxy terminates TLS and sends PROXY v2; its health checks read /readyz. A host connects and a client
// calls through HAProxy; the host sees the client's own address (the client dials from 127.0.0.2, HAProxy from
// 127.0.0.1) and https. Then every replica is restarted in turn (SIGTERM, exit, start again) while clients keep
// calling the host through HAProxy, and not one call fails.
func TestHAProxyInFront(t *testing.T) {
	haproxy := requireTool(t, "haproxy", "haproxy")
	redisAddr, _ := redistest.Start(t)
	dir := t.TempDir()
	pki := relaytest.NewInternalPKI(t) // a certificate for 127.0.0.1 and its CA
	crt, ca := filepath.Join(dir, "haproxy.pem"), filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(crt, append(append([]byte{}, pki.CertPEM...), pki.KeyPEM...), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(ca, pki.CAPEM, 0o600); err != nil {
		t.Fatal(err)
	}

	env := append([]string{"SWITCHBOARD_CLUSTER_SECRET=" + clusterSecret}, withSecret...)
	replicas := make([]*haproxyReplica, 3)
	startReplica := func(r *haproxyReplica) {
		r.p = startFiles(t, env, r.socks.files, "serve", "--listen", "fd:3", "--metrics-listen", "fd:4", "--internal-listen", "fd:5",
			"--directory", "redis://"+redisAddr+"/0", "--replica-id", r.id,
			"--proxy-protocol", "--proxy-protocol-from", "127.0.0.1/32", "--drain-delay", "3s", "--drain-timeout", "20s")
		waitStatus(t, "http://"+r.metrics+"/readyz", "", 200)
	}
	haEnv := append(cleanEnv(), "SB_BIND="+freeAddr(t), "SB_CERT="+crt, "SB_STATS_BIND="+freeAddr(t))
	for i := range replicas {
		socks := listenSockets(t, 3)
		r := &haproxyReplica{id: fmt.Sprintf("relay%d", i+1), main: socks.addrs[0], metrics: socks.addrs[1],
			internal: socks.addrs[2], socks: socks}
		replicas[i] = r
		startReplica(r)
		_, port, _ := net.SplitHostPort(r.metrics)
		haEnv = append(haEnv, fmt.Sprintf("SB_RELAY%d=%s", i+1, r.main), fmt.Sprintf("SB_RELAY%d_CHECK_PORT=%s", i+1, port))
	}
	var front, stats string
	for _, kv := range haEnv {
		if v, ok := strings.CutPrefix(kv, "SB_BIND="); ok {
			front = v
		}
		if v, ok := strings.CutPrefix(kv, "SB_STATS_BIND="); ok {
			stats = v
		}
	}
	ha := &proc{cmd: exec.Command(haproxy, "-db", "-f", filepath.Join(moduleRoot(t), "deploy", "haproxy", "haproxy.cfg")), done: make(chan struct{})}
	ha.cmd.Env = haEnv
	ha.cmd.Stdout, ha.cmd.Stderr = ha, ha
	if err := ha.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go ha.wait()
	t.Cleanup(func() {
		_ = ha.cmd.Process.Kill()
		<-ha.done
		if t.Failed() {
			t.Logf("haproxy output:\n%s", ha.output())
		}
	})
	allUp := func() bool {
		st := haproxyStatus(stats)
		return st["relay1"] == "UP" && st["relay2"] == "UP" && st["relay3"] == "UP"
	}
	waitFor(t, "HAProxy to see three replicas up", allUp)

	type seen struct{ xff, proto string }
	whoami := make(chan seen, 1)
	up := upstream(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/whoami" {
			select {
			case whoami <- seen{r.Header.Get("X-Forwarded-For"), r.Header.Get("X-Forwarded-Proto")}:
			default:
			}
		}
		_, _ = w.Write([]byte("ok"))
	})
	start(t, []string{"SSL_CERT_FILE=" + ca}, "host", "--relay", "https://"+front, "--id", "h1",
		"--token", mint(t, "host", "--id", "h1"), "--upstream", up)
	tok := mint(t, "client", "--hosts", "h1")

	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pki.CAPEM)
	dialer := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)}, Timeout: 10 * time.Second}
	hc := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		DialContext: dialer.DialContext, TLSClientConfig: &tls.Config{RootCAs: pool}, MaxIdleConnsPerHost: 16}}
	defer hc.CloseIdleConnections()
	call := func(path string) (int, error) {
		req, _ := http.NewRequest("GET", "https://"+front+"/hosts/h1"+path, nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		resp, err := hc.Do(req)
		if err != nil {
			return 0, err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err == nil && resp.StatusCode == 200 && string(b) != "ok" {
			err = fmt.Errorf("body %q", b)
		}
		return resp.StatusCode, err
	}
	waitFor(t, "the host through HAProxy", func() bool { code, err := call("/"); return code == 200 && err == nil })
	if code, err := call("/whoami"); code != 200 || err != nil {
		t.Fatalf("whoami: %d %v", code, err)
	}
	if s := <-whoami; s.xff != "127.0.0.2" || s.proto != "https" {
		t.Fatalf("host saw X-Forwarded-For %q, X-Forwarded-Proto %q; want the client's 127.0.0.2 and https", s.xff, s.proto)
	}

	// Steady load through HAProxy while every replica restarts in turn.
	ctx, stop := context.WithCancel(context.Background())
	var ok, failed atomic.Int64
	var mu sync.Mutex
	var failures []string
	var wg sync.WaitGroup
	for w := range 6 {
		wg.Go(func() {
			for i := 0; ctx.Err() == nil; i++ {
				code, err := call(fmt.Sprintf("/load/%d/%d", w, i))
				if code == 200 && err == nil {
					ok.Add(1)
					continue
				}
				failed.Add(1)
				mu.Lock()
				failures = append(failures, fmt.Sprintf("%s: %d %v", time.Now().Format("15:04:05.000"), code, err))
				mu.Unlock()
			}
		})
	}
	defer func() { stop(); wg.Wait() }()
	waitFor(t, "load flowing", func() bool { return ok.Load() > 50 })
	for _, r := range replicas {
		before := ok.Load()
		r.p.signal(t, syscall.SIGTERM)
		if code := r.p.exitCode(t, 60*time.Second); code != 0 {
			t.Fatalf("%s exit code after SIGTERM: %d\n%s", r.id, code, r.p.output())
		}
		startReplica(r)
		waitFor(t, "HAProxy to see "+r.id+" up again", allUp)
		if ok.Load() == before {
			t.Fatalf("no call succeeded while %s restarted", r.id)
		}
	}
	after := ok.Load()
	waitFor(t, "load after the restarts", func() bool { return ok.Load() > after+50 })
	stop()
	wg.Wait()
	t.Logf("%d calls through HAProxy during the rolling restart, %d failed", ok.Load(), failed.Load())
	if failed.Load() != 0 {
		t.Fatalf("%d calls failed during the rolling restart:\n%s", failed.Load(), strings.Join(failures[:min(len(failures), 20)], "\n"))
	}
}
