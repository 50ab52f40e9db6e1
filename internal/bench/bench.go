// Package bench is `switchboard bench`: load scenarios that measure the relay against a direct connection to the
// same origin in the same run, and the report they produce (a table, JSON and an SVG plot).
//
// With no Config.Relay, Run starts everything it needs on loopback as child processes of its own binary: a relay
// (`switchboard serve`) per scenario, a host agent (`switchboard host`) for the scenarios that carry traffic, and
// the origin (`switchboard bench --origin-serve ADDR`, or inside the bench process when the binary cannot do that).
// The load generator and the simulated hosts of the idle, churn and storm scenarios run in the bench process, so
// its CPU share (reported per scenario) shows when a result is limited by the generator.
//
// Every scenario is bounded in count and in time and stops by itself.
package bench

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Config is one bench run. Every zero value has a documented default, applied by Run.
type Config struct {
	// Scenarios to run, in this order. Empty means all of AllScenarios.
	Scenarios []string
	// Duration of each measured phase (one concurrency level, one path). Zero means 5 s, or 1 s with Tiny.
	Duration time.Duration
	// Out is a directory for report.json, report.svg, report.md and the children's logs. Empty writes no files.
	Out string
	// JSON is a file for the JSON report, "-" for stdout. Empty means Out/report.json when Out is set.
	JSON string
	// Relay is the base URL (http://host:port) of an existing relay to drive. Empty starts one locally per scenario.
	// With an existing relay, storm is skipped (it restarts the relay) and process figures are unavailable.
	Relay string
	// RelayMetrics is the base URL of that relay's metrics listener, for heap and goroutine figures. Optional.
	RelayMetrics string
	// Secret is the HS256 secret tokens are signed with. Empty means SWITCHBOARD_SECRET, and else (local runs only)
	// a random one.
	Secret string
	// Exe is the switchboard binary to start children from. Empty means os.Executable().
	Exe string
	// RelayArgs are extra flags for every `switchboard serve` the bench starts.
	RelayArgs []string
	// Tiny shrinks every size to run in seconds (CI). Explicit sizes below still win.
	Tiny bool

	// Concurrency levels of the rps scenario. Empty means 1, 10, 50, 200 (Tiny: 1, 10).
	Concurrency []int
	// MaxRequests bounds each rps and latency phase. Zero means 5,000,000.
	MaxRequests int64
	// Download and Upload are the bulk sizes in bytes. Zero means 1 GiB and 256 MiB (Tiny: 16 MiB and 8 MiB).
	Download, Upload int64
	// SSEClients is the number of concurrent SSE streams. Zero means 100 (Tiny: 5).
	SSEClients int
	// WSClients is the number of concurrent WebSocket echo clients. Zero means 10 (Tiny: 2).
	WSClients int
	// IdleTunnels is the tunnel count of the idle scenario. Zero means as many as the open-file limit allows
	// (idleTunnelsFor; Tiny: 100).
	IdleTunnels int
	// ChurnCycles is the connect/disconnect count of the churn scenario. Zero means 2,000 (Tiny: 100).
	ChurnCycles int
	// StormHosts is the host count of the storm scenario. Zero means 10,000 (Tiny: 100).
	StormHosts int
	// RollingHosts is the host count of the rolling scenario. Zero means 1,000 (Tiny: 30).
	RollingHosts int

	// OriginServe, when set, makes Run serve only the bench origin on this address until ctx ends. The bench uses
	// it to run its origin as a child process (`switchboard bench --origin-serve ADDR`).
	OriginServe string
	// PipeServe and PipeTo, when set, make Run serve only a pipe (see ServePipe) from PipeServe to PipeTo until ctx
	// ends: `switchboard bench --pipe-serve ADDR --pipe-to ADDR`, how the bench starts its two pipe processes.
	PipeServe, PipeTo string
	// PipeCopy makes that pipe copy through its memory instead of splicing (the bulk scenario's copying pipe).
	PipeCopy bool
	// OriginInProcess runs the origin inside the bench process instead of as a child.
	OriginInProcess bool
	// Profile saves a CPU profile of the relay (from /debug/pprof on its metrics listener) over each relay-path
	// phase of rps, latency, bulk and ws into Out, named relay-SCENARIO-PHASE.pprof. Needs Out.
	Profile bool
}

// AllScenarios lists every scenario in its default order.
var AllScenarios = []string{"rps", "latency", "bulk", "sse", "ws", "tcp", "idle", "churn", "storm", "forward", "rolling"}

// scenarios maps a name to its implementation.
var scenarios = map[string]func(context.Context, *env) (*Result, error){
	"rps":     runRPS,
	"latency": runLatency,
	"bulk":    runBulk,
	"sse":     runSSE,
	"ws":      runWS,
	"tcp":     runTCP,
	"idle":    runIdle,
	"churn":   runChurn,
	"storm":   runStorm,
	"forward": runForward,
	"rolling": runRolling,
}

// withDefaults returns cfg with every zero value replaced by its default.
func (cfg Config) withDefaults() Config {
	pick := func(v, normal, tiny int) int {
		if v > 0 {
			return v
		}
		if cfg.Tiny {
			return tiny
		}
		return normal
	}
	if len(cfg.Scenarios) == 0 {
		cfg.Scenarios = slices.Clone(AllScenarios)
	}
	if cfg.Duration <= 0 {
		cfg.Duration = 5 * time.Second
		if cfg.Tiny {
			cfg.Duration = time.Second
		}
	}
	if len(cfg.Concurrency) == 0 {
		cfg.Concurrency = []int{1, 10, 50, 200}
		if cfg.Tiny {
			cfg.Concurrency = []int{1, 10}
		}
	}
	if cfg.MaxRequests <= 0 {
		cfg.MaxRequests = 5_000_000
	}
	if cfg.Download <= 0 {
		cfg.Download = 1 << 30
		if cfg.Tiny {
			cfg.Download = 16 << 20
		}
	}
	if cfg.Upload <= 0 {
		cfg.Upload = 256 << 20
		if cfg.Tiny {
			cfg.Upload = 8 << 20
		}
	}
	cfg.SSEClients = pick(cfg.SSEClients, 100, 5)
	cfg.WSClients = pick(cfg.WSClients, 10, 2)
	if cfg.Tiny {
		cfg.IdleTunnels = pick(cfg.IdleTunnels, 0, 100)
	} // else zero stays: Run sets it from the open-file limit (idleTunnelsFor)
	cfg.ChurnCycles = pick(cfg.ChurnCycles, 2_000, 100)
	cfg.StormHosts = pick(cfg.StormHosts, 10_000, 100)
	cfg.RollingHosts = pick(cfg.RollingHosts, 1_000, 30)
	return cfg
}

// env is what scenarios share during one Run.
type env struct {
	cfg         Config
	exe         string
	secret      string
	clientToken string
	logDir      string // "" discards children's output (its tail is still kept for errors)
	origin      *origin
	pipe        *pipeChain // two byte-copy processes in front of the origin

	progressMu sync.Mutex // scenarios report progress from several goroutines
	progress   io.Writer
}

// progressf prints one progress line.
func (e *env) progressf(format string, args ...any) {
	e.progressMu.Lock()
	defer e.progressMu.Unlock()
	fmt.Fprintf(e.progress, format+"\n", args...)
}

// Run runs the configured scenarios, printing progress and then a table to stdout (to stderr when the JSON report
// goes to stdout), and writes the JSON, Markdown and SVG reports. A failing scenario is reported and the others still run; Run then returns an error naming it.
func Run(ctx context.Context, cfg Config, stdout io.Writer) error {
	if cfg.OriginServe != "" {
		return ServeOrigin(ctx, cfg.OriginServe)
	}
	if cfg.PipeServe != "" {
		return ServePipe(ctx, cfg.PipeServe, cfg.PipeTo, cfg.PipeCopy)
	}
	asked := cfg
	cfg = cfg.withDefaults()
	for _, s := range cfg.Scenarios {
		if scenarios[s] == nil {
			return fmt.Errorf("unknown scenario %q (have %s)", s, strings.Join(AllScenarios, ", "))
		}
	}
	// With the JSON report on stdout, progress and the table go to stderr so that stdout stays one JSON document.
	human := stdout
	if cfg.JSON == "-" {
		human = os.Stderr
	}
	idleWant := cfg.IdleTunnels
	if idleWant == 0 {
		idleWant = maxIdleTunnels // as many as the limit allows, up to this
	}
	limit := raiseFileLimit(uint64(2*max(idleWant, cfg.StormHosts, 2*cfg.RollingHosts) + 4096))
	if cfg.IdleTunnels == 0 {
		cfg.IdleTunnels = idleTunnelsFor(limit)
	}
	e := &env{cfg: cfg, exe: cfg.Exe, secret: cfg.Secret, progress: human}
	if e.exe == "" {
		exe, err := os.Executable()
		if err != nil {
			return fmt.Errorf("find own binary: %w", err)
		}
		e.exe = exe
	}
	if e.secret == "" {
		e.secret = os.Getenv("SWITCHBOARD_SECRET")
	}
	if e.secret == "" {
		if cfg.Relay != "" {
			return errors.New("an existing relay needs its token secret (Config.Secret or SWITCHBOARD_SECRET)")
		}
		var b [32]byte
		_, _ = rand.Read(b[:])
		e.secret = hex.EncodeToString(b[:])
	}
	tok, err := mintClientToken(e.secret)
	if err != nil {
		return err
	}
	e.clientToken = tok
	if cfg.Out != "" {
		e.logDir = filepath.Join(cfg.Out, "logs")
		if err := os.MkdirAll(e.logDir, 0o755); err != nil {
			return fmt.Errorf("create report directory: %w", err)
		}
	}

	rep := &Report{
		Started: time.Now().UTC(),
		Command: "switchboard " + strings.Join(commandLine(asked), " "),
		Machine: machineFacts(ctx),
		Config:  cfg,
	}
	rep.Config.Secret = ""
	e.progressf("switchboard bench: %s on %d cores, %s; open-file limit %d",
		strings.Join(cfg.Scenarios, ", "), rep.Machine.Cores, rep.Machine.GoVersion, limit)

	o, err := e.startOrigin(ctx)
	if err != nil {
		return err
	}
	defer o.Close()
	e.origin = o
	rep.OriginProcess = "child"
	if o.PID == 0 {
		rep.OriginProcess = "bench"
	}
	if e.pipe, err = e.startPipe(ctx, false); err != nil {
		return err
	}
	defer e.pipe.stop()

	var failed []string
	for _, name := range cfg.Scenarios {
		if ctx.Err() != nil {
			break
		}
		e.progressf("== %s", name)
		t0 := time.Now()
		res, err := scenarios[name](ctx, e)
		if res == nil {
			res = &Result{}
		}
		res.Name = name
		res.Seconds = time.Since(t0).Seconds()
		if err != nil {
			res.Error = err.Error()
			failed = append(failed, name)
			e.progressf("%s failed: %v", name, err)
		}
		rep.Scenarios = append(rep.Scenarios, res)
	}
	rep.Finished = time.Now().UTC()

	fmt.Fprintln(human)
	writeTable(human, rep)
	if err := writeFiles(rep, cfg, stdout); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("bench interrupted: %w", err)
	}
	if len(failed) > 0 {
		return fmt.Errorf("scenarios failed: %s", strings.Join(failed, ", "))
	}
	return nil
}

// commandLine reconstructs the flags that reproduce cfg (the documented CLI spelling).
func commandLine(cfg Config) []string {
	args := []string{"bench"}
	args = append(args, cfg.Scenarios...)
	if cfg.Duration > 0 {
		args = append(args, "--duration", cfg.Duration.String())
	}
	if cfg.Tiny {
		args = append(args, "--tiny")
	}
	if len(cfg.Concurrency) > 0 {
		cs := make([]string, len(cfg.Concurrency))
		for i, c := range cfg.Concurrency {
			cs[i] = strconv.Itoa(c)
		}
		args = append(args, "--concurrency", strings.Join(cs, ","))
	}
	for _, f := range []struct {
		flag string
		v    int64
	}{
		{"--max-requests", cfg.MaxRequests}, {"--download", cfg.Download}, {"--upload", cfg.Upload},
		{"--sse-clients", int64(cfg.SSEClients)}, {"--ws-clients", int64(cfg.WSClients)},
		{"--idle-tunnels", int64(cfg.IdleTunnels)}, {"--churn-cycles", int64(cfg.ChurnCycles)},
		{"--storm-hosts", int64(cfg.StormHosts)}, {"--rolling-hosts", int64(cfg.RollingHosts)},
	} {
		if f.v > 0 {
			args = append(args, f.flag, strconv.FormatInt(f.v, 10))
		}
	}
	if cfg.Relay != "" {
		args = append(args, "--relay", cfg.Relay)
	}
	for _, a := range cfg.RelayArgs {
		args = append(args, "--relay-arg", a)
	}
	if cfg.OriginInProcess {
		args = append(args, "--origin-in-process")
	}
	if cfg.Profile {
		args = append(args, "--profile")
	}
	if cfg.Out != "" {
		args = append(args, "--out", cfg.Out)
	}
	return args
}

// maxIdleTunnels bounds the idle scenario's default count on machines whose open-file limit is far above what a
// run needs: the bench holds about 42 KiB and the relay about 25 KiB per tunnel.
const maxIdleTunnels = 25_000

// idleTunnelsFor is the idle scenario's default count: the largest the open-file limit lets the relay hold, which
// caps its connections at 90 % of its limit (the bench's children inherit the bench's), so 85 % of it leaves room
// for its listeners and the bench's own connections. An unknown limit (0) gives 10,000.
func idleTunnelsFor(limit uint64) int {
	if limit == 0 {
		return 10_000
	}
	return int(min(max(limit*85/100, 100), maxIdleTunnels))
}

// startOrigin starts the origin as a child process, falling back to one inside the bench process when the binary
// cannot serve it (or Config.OriginInProcess asks for that).
func (e *env) startOrigin(ctx context.Context) (*origin, error) {
	if !e.cfg.OriginInProcess {
		sock, err := newSocket()
		if err != nil {
			return nil, err
		}
		p, err := startChild(e.exe, "origin", e.logDir, []string{"bench", "--origin-serve", fdArg(0)}, nil, sock.file)
		if err == nil {
			if err := waitReady(ctx, "http://"+sock.Addr+"/small", p, 5*time.Second, nil); err == nil {
				return &origin{Addr: sock.Addr, PID: p.PID(), close: func() error {
					p.stop(2 * time.Second)
					sock.close()
					return nil
				}}, nil
			}
			p.kill()
		}
		sock.close()
		e.progressf("origin: this binary cannot serve it as a child; running it inside the bench process")
	}
	return startLocalOrigin()
}
