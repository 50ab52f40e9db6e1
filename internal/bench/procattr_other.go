//go:build !linux

package bench

import "syscall"

// dieWithParent has no portable equivalent outside Linux: children are stopped by the bench's own cleanup only.
func dieWithParent() *syscall.SysProcAttr { return nil }
