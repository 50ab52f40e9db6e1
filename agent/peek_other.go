//go:build !unix

package agent

// peekOpen cannot peek without blocking here: a pooled connection counts as open (a request without a body is
// retried once on a new connection if it was not).
func peekOpen(fd uintptr, secure bool) bool { return true }
