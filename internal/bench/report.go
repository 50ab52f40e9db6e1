package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"
)

// Report is the whole outcome of a Run: what ran where, and every scenario's figures. It is the JSON format.
type Report struct {
	Started  time.Time `json:"started"`
	Finished time.Time `json:"finished"`
	// Command reproduces the run.
	Command string  `json:"command"`
	Machine Machine `json:"machine"`
	Config  Config  `json:"config"`
	// OriginProcess is "child" when the origin ran as its own process, "bench" when inside the bench process.
	OriginProcess string    `json:"origin_process"`
	Scenarios     []*Result `json:"scenarios"`
}

// Result is one scenario's figures.
type Result struct {
	Name    string  `json:"name"`
	Seconds float64 `json:"seconds"`
	Error   string  `json:"error,omitempty"`
	Rows    []Row   `json:"rows"`
	// Generator is the bench process's CPU share of the machine (CPU ÷ wall ÷ cores) while it drove the relay path:
	// near 1/cores or above means the generator itself may limit the result.
	Generator float64 `json:"generator_cpu_share"`
	// Relay, Agent and Origin are the processes' figures over the relay-path phases, when the bench started them.
	Relay  *ProcFigures `json:"relay,omitempty"`
	Agent  *ProcFigures `json:"agent,omitempty"`
	Origin *ProcFigures `json:"origin,omitempty"`
	Notes  []string     `json:"notes,omitempty"`
}

// Row is one figure measured through the relay and against its baseline (direct to the origin, unless Baseline
// says otherwise).
type Row struct {
	Metric string  `json:"metric"`
	Unit   string  `json:"unit"`
	Relay  float64 `json:"relay"`
	Direct float64 `json:"direct"`
	// Ratio is Relay ÷ Direct; 0 when Direct is 0.
	Ratio float64 `json:"ratio"`
	// Pipe is the same figure through the pipe (two chained byte-copy processes, the floor of any relay with two
	// processes in the path), measured in the same run; PipeRatio is Relay ÷ Pipe. Both 0 when not measured.
	Pipe      float64 `json:"pipe,omitempty"`
	PipeRatio float64 `json:"pipe_ratio,omitempty"`
	// Baseline names what Direct is when it is not the direct path ("0 tunnels", "before", …).
	Baseline string `json:"baseline,omitempty"`
	// HigherBetter says which way is good.
	HigherBetter bool `json:"higher_better"`
	// Goal is the product goal for this figure, in words; GoalMet whether this run met it.
	Goal    string `json:"goal,omitempty"`
	GoalMet *bool  `json:"goal_met,omitempty"`
}

// ProcFigures is a process's footprint over a measured interval.
type ProcFigures struct {
	PID      int     `json:"pid"`
	RSSKiB   int64   `json:"rss_kib"`
	CPUShare float64 `json:"cpu_share"`
	Threads  int     `json:"threads"`
	// Goroutines and HeapInuseMiB come from the relay's /metrics (relay only).
	Goroutines   float64 `json:"goroutines,omitempty"`
	HeapInuseMiB float64 `json:"heap_inuse_mib,omitempty"`
}

// row builds a Row and computes its ratio.
func row(metric, unit string, relay, direct float64, higherBetter bool) Row {
	r := Row{Metric: metric, Unit: unit, Relay: relay, Direct: direct, HigherBetter: higherBetter}
	if direct != 0 {
		r.Ratio = relay / direct
	}
	return r
}

// withPipe attaches the pipe's figure and the relay's ratio to it.
func (r Row) withPipe(pipe float64) Row {
	r.Pipe = pipe
	if pipe != 0 {
		r.PipeRatio = r.Relay / pipe
	}
	return r
}

// pipeCells prints the pipe figure and relay ÷ pipe, or dashes.
func pipeCells(r Row) (pipe, ratio string) {
	if r.Pipe == 0 {
		return "–", "–"
	}
	return fmtNum(r.Pipe), fmt.Sprintf("%.2f×", r.PipeRatio)
}

// withGoal attaches a goal and whether it was met.
func (r Row) withGoal(goal string, met bool) Row {
	r.Goal = goal
	r.GoalMet = &met
	return r
}

// withBaseline names a baseline other than the direct path.
func (r Row) withBaseline(b string) Row {
	r.Baseline = b
	return r
}

// add appends rows to the result.
func (r *Result) add(rows ...Row) { r.Rows = append(r.Rows, rows...) }

// notef appends a note.
func (r *Result) notef(format string, args ...any) {
	r.Notes = append(r.Notes, fmt.Sprintf(format, args...))
}

// writeTable prints the report as an aligned table.
func writeTable(w io.Writer, rep *Report) {
	m := rep.Machine
	fmt.Fprintf(w, "machine: %d cores, %d MiB, %s, %s, commit %s, load average at start %s\n",
		m.Cores, m.MemoryMiB, m.CPUModel, m.GoVersion, shortCommit(m), m.LoadAvg)
	fmt.Fprintf(w, "origin: %s process\n\n", rep.OriginProcess)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "scenario\tmetric\tunit\trelay\tdirect/baseline\tratio\tpipe\t÷ pipe\tgoal\t")
	for _, s := range rep.Scenarios {
		if s.Error != "" {
			fmt.Fprintf(tw, "%s\tFAILED: %s\t\t\t\t\t\t\t\t\n", s.Name, firstLine(s.Error))
		}
		for _, r := range s.Rows {
			base := baseLabel(r)
			ratio := "-"
			if r.Direct != 0 {
				ratio = fmt.Sprintf("%.2f×", r.Ratio)
			}
			goal := r.Goal
			if r.GoalMet != nil {
				if *r.GoalMet {
					goal += " ✓"
				} else {
					goal += " ✗"
				}
			}
			pipe, pratio := pipeCells(r)
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t\n", s.Name, r.Metric, r.Unit, fmtNum(r.Relay), base, ratio, pipe, pratio, goal)
		}
	}
	tw.Flush()
	fmt.Fprintln(w)
	for _, s := range rep.Scenarios {
		var parts []string
		parts = append(parts, fmt.Sprintf("generator CPU %.0f%%", 100*s.Generator))
		for _, p := range []struct {
			name string
			f    *ProcFigures
		}{{"relay", s.Relay}, {"agent", s.Agent}, {"origin", s.Origin}} {
			if p.f != nil {
				parts = append(parts, fmt.Sprintf("%s CPU %.0f%% RSS %.1f MiB", p.name, 100*p.f.CPUShare, float64(p.f.RSSKiB)/1024))
			}
		}
		fmt.Fprintf(w, "%-8s %s (%.1f s)\n", s.Name, strings.Join(parts, ", "), s.Seconds)
		for _, n := range s.Notes {
			fmt.Fprintf(w, "         note: %s\n", n)
		}
	}
}

// writeFiles writes report.json, report.svg and report.md into Out and the JSON to Config.JSON.
func writeFiles(rep *Report, cfg Config, stdout io.Writer) error {
	js, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return fmt.Errorf("encode report: %w", err)
	}
	js = append(js, '\n')
	jsonPath := cfg.JSON
	if jsonPath == "" && cfg.Out != "" {
		jsonPath = filepath.Join(cfg.Out, "report.json")
	}
	switch jsonPath {
	case "":
	case "-":
		if _, err := stdout.Write(js); err != nil {
			return fmt.Errorf("write report: %w", err)
		}
	default:
		if err := os.WriteFile(jsonPath, js, 0o644); err != nil {
			return fmt.Errorf("write report: %w", err)
		}
	}
	if cfg.Out == "" {
		return nil
	}
	if err := os.WriteFile(filepath.Join(cfg.Out, "report.svg"), []byte(renderSVG(rep)), 0o644); err != nil {
		return fmt.Errorf("write plot: %w", err)
	}
	var md strings.Builder
	writeMarkdown(&md, rep)
	if err := os.WriteFile(filepath.Join(cfg.Out, "report.md"), []byte(md.String()), 0o644); err != nil {
		return fmt.Errorf("write markdown report: %w", err)
	}
	return nil
}

// writeMarkdown writes the report as a Markdown table (the shape BENCHMARKS.md uses).
func writeMarkdown(w io.Writer, rep *Report) {
	m := rep.Machine
	fmt.Fprintf(w, "Command: `%s`\n\n", rep.Command)
	fmt.Fprintf(w, "Machine: %d cores, %d MiB, %s, Linux %s, %s, commit %s, load average at start %s; origin in the %s process.\n\n",
		m.Cores, m.MemoryMiB, m.CPUModel, m.Kernel, m.GoVersion, shortCommit(m), m.LoadAvg, rep.OriginProcess)
	fmt.Fprintln(w, "| scenario | metric | unit | relay | direct / baseline | ratio | pipe | ÷ pipe | goal |")
	fmt.Fprintln(w, "|---|---|---|---:|---:|---:|---:|---:|---|")
	for _, s := range rep.Scenarios {
		if s.Error != "" {
			fmt.Fprintf(w, "| %s | FAILED: %s | | | | | | | |\n", s.Name, firstLine(s.Error))
		}
		for _, r := range s.Rows {
			base := baseLabel(r)
			ratio := "–"
			if r.Direct != 0 {
				ratio = fmt.Sprintf("%.2f×", r.Ratio)
			}
			goal := r.Goal
			if r.GoalMet != nil {
				goal += map[bool]string{true: " ✓", false: " ✗"}[*r.GoalMet]
			}
			pipe, pratio := pipeCells(r)
			fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", s.Name, r.Metric, r.Unit, fmtNum(r.Relay), base, ratio, pipe, pratio, goal)
		}
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "| scenario | generator CPU | relay CPU | relay RSS MiB | agent CPU | origin CPU | notes |")
	fmt.Fprintln(w, "|---|---:|---:|---:|---:|---:|---|")
	pct := func(f *ProcFigures) string {
		if f == nil {
			return "–"
		}
		return fmt.Sprintf("%.0f%%", 100*f.CPUShare)
	}
	for _, s := range rep.Scenarios {
		rss := "–"
		if s.Relay != nil {
			rss = fmt.Sprintf("%.1f", float64(s.Relay.RSSKiB)/1024)
		}
		fmt.Fprintf(w, "| %s | %.0f%% | %s | %s | %s | %s | %s |\n", s.Name, 100*s.Generator, pct(s.Relay), rss,
			pct(s.Agent), pct(s.Origin), strings.Join(s.Notes, "; "))
	}
}

// baseLabel prints the direct or baseline figure and what it is.
func baseLabel(r Row) string {
	switch {
	case r.Baseline == "" && r.Direct == 0:
		return "–" // a figure with no counterpart (per-tunnel costs, rates)
	case r.Baseline == "":
		return fmtNum(r.Direct)
	case r.Direct == 0:
		return r.Baseline
	default:
		return fmtNum(r.Direct) + " (" + r.Baseline + ")"
	}
}

func shortCommit(m Machine) string {
	c := m.Commit
	if len(c) > 12 {
		c = c[:12]
	}
	if c == "" {
		c = "unknown"
	}
	if m.Modified {
		c += "+dirty"
	}
	return c
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}

// fmtNum prints a figure with precision that suits its size.
func fmtNum(v float64) string {
	a := math.Abs(v)
	switch {
	case v == 0:
		return "0"
	case a >= 100:
		return fmt.Sprintf("%.0f", v)
	case a >= 10:
		return fmt.Sprintf("%.1f", v)
	default:
		return fmt.Sprintf("%.2f", v)
	}
}
