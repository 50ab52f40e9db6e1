// Package listen opens the TCP listeners a Switchboard process serves on, from a listen address or from a socket
// its parent passed down. A supervisor that holds the listening socket across restarts (systemd socket activation,
// a test harness, the bench) names it as "fd:N": the process serves on inherited file descriptor N, so the address
// never falls free between one run and the next and no other process can take it meanwhile. Connections that
// arrive while no process serves the socket wait in its backlog instead of being refused.
package listen

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
)

// fdPrefix marks a listen spec that names an inherited file descriptor.
const fdPrefix = "fd:"

// Open returns a TCP listener for spec: "host:port" (":port", "[::1]:port") listens anew; "fd:N" serves on the
// listening socket inherited as file descriptor N (3 is the first one a parent passes with exec.Cmd.ExtraFiles).
func Open(spec string) (net.Listener, error) {
	n, ok, err := parseFD(spec)
	if err != nil {
		return nil, err
	}
	if !ok {
		return net.Listen("tcp", spec)
	}
	f := os.NewFile(uintptr(n), "inherited-listener-"+strconv.Itoa(n))
	if f == nil {
		return nil, fmt.Errorf("listen %s: not an open file descriptor", spec)
	}
	defer f.Close() // FileListener dups it
	ln, err := net.FileListener(f)
	if err != nil {
		return nil, fmt.Errorf("listen %s: %w", spec, err)
	}
	if _, ok := ln.Addr().(*net.TCPAddr); !ok {
		_ = ln.Close()
		return nil, fmt.Errorf("listen %s: not a TCP socket (%s)", spec, ln.Addr().Network())
	}
	return ln, nil
}

// IsInherited reports whether spec names an inherited file descriptor rather than an address.
func IsInherited(spec string) bool { return strings.HasPrefix(spec, fdPrefix) }

// parseFD reads "fd:N"; ok is false for any other spec. N must be 3 or more: 0–2 are the standard streams.
func parseFD(spec string) (n int, ok bool, err error) {
	rest, found := strings.CutPrefix(spec, fdPrefix)
	if !found {
		return 0, false, nil
	}
	n, err = strconv.Atoi(rest)
	if err != nil || n < 3 {
		return 0, true, fmt.Errorf("listen %q: want fd:N with N ≥ 3 (an inherited listening socket)", spec)
	}
	return n, true, nil
}

// File returns a duplicate of ln's socket as an *os.File, to pass to a child process (exec.Cmd.ExtraFiles). The
// caller closes it; ln keeps working and keeps the address bound.
func File(ln net.Listener) (*os.File, error) {
	tl, ok := ln.(*net.TCPListener)
	if !ok {
		return nil, errors.New("listen: only a TCP listener can be passed to a child")
	}
	return tl.File()
}
