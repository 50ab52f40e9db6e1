package bench

import (
	"context"
	"time"
)

// meter accumulates CPU use of the bench process and its children over the measured relay-path phases only, so
// that set-up, warm-up and direct phases do not dilute the figures.
type meter struct {
	relay  *relayProc
	pids   map[string]int // "relay", "agent", "origin" → pid (0 = not ours)
	self   cpuDelta
	procs  map[string]cpuDelta
	last   map[string]ProcStats
	start  map[string]ProcStats
	self0  cpuSample
	active bool
}

// newMeter watches the bench process, the relay r, the agent a (may be nil) and the origin.
func (e *env) newMeter(r *relayProc, a *agentProc) *meter {
	m := &meter{relay: r, pids: map[string]int{}, procs: map[string]cpuDelta{}, last: map[string]ProcStats{}, start: map[string]ProcStats{}}
	if r != nil && r.PID() != 0 {
		m.pids["relay"] = r.PID()
	}
	if a != nil {
		m.pids["agent"] = a.proc.PID()
	}
	if e.origin != nil && e.origin.PID != 0 {
		m.pids["origin"] = e.origin.PID
	}
	return m
}

// begin starts a measured interval.
func (m *meter) begin() {
	m.active = true
	m.self0 = readSelfCPU()
	for name, pid := range m.pids {
		if st, err := readProc(pid); err == nil {
			m.start[name] = st
		}
	}
}

// end closes the interval begun last.
func (m *meter) end() {
	if !m.active {
		return
	}
	m.active = false
	d := readSelfCPU().sub(m.self0)
	m.self.CPU += d.CPU
	m.self.Wall += d.Wall
	for name, pid := range m.pids {
		st, err := readProc(pid)
		s0, ok := m.start[name]
		if err != nil || !ok {
			continue
		}
		acc := m.procs[name]
		acc.CPU += st.CPU - s0.CPU
		acc.Wall += st.Wall.Sub(s0.Wall)
		m.procs[name] = acc
		m.last[name] = st
	}
}

// fill writes the accumulated figures into res; with metrics it also scrapes the relay's heap and goroutines.
func (m *meter) fill(ctx context.Context, res *Result) {
	m.end()
	res.Generator = m.self.share()
	for name := range m.pids {
		st, ok := m.last[name]
		if !ok {
			continue
		}
		f := &ProcFigures{PID: m.pids[name], RSSKiB: st.RSSKiB, CPUShare: m.procs[name].share(), Threads: st.Threads}
		switch name {
		case "relay":
			res.Relay = f
			if m.relay != nil && m.relay.Metrics != "" {
				sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
				if s, err := scrapeMetrics(sctx, m.relay.Metrics, false); err == nil {
					f.Goroutines = s.Goroutines
					f.HeapInuseMiB = s.HeapInuse / (1 << 20)
				}
				cancel()
			}
		case "agent":
			res.Agent = f
		case "origin":
			res.Origin = f
		}
	}
}
