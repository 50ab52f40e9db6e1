//go:build linux

package cli_test

import (
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"unsafe"
)

// openPTY opens a pseudo-terminal pair (Linux /dev/ptmx); both ends are closed in t.Cleanup.
func openPTY(t *testing.T) (master, tty *os.File) {
	t.Helper()
	master, err := os.OpenFile("/dev/ptmx", os.O_RDWR, 0)
	if err != nil {
		t.Fatalf("open /dev/ptmx: %v", err)
	}
	var n uint32
	if _, _, e := syscall.Syscall(syscall.SYS_IOCTL, master.Fd(), syscall.TIOCGPTN, uintptr(unsafe.Pointer(&n))); e != 0 {
		t.Fatalf("TIOCGPTN: %v", e)
	}
	var unlock int32
	if _, _, e := syscall.Syscall(syscall.SYS_IOCTL, master.Fd(), syscall.TIOCSPTLCK, uintptr(unsafe.Pointer(&unlock))); e != 0 {
		t.Fatalf("TIOCSPTLCK: %v", e)
	}
	tty, err = os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Fatalf("open pts: %v", err)
	}
	return master, tty
}

// TestServeGeneratesSecret: with no SWITCHBOARD_SECRET and stderr a terminal (someone trying it out), the relay
// starts and prints instructions, with the generated secret, that really mint tokens it accepts.
func TestServeGeneratesSecret(t *testing.T) {
	master, tty := openPTY(t)
	socks := listenSockets(t, 2)
	addr := socks.addrs[0]
	p := &proc{done: make(chan struct{})}
	p.cmd = exec.Command(binary, "serve", "--listen", "fd:3", "--metrics-listen", "fd:4")
	p.cmd.Env = cleanEnv()
	p.cmd.ExtraFiles = socks.files
	p.cmd.Stdout, p.cmd.Stderr = p, tty // an *os.File: the child writes to the terminal itself
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	_ = tty.Close() // the child holds its own copy; the master reads EIO once the child is gone
	copied := make(chan struct{})
	go func() { // owned by this test: ends when the child exits (EIO) or the master is closed below
		defer close(copied)
		b := make([]byte, 4096)
		for {
			n, err := master.Read(b)
			_, _ = p.Write(b[:n])
			if err != nil {
				return
			}
		}
	}()
	go p.wait()
	t.Cleanup(func() {
		_ = p.cmd.Process.Kill()
		<-p.done
		_ = master.Close()
		<-copied
		if t.Failed() {
			t.Logf("output of switchboard serve:\n%s", p.output())
		}
	})
	waitStatus(t, "http://"+addr+"/healthz", "", 200)
	p.waitOutput(t, "switchboard token client")
	out := p.output()
	if !strings.Contains(out, "SWITCHBOARD_SECRET is not set") || !strings.Contains(out, "switchboard token host") {
		t.Fatalf("serve without a secret did not explain itself:\n%s", out)
	}
	m := regexp.MustCompile(`export SWITCHBOARD_SECRET=([0-9a-f]+)`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no export line in:\n%s", out)
	}
	printed := run(t, []string{"SWITCHBOARD_SECRET=" + m[1]}, "token", "client", "--hosts", "*")
	if printed.code != 0 {
		t.Fatalf("minting with the printed secret: %d %s", printed.code, printed.stderr)
	}
	// A token signed with the printed secret is accepted (404: no such host), one signed otherwise is not.
	if code, body := get("http://"+addr+"/v1/hosts/nobody", strings.TrimSpace(printed.stdout)); code != 404 {
		t.Fatalf("token minted as instructed: %d %s, want 404", code, body)
	}
	if code, _ := get("http://"+addr+"/v1/hosts/nobody", mint(t, "client", "--hosts", "*")); code != 401 {
		t.Fatalf("token with another secret: %d, want 401", code)
	}
}
