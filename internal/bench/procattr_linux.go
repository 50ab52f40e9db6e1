package bench

import "syscall"

// dieWithParent makes a child receive SIGKILL when the bench dies, however it dies.
func dieWithParent() *syscall.SysProcAttr { return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL} }
