//go:build unix

package cli

import (
	"io"
	"os"
	"syscall"
)

// pollableStdin returns stdin as a file whose Close unblocks a pending Read (a pipe or a socket, as ssh's
// ProxyCommand gives), so that a bridge aborted by the peer can end its reading goroutine.
func pollableStdin() io.ReadCloser {
	if err := syscall.SetNonblock(syscall.Stdin, true); err != nil {
		return os.Stdin
	}
	return os.NewFile(uintptr(syscall.Stdin), "/dev/stdin")
}
