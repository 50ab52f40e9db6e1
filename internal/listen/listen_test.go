package listen

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// childEnv makes the test binary act as the child of TestInheritedSocketOutlivesChildren.
const childEnv = "LISTEN_TEST_CHILD"

func TestMain(m *testing.M) {
	if tag := os.Getenv(childEnv); tag != "" {
		os.Exit(serveOne(tag))
	}
	os.Exit(m.Run())
}

// serveOne is the child: it serves one connection on fd:3, answering with its tag, then exits.
func serveOne(tag string) int {
	ln, err := Open("fd:3")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer ln.Close()
	c, err := ln.Accept()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer c.Close()
	fmt.Fprintln(c, tag)
	return 0
}

// TestInheritedSocketOutlivesChildren: a parent holds a listening socket and passes it to one child after another;
// the address never falls free between them, and a connection made while no child runs waits in the backlog and
// is served by the next one.
func TestInheritedSocketOutlivesChildren(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	addr := ln.Addr().String()
	f, err := File(ln)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	run := func(tag string) *exec.Cmd {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), childEnv+"="+tag)
		cmd.ExtraFiles = []*os.File{f}
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		return cmd
	}
	read := func(c net.Conn) string {
		defer c.Close()
		line, err := bufio.NewReader(c).ReadString('\n')
		if err != nil {
			t.Fatalf("read from %s: %v", addr, err)
		}
		return strings.TrimSpace(line)
	}

	first := run("first")
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	if got := read(c); got != "first" {
		t.Fatalf("first child answered %q", got)
	}
	if err := first.Wait(); err != nil {
		t.Fatalf("first child: %v", err)
	}

	// No child serves the socket now: the address is still ours, and a connection waits.
	if l2, err := net.Listen("tcp", addr); err == nil {
		l2.Close()
		t.Fatalf("%s could be bound by someone else between two children", addr)
	}
	waiting, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("dial while no child runs: %v", err)
	}
	second := run("second")
	if got := read(waiting); got != "second" {
		t.Fatalf("second child answered %q", got)
	}
	if err := second.Wait(); err != nil {
		t.Fatalf("second child: %v", err)
	}
}

func TestOpenSpecs(t *testing.T) {
	for _, spec := range []string{"fd:", "fd:x", "fd:0", "fd:2", "fd:-3", "fd:99999"} {
		if ln, err := Open(spec); err == nil {
			ln.Close()
			t.Errorf("Open(%q) succeeded", spec)
		}
	}
	ln, err := Open("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln.Close()
	if !IsInherited("fd:3") || IsInherited("127.0.0.1:3") {
		t.Fatal("IsInherited")
	}
}
