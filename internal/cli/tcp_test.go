package cli_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/switchboard-relay/switchboard/internal/redistest"
)

// tcpStack runs two relay replicas on one Redis directory and a `switchboard host` with --tcp services on the
// first one. It returns both replicas' base URLs and a client token for h1.
func tcpStack(t *testing.T, services ...string) (a, b, tok string) {
	t.Helper()
	addr, _ := redistest.Start(t)
	env := append([]string{"SWITCHBOARD_CLUSTER_SECRET=cluster-test-secret-0123456789abcdef"}, withSecret...)
	replica := func(id string) string {
		_, a, _ := startRelay(t, env, "--directory", "redis://"+addr+"/0", "--replica-id", id,
			"--internal-listen", "127.0.0.1:0")
		return "http://" + a
	}
	a, b = replica("a"), replica("b")
	args := []string{"host", "--relay", a, "--id", "h1", "--token", mint(t, "host", "--id", "h1")}
	for _, s := range services {
		args = append(args, "--tcp", s)
	}
	start(t, nil, args...)
	tok = mint(t, "client", "--hosts", "h1", "--sub", "alice")
	waitFor(t, "h1 online with its TCP services, seen from the second replica", func() bool {
		code, body := get(b+"/v1/hosts/h1", tok)
		return code == 200 && strings.Contains(body, `"online":true`) && strings.Contains(body, `"switchboard.tcp"`)
	})
	return a, b, tok
}

// startForward runs `switchboard forward` on a socket of its own and returns the local address it serves.
func startForward(t *testing.T, relay, tok, service string) string {
	t.Helper()
	s := listenSockets(t, 1)
	p := startFiles(t, []string{"SWITCHBOARD_CLIENT_TOKEN=" + tok}, s.files, "forward", "--listen", "fd:3",
		"--relay", relay, "h1", service)
	s.release()
	p.waitOutput(t, `"msg":"forwarding"`)
	return s.addrs[0]
}

// TestHostTCPFlagsRefused: bad --tcp values and a host with nothing to serve exit 2 with the reason.
func TestHostTCPFlagsRefused(t *testing.T) {
	base := []string{"host", "--relay", "http://127.0.0.1:1", "--id", "h1", "--token", "x"}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, "nothing to serve"},
		{[]string{"--tcp", "SSH=127.0.0.1:22"}, "invalid service name"},
		{[]string{"--tcp", "ssh=127.0.0.1"}, "want host:port"},
	} {
		r := run(t, nil, append(base, tc.args...)...)
		if r.code != 2 || !strings.Contains(r.stderr, tc.want) {
			t.Errorf("host %v: exit %d, stderr %q; want 2 and %q", tc.args, r.code, r.stderr, tc.want)
		}
	}
}

// TestConnectErrors: `switchboard connect` names the reason for an offline host, an unknown service, a refused
// token and a missing token.
func TestConnectErrors(t *testing.T) {
	a, _, tok := tcpStack(t, "echo=127.0.0.1:1")
	offline := mint(t, "client", "--hosts", "h1,h2", "--sub", "alice")
	for _, tc := range []struct {
		name  string
		env   []string
		args  []string
		code  int
		wants string
	}{
		{"offline", []string{"SWITCHBOARD_CLIENT_TOKEN=" + offline}, []string{"h2", "ssh"}, 1, "host h2 is offline"},
		{"unknown service", []string{"SWITCHBOARD_CLIENT_TOKEN=" + tok}, []string{"h1", "pg"}, 1, `publishes no TCP service "pg"`},
		{"refused token", []string{"SWITCHBOARD_CLIENT_TOKEN=bad"}, []string{"h1", "echo"}, 1, "refused the client token"},
		{"no token", nil, []string{"h1", "echo"}, 2, "a client token is required"},
		{"bad service", []string{"SWITCHBOARD_CLIENT_TOKEN=" + tok}, []string{"h1", "No/Such"}, 2, "invalid service name"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := run(t, tc.env, append([]string{"connect", "--relay", a}, tc.args...)...)
			if r.code != tc.code || !strings.Contains(r.stderr, tc.wants) {
				t.Fatalf("exit %d, stderr %q; want %d and %q", r.code, r.stderr, tc.code, tc.wants)
			}
		})
	}
}

// TestConnectStdio: `switchboard connect` carries stdin to the service and the service's answer to stdout, with
// stdin's end as the half-close the service waits for.
func TestConnectStdio(t *testing.T) {
	svc := startEchoAfterEOF(t)
	_, b, tok := tcpStack(t, "echo="+svc)
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary, "connect", "--relay", b, "h1", "echo")
	cmd.Env = append(cleanEnv(), "SWITCHBOARD_CLIENT_TOKEN="+tok)
	cmd.Stdin = strings.NewReader("hello through the tunnel")
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("connect: %v: %s", err, errb.String())
	}
	if got := out.String(); got != "got:hello through the tunnel" {
		t.Fatalf("stdout %q", got)
	}
}

// startEchoAfterEOF runs a loopback TCP service that answers "got:"+everything once the client half-closed.
func startEchoAfterEOF(t *testing.T) string {
	t.Helper()
	return startTCPService(t, func(c io.ReadWriter) {
		b, err := io.ReadAll(c)
		if err == nil {
			_, _ = c.Write(append([]byte("got:"), b...))
		}
	})
}

// TestRedisCLIThroughTunnel: redis-cli against a real redis-server published as a TCP service: PING through the
// replica that holds the tunnel, and a 50 MiB value that round-trips intact through the second replica.
func TestRedisCLIThroughTunnel(t *testing.T) {
	cli := requireTool(t, "redis-cli", "redis-tools")
	svc, _ := redistest.Start(t)
	a, b, tok := tcpStack(t, "redis="+svc)

	local := startForward(t, a, tok, "redis")
	host, port, _ := strings.Cut(local, ":")
	out, err := exec.Command(cli, "-h", host, "-p", port, "PING").CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "PONG" {
		t.Fatalf("redis-cli PING: %v: %q", err, out)
	}

	local = startForward(t, b, tok, "redis")
	host, port, _ = strings.Cut(local, ":")
	raw := make([]byte, 25<<20)
	_, _ = rand.Read(raw)
	value := []byte(hex.EncodeToString(raw)) // 50 MiB, printable so redis-cli prints it as it is
	set := exec.Command(cli, "-h", host, "-p", port, "-x", "SET", "big")
	set.Stdin = bytes.NewReader(value)
	if out, err := set.CombinedOutput(); err != nil || strings.TrimSpace(string(out)) != "OK" {
		t.Fatalf("redis-cli -x SET of 50 MiB: %v: %q", err, out)
	}
	got, err := exec.Command(cli, "-h", host, "-p", port, "--raw", "GET", "big").Output()
	if err != nil {
		t.Fatalf("redis-cli GET: %v", err)
	}
	got = bytes.TrimSuffix(got, []byte("\n"))
	if !bytes.Equal(got, value) {
		t.Fatalf("GET returned %d bytes, want the %d set", len(got), len(value))
	}
}

// TestSSHProxyCommand: OpenSSH's ssh runs a command on an sshd the test starts, with `switchboard connect` as its
// ProxyCommand, through either replica.
func TestSSHProxyCommand(t *testing.T) {
	sshBin := requireTool(t, "ssh", "openssh-client")
	keygen := requireTool(t, "ssh-keygen", "openssh-client")
	sshd := "/usr/sbin/sshd"
	if _, err := os.Stat(sshd); err != nil {
		sshd = requireTool(t, "sshd", "openssh-server")
	}
	dir := t.TempDir()
	for _, k := range []string{"host_key", "user_key"} {
		if out, err := exec.Command(keygen, "-q", "-t", "ed25519", "-N", "", "-f", filepath.Join(dir, k)).CombinedOutput(); err != nil {
			t.Fatalf("ssh-keygen: %v: %s", err, out)
		}
	}
	pub, err := os.ReadFile(filepath.Join(dir, "user_key.pub"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "authorized_keys"), pub, 0o600); err != nil {
		t.Fatal(err)
	}
	addr := freeAddr(t)
	host, port, _ := strings.Cut(addr, ":")
	config := fmt.Sprintf("ListenAddress %s\nPort %s\nHostKey %s\nAuthorizedKeysFile %s\nPidFile %s\n"+
		"StrictModes no\nUsePAM no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\n",
		host, port, filepath.Join(dir, "host_key"), filepath.Join(dir, "authorized_keys"), filepath.Join(dir, "sshd.pid"))
	if err := os.WriteFile(filepath.Join(dir, "sshd_config"), []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	if os.Getuid() == 0 {
		// sshd run by root wants its privilege separation directory, which the package's service unit
		// (RuntimeDirectory=sshd) would create at boot.
		if err := os.MkdirAll("/run/sshd", 0o755); err != nil {
			t.Fatalf("sshd privilege separation directory: %v", err)
		}
	}
	d := exec.Command(sshd, "-D", "-e", "-f", filepath.Join(dir, "sshd_config"))
	var dlog bytes.Buffer
	d.Stdout, d.Stderr = &dlog, &dlog
	if err := d.Start(); err != nil {
		t.Fatalf("sshd: %v", err)
	}
	exited := make(chan struct{})
	go func() { _ = d.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = d.Process.Kill()
		<-exited
		if t.Failed() {
			t.Logf("sshd output:\n%s", dlog.String())
		}
	})
	waitFor(t, "sshd listening", func() bool { return dialOK(addr) })

	a, b, tok := tcpStack(t, "ssh="+addr)
	user := os.Getenv("USER")
	if user == "" {
		out, _ := exec.Command("id", "-un").Output()
		user = strings.TrimSpace(string(out))
	}
	for _, relay := range []string{a, b} {
		ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
		cmd := exec.CommandContext(ctx, sshBin, "-F", "/dev/null", "-i", filepath.Join(dir, "user_key"),
			"-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
			"-o", "LogLevel=ERROR", "-o", "ProxyCommand="+binary+" connect --relay "+relay+" h1 ssh",
			user+"@laptop", "echo", "hello-from-sshd")
		cmd.Env = append(cleanEnv(), "SWITCHBOARD_CLIENT_TOKEN="+tok)
		out, err := cmd.CombinedOutput()
		cancel()
		if err != nil || strings.TrimSpace(string(out)) != "hello-from-sshd" {
			t.Fatalf("ssh via %s: %v: %q", relay, err, out)
		}
	}
}
