//go:build unix

package cli

import "syscall"

// raiseFileLimit raises the soft limit on open files to the hard limit (every connection is a descriptor) and
// returns the soft limit in force. The Go runtime does the same at start on most systems; this makes it explicit
// and tells the caller the value.
func raiseFileLimit() (uint64, error) {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return 0, err
	}
	if rl.Cur < rl.Max {
		raised := rl
		raised.Cur = rl.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &raised); err != nil {
			return uint64(rl.Cur), err
		}
		rl = raised
	}
	return uint64(rl.Cur), nil
}
