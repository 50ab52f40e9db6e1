package cli_test

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/switchboard-relay/switchboard/internal/redistest"
	"github.com/switchboard-relay/switchboard/internal/relaytest"
)

// TestServeRedisCluster: two `serve` processes share a Redis directory; a host connected to one is reached through
// the other (forwarded to the owner's internal listener), and SIGTERM still exits 0.
func TestServeRedisCluster(t *testing.T) {
	addr, _ := redistest.Start(t)
	up := upstream(t, func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte("hi " + r.Header.Get("X-Switchboard-Subject")))
	})
	env := append([]string{"SWITCHBOARD_CLUSTER_SECRET=cluster-test-secret-0123456789abcdef"}, withSecret...)
	replica := func(id string) (*proc, string) {
		p, a, _ := startRelay(t, env, "--directory", "redis://"+addr+"/0", "--replica-id", id,
			"--internal-listen", "127.0.0.1:0")
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

// pkiFiles are the PEM files of a relaytest.InternalPKI.
type pkiFiles struct{ cert, key, ca string }

// writePKI writes a fresh relaytest.InternalPKI to files.
func writePKI(t *testing.T) pkiFiles {
	t.Helper()
	p := relaytest.NewInternalPKI(t)
	dir := t.TempDir()
	f := pkiFiles{cert: filepath.Join(dir, "cert.pem"), key: filepath.Join(dir, "key.pem"), ca: filepath.Join(dir, "ca.pem")}
	for name, b := range map[string][]byte{f.cert: p.CertPEM, f.key: p.KeyPEM, f.ca: p.CAPEM} {
		if err := os.WriteFile(name, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return f
}

// TestServeRedisClusterInternalTLS: two `serve` processes whose internal listeners speak TLS with certificates of
// one CA, and require them of each other, forward to each other; the internal listener refuses a caller without
// a certificate.
func TestServeRedisClusterInternalTLS(t *testing.T) {
	addr, _ := redistest.Start(t)
	pki := writePKI(t)
	up := upstream(t, func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte("hi " + r.Header.Get("X-Switchboard-Subject")))
	})
	env := append([]string{"SWITCHBOARD_CLUSTER_SECRET=" + clusterSecret, "SWITCHBOARD_INTERNAL_CA=" + pki.ca}, withSecret...)
	var internalA string
	replica := func(id string) (*proc, string) {
		socks := listenSockets(t, 3) // main, metrics, internal
		if id == "a" {
			internalA = socks.addrs[2]
		}
		p := startRelayOn(t, env, socks, "--directory", "redis://"+addr+"/0", "--replica-id", id,
			"--internal-listen", "fd:5", "--internal-tls-cert", pki.cert, "--internal-tls-key", pki.key)
		socks.release()
		return p, socks.addrs[0]
	}
	pa, a := replica("a")
	pb, b := replica("b")
	start(t, nil, "host", "--relay", "http://"+a, "--id", "h1", "--token", mint(t, "host", "--id", "h1"), "--upstream", up)
	tok := mint(t, "client", "--hosts", "h1", "--sub", "alice")
	waitStatus(t, "http://"+a+"/hosts/h1/", tok, 200)
	if body := waitStatus(t, "http://"+b+"/hosts/h1/", tok, 200); body != "hi alice" {
		t.Fatalf("via the other replica over TLS: %q", body)
	}
	pool := x509.NewCertPool()
	caPEM, _ := os.ReadFile(pki.ca)
	pool.AppendCertsFromPEM(caPEM)
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}
	defer tr.CloseIdleConnections()
	if resp, err := tr.RoundTrip(mustRequest(t, "https://"+internalA+"/hosts/h1/")); err == nil {
		resp.Body.Close()
		t.Fatalf("internal listener answered a caller without a certificate: %d", resp.StatusCode)
	}
	for _, p := range []*proc{pb, pa} {
		p.signal(t, syscall.SIGTERM)
		if code := p.exitCode(t, 20*time.Second); code != 0 {
			t.Fatalf("exit code after SIGTERM: %d\n%s", code, p.output())
		}
	}
}

func mustRequest(t *testing.T, url string) *http.Request {
	t.Helper()
	req, err := http.NewRequest("GET", url, nil)
	if err != nil {
		t.Fatal(err)
	}
	return req
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
		{"no internal listener", []string{"SWITCHBOARD_CLUSTER_SECRET=" + clusterSecret}, []string{"--directory", "redis://127.0.0.1:1"}, "--internal-listen"},
		{"bad directory", nil, []string{"--directory", "postgres"}, "--directory"},
		{"bad route mode", nil, []string{"--route-mode", "teleport"}, "route-mode"},
		{"wildcard internal listener", []string{"SWITCHBOARD_CLUSTER_SECRET=" + clusterSecret},
			[]string{"--directory", "redis://127.0.0.1:1", "--internal-listen", "0.0.0.0:0"}, "--advertise-internal"},
		{"tls cert without key", []string{"SWITCHBOARD_CLUSTER_SECRET=" + clusterSecret},
			[]string{"--directory", "redis://127.0.0.1:1", "--internal-listen", "127.0.0.1:0", "--internal-tls-cert", "c.pem"}, "--internal-tls-key"},
		{"tls on one node", nil, []string{"--internal-ca", "ca.pem"}, "shared directory"},
		{"unreadable ca", []string{"SWITCHBOARD_CLUSTER_SECRET=" + clusterSecret},
			[]string{"--directory", "redis://127.0.0.1:1", "--internal-listen", "127.0.0.1:0", "--internal-ca", "/nonexistent/ca.pem"}, "--internal-ca"},
		{"tls advertised as http", []string{"SWITCHBOARD_CLUSTER_SECRET=" + clusterSecret},
			[]string{"--directory", "redis://127.0.0.1:1", "--internal-listen", "127.0.0.1:0", "--advertise-internal", "http://127.0.0.1:1",
				"--internal-tls-cert", "{cert}", "--internal-tls-key", "{key}"}, "https://"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"serve", "--listen", "127.0.0.1:0", "--metrics-listen", ""}, tc.args...)
			pki := writePKI(t)
			for i, a := range args {
				args[i] = strings.NewReplacer("{cert}", pki.cert, "{key}", pki.key, "{ca}", pki.ca).Replace(a)
			}
			r := run(t, append(tc.env, withSecret...), args...)
			if r.code != 2 || !strings.Contains(r.stderr, tc.want) {
				t.Fatalf("exit %d, stderr %q; want 2 mentioning %q", r.code, r.stderr, tc.want)
			}
		})
	}
}

// TestServeRedisKill9: a replica is killed with SIGKILL (no drain, no release). Only the exchange in flight on it
// fails; its host that knows another relay reconnects there and is routable again; the entry of its host that
// knows no other relay stops routing once the replica's lease expires.
func TestServeRedisKill9(t *testing.T) {
	addr, _ := redistest.Start(t)
	release := make(chan struct{})
	entered := make(chan string, 4)
	up := upstream(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			_, _ = w.Write([]byte("started "))
			w.(http.Flusher).Flush()
			entered <- r.Host
			select {
			case <-release:
			case <-r.Context().Done():
				return
			}
		}
		_, _ = w.Write([]byte("alive"))
	})
	env := append([]string{"SWITCHBOARD_CLUSTER_SECRET=cluster-test-secret-0123456789abcdef"}, withSecret...)
	replica := func(id string) (*proc, string) {
		p, a, _ := startRelay(t, env, "--directory", "redis://"+addr+"/0", "--replica-id", id,
			"--internal-listen", "127.0.0.1:0", "--lease", "2s", "--miss-wait", "0")
		return p, a
	}
	pa, a := replica("a")
	_, b := replica("b")
	host := func(id string, relays ...string) {
		args := []string{"host"}
		for _, r := range relays {
			args = append(args, "--relay", "http://"+r)
		}
		start(t, nil, append(args, "--id", id, "--token", mint(t, "host", "--id", id), "--upstream", up,
			"--min-backoff", "100ms", "--max-backoff", "500ms")...)
	}
	host("mover", a, b) // fails over to b
	host("stranded", a) // knows only a
	host("onb", b)      // never on a
	tok := mint(t, "client", "--hosts", "*")
	for _, h := range []string{"mover", "stranded", "onb"} {
		waitStatus(t, "http://"+b+"/hosts/"+h+"/", tok, 200)
	}

	// One exchange in flight on a (the dying replica), one on b.
	slow := func(via, h string) chan string {
		done := make(chan string, 1)
		go func() {
			code, body := get("http://"+via+"/hosts/"+h+"/slow", tok)
			done <- fmt.Sprint(code, " ", body)
		}()
		return done
	}
	onA, onB := slow(a, "mover"), slow(b, "onb")
	for range 2 {
		select {
		case <-entered:
		case <-time.After(15 * time.Second):
			t.Fatal("slow exchanges did not start")
		}
	}
	pa.signal(t, syscall.SIGKILL)
	killed := time.Now()
	pa.exitCode(t, 10*time.Second)
	if got := <-onA; strings.HasPrefix(got, "200 started alive") {
		t.Fatalf("the exchange in flight on the killed replica completed: %q", got)
	}
	close(release)
	if got := <-onB; got != "200 started alive" {
		t.Fatalf("the exchange in flight on the surviving replica: %q", got)
	}
	if body := waitStatus(t, "http://"+b+"/hosts/mover/", tok, 200); body != "alive" {
		t.Fatalf("after the kill: %q", body)
	}
	// The stranded host's entry names the dead replica until its lease (2 s) expires; then it reads offline from
	// any replica, and requests for it get 503 from b without trying the dead replica.
	waitFor(t, "stranded host offline", func() bool {
		_, body := get("http://"+b+"/v1/hosts/stranded", tok)
		return strings.Contains(body, `"online":false`)
	})
	t.Logf("stranded host read offline %v after the kill", time.Since(killed).Round(time.Millisecond))
	if code, body := get("http://"+b+"/hosts/stranded/", tok); code != http.StatusServiceUnavailable || !strings.Contains(body, "host_offline") {
		t.Fatalf("stranded host after the lease: %d %q", code, body)
	}
}
