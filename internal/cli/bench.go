package cli

import (
	"context"
	"time"

	"github.com/switchboard-relay/switchboard/internal/bench"
)

// BenchCmd is `switchboard bench`.
type BenchCmd struct {
	Scenarios       []string      `arg:"" optional:"" help:"Scenarios to run: rps, latency, bulk, sse, ws, tcp, idle, churn, storm, forward, rolling (default: all; forward and rolling need redis-server)."`
	Duration        time.Duration `help:"Length of each measured phase (default 5s; 1s with --tiny)."`
	Out             string        `help:"Directory for report.json, report.svg and logs." type:"path"`
	JSON            string        `help:"File for the JSON report ('-' for stdout)."`
	Relay           string        `help:"Drive an existing relay at this base URL instead of starting one." env:"SWITCHBOARD_BENCH_RELAY"`
	RelayMetrics    string        `help:"Metrics base URL of that relay, for heap and goroutine figures."`
	Secret          string        `help:"HS256 secret of that relay." env:"SWITCHBOARD_SECRET"`
	RelayArg        []string      `help:"Extra flag for every relay the bench starts (repeatable)."`
	Tiny            bool          `help:"Run every scenario at a tiny size (seconds), as CI does."`
	Concurrency     []int         `help:"Concurrency levels of rps (default 1,10,50,200)."`
	MaxRequests     int64         `help:"Bound on requests per rps or latency phase."`
	Download        int64         `help:"Bulk download size in bytes (default 1 GiB)."`
	Upload          int64         `help:"Bulk upload size in bytes (default 256 MiB)."`
	SSEClients      int           `name:"sse-clients" help:"Concurrent SSE streams (default 100)."`
	WSClients       int           `name:"ws-clients" help:"Concurrent WebSocket echo clients (default 10)."`
	IdleTunnels     int           `help:"Tunnels held by the idle scenario (default: as many as the open-file limit allows, at most 25000)."`
	ChurnCycles     int           `help:"Connect/disconnect cycles of churn (default 2000)."`
	StormHosts      int           `help:"Hosts reconnecting in the storm scenario (default 10000)."`
	RollingHosts    int           `help:"Hosts connected during the rolling restart (default 1000)."`
	OriginServe     string        `hidden:"" help:"Serve only the bench origin on this address (used by the bench itself)."`
	PipeServe       string        `hidden:"" help:"Serve only a byte-copy pipe on this address (used by the bench itself)."`
	PipeTo          string        `hidden:"" help:"Where --pipe-serve carries connections."`
	PipeCopy        bool          `hidden:"" help:"Make --pipe-serve copy through its memory instead of splicing."`
	OriginInProcess bool          `help:"Run the origin inside the bench process instead of as a child."`
	Profile         bool          `help:"Save relay CPU and heap profiles into --out."`
}

// Run runs the benchmark.
func (c *BenchCmd) Run(ctx context.Context, g *Globals) error {
	return bench.Run(ctx, bench.Config{
		Scenarios:       c.Scenarios,
		Duration:        c.Duration,
		Out:             c.Out,
		JSON:            c.JSON,
		Relay:           c.Relay,
		RelayMetrics:    c.RelayMetrics,
		Secret:          c.Secret,
		RelayArgs:       c.RelayArg,
		Tiny:            c.Tiny,
		Concurrency:     c.Concurrency,
		MaxRequests:     c.MaxRequests,
		Download:        c.Download,
		Upload:          c.Upload,
		SSEClients:      c.SSEClients,
		WSClients:       c.WSClients,
		IdleTunnels:     c.IdleTunnels,
		ChurnCycles:     c.ChurnCycles,
		StormHosts:      c.StormHosts,
		RollingHosts:    c.RollingHosts,
		OriginServe:     c.OriginServe,
		PipeServe:       c.PipeServe,
		PipeTo:          c.PipeTo,
		PipeCopy:        c.PipeCopy,
		OriginInProcess: c.OriginInProcess,
		Profile:         c.Profile,
	}, g.stdout)
}
