package bench

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"time"
)

// Machine is what a report records about where it ran.
type Machine struct {
	Cores     int    `json:"cores"`
	MemoryMiB int64  `json:"memory_mib"`
	CPUModel  string `json:"cpu_model,omitempty"`
	Kernel    string `json:"kernel,omitempty"`
	GoVersion string `json:"go_version"`
	GOOS      string `json:"goos"`
	GOARCH    string `json:"goarch"`
	Commit    string `json:"commit,omitempty"`
	Modified  bool   `json:"modified,omitempty"`
	// LoadAvg is /proc/loadavg's 1-, 5- and 15-minute load when the run started: above the core count, other work
	// competed with the bench and its figures are noisy.
	LoadAvg string `json:"load_avg,omitempty"`
}

// machineFacts gathers Machine. The commit comes from the binary's build info, else from git in the working
// directory.
func machineFacts(ctx context.Context) Machine {
	m := Machine{
		Cores:     runtime.NumCPU(),
		GoVersion: runtime.Version(),
		GOOS:      runtime.GOOS,
		GOARCH:    runtime.GOARCH,
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		for line := range strings.Lines(string(b)) {
			if v, ok := strings.CutPrefix(line, "MemTotal:"); ok {
				kib, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
				m.MemoryMiB = kib / 1024
			}
		}
	}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for line := range strings.Lines(string(b)) {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPUModel = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		if f := strings.Fields(string(b)); len(f) >= 3 {
			m.LoadAvg = strings.Join(f[:3], " ")
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				m.Commit = s.Value
			case "vcs.modified":
				m.Modified = s.Value == "true"
			}
		}
	}
	if m.Commit == "" {
		ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		if out, err := exec.CommandContext(ctx, "git", "rev-parse", "HEAD").Output(); err == nil {
			m.Commit = strings.TrimSpace(string(out))
			if out, err := exec.CommandContext(ctx, "git", "status", "--porcelain", "--untracked-files=no").Output(); err == nil {
				m.Modified = len(bytes.TrimSpace(out)) > 0
			}
		}
	}
	return m
}

// cpuSample is CPU time consumed and the wall clock at which it was read.
type cpuSample struct {
	CPU  time.Duration
	Wall time.Time
}

// cpuDelta is CPU time used over a wall-clock interval.
type cpuDelta struct {
	CPU  time.Duration
	Wall time.Duration
}

// sub returns the interval from o to s.
func (s cpuSample) sub(o cpuSample) cpuDelta {
	return cpuDelta{CPU: s.CPU - o.CPU, Wall: s.Wall.Sub(o.Wall)}
}

// share is the fraction of the whole machine used over the interval: CPU ÷ wall ÷ cores.
func (d cpuDelta) share() float64 {
	if d.Wall <= 0 {
		return 0
	}
	return d.CPU.Seconds() / d.Wall.Seconds() / float64(runtime.NumCPU())
}

// clockTick is the unit of utime and stime in /proc/PID/stat (USER_HZ, 100 on every Linux port Go supports).
const clockTick = 10 * time.Millisecond

// ProcStats is a child process's footprint read from /proc.
type ProcStats struct {
	RSSKiB int64 `json:"rss_kib"`
	// CPU is utime + stime since the process started.
	CPU     time.Duration `json:"-"`
	Threads int           `json:"threads"`
	Wall    time.Time     `json:"-"`
}

// readProc reads /proc/PID/status (VmRSS, Threads) and /proc/PID/stat (utime, stime).
func readProc(pid int) (ProcStats, error) {
	st := ProcStats{Wall: time.Now()}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return st, fmt.Errorf("read process status: %w", err)
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		v = strings.TrimSpace(v)
		switch k {
		case "VmRSS":
			st.RSSKiB, _ = strconv.ParseInt(strings.TrimSuffix(v, " kB"), 10, 64)
		case "Threads":
			st.Threads, _ = strconv.Atoi(v)
		}
	}
	b, err = os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return st, fmt.Errorf("read process stat: %w", err)
	}
	// The command name (field 2) is in parentheses and may hold spaces: fields are counted after the last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return st, fmt.Errorf("malformed /proc/%d/stat", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	// After ')': state is field 3, so utime (14) and stime (15) are at indexes 11 and 12.
	if len(f) < 13 {
		return st, fmt.Errorf("short /proc/%d/stat", pid)
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	st.CPU = time.Duration(ut+stime) * clockTick
	return st, nil
}
