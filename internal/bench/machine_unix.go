//go:build unix

package bench

import (
	"syscall"
	"time"
)

// readSelfCPU reads the bench process's own CPU time (user + system) with getrusage.
func readSelfCPU() cpuSample {
	var ru syscall.Rusage
	now := time.Now()
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return cpuSample{Wall: now}
	}
	tv := func(t syscall.Timeval) time.Duration {
		return time.Duration(t.Sec)*time.Second + time.Duration(t.Usec)*time.Microsecond
	}
	return cpuSample{CPU: tv(ru.Utime) + tv(ru.Stime), Wall: now}
}

// raiseFileLimit lifts the soft open-file limit to the hard limit (and tries to lift the hard limit to want, which
// needs privilege). Children inherit it. It returns the soft limit in effect.
func raiseFileLimit(want uint64) uint64 {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 0
	}
	if lim.Max < want {
		try := syscall.Rlimit{Cur: want, Max: want}
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &try); err == nil {
			return want
		}
	}
	if lim.Cur < lim.Max {
		lim.Cur = lim.Max
		_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim)
	}
	_ = syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim)
	return lim.Cur
}
