//go:build unix

package agent

import "syscall"

// peekOpen peeks at fd without blocking: end of stream or an error means closed; bytes nobody asked for mean a
// plain connection is out of step (on TLS they may be a session ticket, so only the end counts).
func peekOpen(fd uintptr, secure bool) bool {
	var b [1]byte
	n, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
	switch {
	case err == syscall.EAGAIN || err == syscall.EWOULDBLOCK:
		return true
	case err != nil || n == 0:
		return false
	default:
		return secure
	}
}
