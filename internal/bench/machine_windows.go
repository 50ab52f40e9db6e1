package bench

import "time"

// readSelfCPU has no getrusage to read on Windows: the bench's own CPU share reads 0 there.
func readSelfCPU() cpuSample { return cpuSample{Wall: time.Now()} }

// raiseFileLimit is a no-op on Windows, which has no open-file rlimit; 0 means unknown.
func raiseFileLimit(uint64) uint64 { return 0 }
