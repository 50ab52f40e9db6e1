package cli_test

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// pgBin finds a PostgreSQL server program: Debian installs them under /usr/lib/postgresql/VERSION/bin, off PATH.
func pgBin(t *testing.T, name string) string {
	t.Helper()
	found, _ := filepath.Glob("/usr/lib/postgresql/*/bin/" + name)
	if len(found) > 0 {
		sort.Strings(found)
		return found[len(found)-1]
	}
	return requireTool(t, name, "postgresql")
}

// startPostgres runs a throwaway PostgreSQL (trust auth, no fsync) on a free loopback port and returns the
// address. PostgreSQL refuses to run as root: a root test runs it as the postgres user the package creates.
func startPostgres(t *testing.T) string {
	t.Helper()
	initdb, postgres := pgBin(t, "initdb"), pgBin(t, "postgres")
	var cred *syscall.Credential
	dir, err := os.MkdirTemp("", "switchboard-pg")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			t.Fatalf("running as root and there is no postgres user to run PostgreSQL as: %v", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		if err := os.Chown(dir, uid, gid); err != nil {
			t.Fatal(err)
		}
		cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
	}
	data := filepath.Join(dir, "data")
	cmd := exec.Command(initdb, "-D", data, "-U", "postgres", "-A", "trust", "--no-sync", "-E", "UTF8")
	cmd.Dir = dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("initdb: %v: %s", err, out)
	}
	addr := freeAddr(t)
	host, port, _ := strings.Cut(addr, ":")
	srv := exec.Command(postgres, "-D", data, "-p", port, "-k", dir, "-c", "listen_addresses="+host,
		"-c", "fsync=off", "-c", "shared_buffers=16MB")
	srv.Dir = dir
	srv.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	var log bytes.Buffer
	srv.Stdout, srv.Stderr = &log, &log
	if err := srv.Start(); err != nil {
		t.Fatalf("postgres: %v", err)
	}
	exited := make(chan struct{})
	go func() { _ = srv.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = srv.Process.Signal(syscall.SIGQUIT) // immediate shutdown
		select {
		case <-exited:
		case <-time.After(30 * time.Second):
			_ = srv.Process.Kill()
			<-exited
		}
		if t.Failed() {
			t.Logf("postgres output:\n%s", log.String())
		}
	})
	waitFor(t, "postgres listening", func() bool { return dialOK(addr) })
	return addr
}

// TestPsqlThroughTunnel: psql runs a query against a PostgreSQL published as a TCP service and gets its rows,
// through the replica that holds the tunnel and through the second replica.
func TestPsqlThroughTunnel(t *testing.T) {
	psql := requireTool(t, "psql", "postgresql-client")
	pg := startPostgres(t)
	a, b, tok := tcpStack(t, "pg="+pg)
	for _, relay := range []string{a, b} {
		local := startForward(t, relay, tok, "pg")
		host, port, _ := strings.Cut(local, ":")
		ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
		cmd := exec.CommandContext(ctx, psql, "-h", host, "-p", port, "-U", "postgres", "-d", "postgres", "-At",
			"-c", "select g, md5(g::text) from generate_series(1, 3) g")
		cmd.Env = append(cleanEnv(), "PGCONNECT_TIMEOUT=30")
		out, err := cmd.CombinedOutput()
		cancel()
		want := "1|c4ca4238a0b923820dcc509a6f75849b\n2|c81e728d9d4c2f636f067f89cc14862c\n3|eccbc87e4b5ce2fe28308fd9f2a7baf3\n"
		if err != nil || string(out) != want {
			t.Fatalf("psql via %s: %v: %q", relay, err, out)
		}
	}
}
