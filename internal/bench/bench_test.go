package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"encoding/xml"
	"fmt"
	"github.com/switchboard-relay/switchboard/internal/redistest"
	"io"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// binary is the switchboard binary TestMain built for the scenario tests; "" when the build failed.
var (
	binary   string
	buildErr error
)

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "bench-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "switchboard")
	out, err := exec.Command("go", "build", "-o", binary, "../../cmd/switchboard").CombinedOutput()
	if err != nil {
		buildErr = fmt.Errorf("go build ./cmd/switchboard: %v\n%s", err, out)
		binary = ""
	}
	code := m.Run()
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.RemoveAll(dir)
	os.Exit(code)
}

func TestHistogramQuantiles(t *testing.T) {
	var h Histogram
	for i := 100; i >= 1; i-- {
		h.Record(time.Duration(i) * time.Microsecond)
	}
	tests := []struct {
		q    float64
		want time.Duration
	}{
		{0, 1 * time.Microsecond},
		{0.5, 50 * time.Microsecond},
		{0.9, 90 * time.Microsecond},
		{0.99, 99 * time.Microsecond},
		{0.999, 100 * time.Microsecond},
		{1, 100 * time.Microsecond},
	}
	for _, tt := range tests {
		if got := h.Quantile(tt.q); got != tt.want {
			t.Fatalf("Quantile(%v) = %v, want %v", tt.q, got, tt.want)
		}
	}
	if got, want := h.Mean(), 50500*time.Nanosecond; got != want {
		t.Fatalf("Mean() = %v, want %v", got, want)
	}
	var empty Histogram
	if got := empty.Quantile(0.5); got != 0 {
		t.Fatalf("empty Quantile = %v, want 0", got)
	}
	var other Histogram
	other.Record(time.Millisecond)
	h.Merge(&other)
	if got, want := h.Quantile(1), time.Millisecond; got != want {
		t.Fatalf("after Merge, max = %v, want %v", got, want)
	}
	if got, want := h.Count(), 101; got != want {
		t.Fatalf("Count() = %d, want %d", got, want)
	}
}

// fakeConn serves canned response bytes to conn.readResponse.
func readCanned(t *testing.T, raw string) (status int, n int64, err error) {
	t.Helper()
	c := &conn{br: bufioReader(strings.NewReader(raw))}
	return c.readResponse()
}

func TestReadResponse(t *testing.T) {
	tests := []struct {
		name    string
		raw     string
		status  int
		n       int64
		wantErr error // nil, errConnClose, or errAny
	}{
		{"content-length", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", 200, 5, nil},
		{"lowercase header", "HTTP/1.1 404 Not Found\r\ncontent-length: 2\r\n\r\nno", 404, 2, nil},
		{"chunked with trailer", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;x=y\r\nhello\r\n3\r\nabc\r\n0\r\nX-T: 1\r\n\r\n", 200, 8, nil},
		{"no content", "HTTP/1.1 204 No Content\r\n\r\n", 204, 0, nil},
		{"connection close", "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nConnection: close\r\n\r\nx", 200, 1, errConnClose},
		{"body to EOF", "HTTP/1.0 200 OK\r\n\r\nabcdef", 200, 6, errConnClose},
		{"garbage", "SSH-2.0-OpenSSH\r\n", 0, 0, errAny},
		{"bad length", "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", 0, 0, errAny},
		{"short body", "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", 200, 3, errAny},
		{"bad chunk", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 200, 0, errAny},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, n, err := readCanned(t, tt.raw)
			switch {
			case tt.wantErr == errAny:
				if err == nil || err == errConnClose {
					t.Fatalf("err = %v, want a parse error", err)
				}
				return
			case err != tt.wantErr:
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			if status != tt.status {
				t.Fatalf("status = %d, want %d", status, tt.status)
			}
			if n != tt.n {
				t.Fatalf("body = %d bytes, want %d", n, tt.n)
			}
		})
	}
}

// errAny marks a test case that expects some error.
var errAny = fmt.Errorf("any error")

func FuzzReadResponse(f *testing.F) {
	f.Add("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello")
	f.Add("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
	f.Add("HTTP/1.1 204 No Content\r\n\r\n")
	f.Fuzz(func(t *testing.T, raw string) {
		_, n, _ := readCanned(t, raw)
		if n < 0 || n > int64(len(raw)) {
			t.Fatalf("body length %d out of range for %d input bytes", n, len(raw))
		}
	})
}

func TestRunLoadAgainstOrigin(t *testing.T) {
	o, err := startLocalOrigin()
	if err != nil {
		t.Fatal(err)
	}
	defer o.Close()
	res, err := runLoad(t.Context(), loadSpec{
		Addr: o.Addr, Request: buildGET(o.Addr, "/small", ""), Workers: 4,
		Duration: 300 * time.Millisecond, MaxCount: 100_000, Warmup: 2,
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.OK == 0 || res.Errors != 0 {
		t.Fatalf("ok %d, errors %d; want ok > 0 and no errors", res.OK, res.Errors)
	}
	if got, want := int64(res.Lat.Count()), res.OK; got != want {
		t.Fatalf("latency samples = %d, want one per request (%d)", got, want)
	}
	if res.RPS() <= 0 || res.Lat.Quantile(0.5) <= 0 {
		t.Fatalf("rps %v, p50 %v: want both positive", res.RPS(), res.Lat.Quantile(0.5))
	}

	// The budget bounds the count.
	res, err = runLoad(t.Context(), loadSpec{
		Addr: o.Addr, Request: buildGET(o.Addr, "/small", ""), Workers: 3, Duration: 10 * time.Second, MaxCount: 50,
	})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := res.OK, int64(50); got != want {
		t.Fatalf("with MaxCount 50, ok = %d, want %d", got, want)
	}
}

func TestOriginStreams(t *testing.T) {
	o, err := startLocalOrigin()
	if err != nil {
		t.Fatal(err)
	}
	defer o.Close()
	ctx := t.Context()
	sse, err := sseRun(ctx, "http://"+o.Addr+"/sse?interval=100ms&n=3", "", 2, 3)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := sse.lat.Count(), 6; got != want {
		t.Fatalf("sse events = %d, want %d", got, want)
	}
	ws, err := wsRun(ctx, "ws://"+o.Addr+"/ws", "", 2, 200*time.Millisecond, 1000)
	if err != nil {
		t.Fatal(err)
	}
	if ws.lat.Count() == 0 || ws.rate() <= 0 {
		t.Fatalf("ws echoes = %d, rate %v: want some", ws.lat.Count(), ws.rate())
	}
	d, err := transfer(ctx, "GET", "http://"+o.Addr+"/bytes?n=3000000", "", 3_000_000)
	if err != nil || d <= 0 {
		t.Fatalf("download: %v, %v", d, err)
	}
	d, err = transfer(ctx, "POST", "http://"+o.Addr+"/sink", "", 3_000_000)
	if err != nil || d <= 0 {
		t.Fatalf("upload: %v, %v", d, err)
	}
}

// sampleReport is a report with every kind of row, for the renderers.
func sampleReport() *Report {
	met := row("rps c=50", "req/s", 6000, 10000, true).withPipe(3000).withGoal("≥ 1.0× pipe", true)
	return &Report{
		Started: time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC), Command: "switchboard bench --tiny",
		Machine: Machine{Cores: 2, MemoryMiB: 1024, GoVersion: "go1.26", Commit: "0123456789abcdef"},
		Scenarios: []*Result{
			{Name: "rps", Rows: []Row{met, row("p50 c=50", "µs", 300, 100, false)}, Generator: 0.3,
				Relay: &ProcFigures{RSSKiB: 20480, CPUShare: 0.5}},
			{Name: "idle", Rows: []Row{row("RSS per tunnel", "KiB", 25, 0, false).withGoal("≤ 20 KiB", false)},
				Notes: []string{"a <note> & more"}},
			{Name: "storm", Error: "boom\nsecond line"},
		},
	}
}

func TestRowRatio(t *testing.T) {
	tests := []struct {
		relay, direct, want float64
	}{{6000, 10000, 0.6}, {5, 0, 0}, {0, 4, 0}}
	for _, tt := range tests {
		if got := row("m", "u", tt.relay, tt.direct, true).Ratio; math.Abs(got-tt.want) > 1e-12 {
			t.Fatalf("ratio(%v, %v) = %v, want %v", tt.relay, tt.direct, got, tt.want)
		}
	}
}

func TestReportFiles(t *testing.T) {
	rep := sampleReport()
	var table bytes.Buffer
	writeTable(&table, rep)
	for _, want := range []string{"rps c=50", "0.60×", "FAILED: boom", "✓", "✗", "a <note> & more"} {
		if !strings.Contains(table.String(), want) {
			t.Fatalf("table lacks %q:\n%s", want, table.String())
		}
	}
	dir := t.TempDir()
	if err := writeFiles(rep, Config{Out: dir}, io.Discard); err != nil {
		t.Fatal(err)
	}
	svg, err := os.ReadFile(filepath.Join(dir, "report.svg"))
	if err != nil {
		t.Fatal(err)
	}
	dec := xml.NewDecoder(bytes.NewReader(svg))
	for {
		_, err := dec.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("report.svg is not well-formed XML: %v", err)
		}
	}
	var back Report
	js, err := os.ReadFile(filepath.Join(dir, "report.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(js, &back); err != nil {
		t.Fatal(err)
	}
	if got, want := back.Scenarios[0].Rows[0].Ratio, 0.6; got != want {
		t.Fatalf("JSON ratio = %v, want %v", got, want)
	}
	md, err := os.ReadFile(filepath.Join(dir, "report.md"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(md), "| rps | rps c=50 | req/s | 6000 | 10000 | 0.60× | 3000 | 2.00× | ≥ 1.0× pipe ✓ |") {
		t.Fatalf("report.md lacks the rps row:\n%s", md)
	}
}

func TestConfigDefaults(t *testing.T) {
	full := Config{}.withDefaults()
	tiny := Config{Tiny: true, IdleTunnels: 7}.withDefaults()
	tests := []struct {
		name      string
		got, want any
	}{
		{"scenarios", len(full.Scenarios), len(AllScenarios)},
		{"duration", full.Duration, 5 * time.Second},
		{"download", full.Download, int64(1 << 30)},
		{"idle is left to the open-file limit", full.IdleTunnels, 0},
		{"storm", full.StormHosts, 10_000},
		{"rolling", full.RollingHosts, 1_000},
		{"tiny rolling", tiny.RollingHosts, 30},
		{"tiny duration", tiny.Duration, time.Second},
		{"tiny idle keeps explicit size", tiny.IdleTunnels, 7},
		{"tiny churn", tiny.ChurnCycles, 100},
		{"tiny concurrency", len(tiny.Concurrency), 2},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Fatalf("%s = %v, want %v", tt.name, tt.got, tt.want)
		}
	}
	if err := Run(t.Context(), Config{Scenarios: []string{"nope"}}, io.Discard); err == nil {
		t.Fatal("Run with an unknown scenario succeeded")
	}
}

// TestIdleTunnelsForLimit: by default the idle scenario holds as many tunnels as the open-file limit lets the relay
// hold (it caps connections at 90 % of it), within bounds.
func TestIdleTunnelsForLimit(t *testing.T) {
	for _, tc := range []struct {
		limit uint64
		want  int
	}{
		{0, 10_000},         // unknown
		{20_000, 17_000},    // this project's CI machines: 17,500 met the relay's cap in an earlier run, 19,000 did not
		{1_048_576, 25_000}, // bounded
		{1_024, 870},
		{64, 100},
	} {
		if got := idleTunnelsFor(tc.limit); got != tc.want {
			t.Errorf("idleTunnelsFor(%d) = %d, want %d", tc.limit, got, tc.want)
		}
		if got := idleTunnelsFor(tc.limit); tc.limit >= 1_000 && uint64(got) > tc.limit*9/10 {
			t.Errorf("idleTunnelsFor(%d) = %d: past the relay's cap of 90 %% of the limit", tc.limit, got)
		}
	}
}

// TestCommandLineRepeatsWhatWasAsked: the report's command reproduces the run: every size the caller set, and
// nothing it left to the defaults.
func TestCommandLineRepeatsWhatWasAsked(t *testing.T) {
	got := strings.Join(commandLine(Config{
		Scenarios: []string{"idle", "rps"}, Duration: 2 * time.Second, Concurrency: []int{1, 50},
		IdleTunnels: 17_500, Download: 1 << 20, RelayArgs: []string{"--stream-window=1048576"}, Out: "r",
	}), " ")
	want := "bench idle rps --duration 2s --concurrency 1,50 --download 1048576 --idle-tunnels 17500 " +
		"--relay-arg --stream-window=1048576 --out r"
	if got != want {
		t.Fatalf("commandLine = %q, want %q", got, want)
	}
	if got := strings.Join(commandLine(Config{}), " "); got != "bench" {
		t.Fatalf("commandLine of the defaults = %q, want %q", got, "bench")
	}
}

func TestProcAndMachine(t *testing.T) {
	st, err := readProc(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if st.RSSKiB <= 0 || st.Threads <= 0 {
		t.Fatalf("own process: RSS %d KiB, %d threads; want both positive", st.RSSKiB, st.Threads)
	}
	m := machineFacts(t.Context())
	if m.Cores <= 0 || m.MemoryMiB <= 0 || m.GoVersion == "" {
		t.Fatalf("machine facts incomplete: %+v", m)
	}
}

// TestScenarios runs every scenario at CI size against the real binary and checks that its figures are sane: no
// error, rows present, and every ratio computed from two positive measured figures.
func TestScenarios(t *testing.T) {
	if testing.Short() {
		t.Skip("starts the relay as a process")
	}
	if binary == "" {
		t.Fatalf("no switchboard binary: %v", buildErr)
	}
	for _, name := range AllScenarios {
		t.Run(name, func(t *testing.T) {
			if name == "forward" || name == "rolling" {
				redistest.RequireServer(t) // the scenario starts its own
			}
			ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
			defer cancel()
			dir := t.TempDir()
			var out bytes.Buffer
			err := Run(ctx, Config{
				Scenarios: []string{name}, Exe: binary, Tiny: true, Duration: 500 * time.Millisecond,
				Out: dir, Concurrency: []int{1, 8},
			}, &out)
			if err != nil {
				logs, _ := filepath.Glob(filepath.Join(dir, "logs", "*.log"))
				for _, l := range logs {
					b, _ := os.ReadFile(l)
					t.Logf("%s:\n%s", filepath.Base(l), tail(b, 2000))
				}
				t.Fatalf("Run: %v\n%s", err, out.String())
			}
			t.Log("\n" + out.String())
			var rep Report
			js, err := os.ReadFile(filepath.Join(dir, "report.json"))
			if err != nil {
				t.Fatal(err)
			}
			if err := json.Unmarshal(js, &rep); err != nil {
				t.Fatal(err)
			}
			if len(rep.Scenarios) != 1 || len(rep.Scenarios[0].Rows) == 0 {
				t.Fatalf("report has no rows for %s", name)
			}
			ratios := 0
			for _, r := range rep.Scenarios[0].Rows {
				if r.Direct == 0 {
					continue
				}
				ratios++
				if r.Relay <= 0 || r.Direct <= 0 {
					t.Fatalf("%s: relay %v, direct %v: want both measured (positive)", r.Metric, r.Relay, r.Direct)
				}
				if got, want := r.Ratio, r.Relay/r.Direct; math.Abs(got-want) > 1e-9*want {
					t.Fatalf("%s: ratio %v, want %v", r.Metric, got, want)
				}
				// Every figure measured against the direct path is measured through the pipe too.
				if r.Baseline == "" && pipeScenarios[name] {
					if r.Pipe <= 0 {
						t.Fatalf("%s: pipe %v: want it measured beside direct", r.Metric, r.Pipe)
					}
					if got, want := r.PipeRatio, r.Relay/r.Pipe; math.Abs(got-want) > 1e-9*want {
						t.Fatalf("%s: relay ÷ pipe %v, want %v", r.Metric, got, want)
					}
				}
			}
			if ratios == 0 {
				t.Fatalf("%s reports no ratio", name)
			}
			if name == "bulk" { // both transfers through the copying pipe as well
				copying := 0
				for _, r := range rep.Scenarios[0].Rows {
					if strings.HasSuffix(r.Metric, ", copying pipe") && r.Pipe > 0 {
						copying++
					}
				}
				if copying != 2 {
					t.Fatalf("bulk reports %d transfers through the copying pipe, want 2", copying)
				}
			}
		})
	}
}

// pipeScenarios measure the pipe beside the direct path.
var pipeScenarios = map[string]bool{"rps": true, "latency": true, "bulk": true, "sse": true, "ws": true}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}

// TestExistingRelay drives a relay the bench did not start (Config.Relay), as against a deployment: the relay's
// process figures are absent, its metrics come from Config.RelayMetrics, and storm, which must restart the relay,
// is skipped with a note.
func TestExistingRelay(t *testing.T) {
	if testing.Short() {
		t.Skip("starts the relay as a process")
	}
	if binary == "" {
		t.Fatalf("no switchboard binary: %v", buildErr)
	}
	const secret = "existing-relay-test-secret-0123456789"
	ss, err := sockets(2)
	if err != nil {
		t.Fatal(err)
	}
	defer closeSockets(ss)
	addr, maddr := ss[0].Addr, ss[1].Addr
	p, err := startChild(binary, "relay", "", []string{"serve", "--listen", fdArg(0), "--metrics-listen", fdArg(1),
		"--upgrade-rate", "1000", "--upgrade-burst", "1000", "--max-conns-per-ip", "0"},
		[]string{"SWITCHBOARD_SECRET=" + secret, "SWITCHBOARD_LOG_LEVEL=warn"}, files(ss)...)
	if err != nil {
		t.Fatal(err)
	}
	defer p.stop(5 * time.Second)
	if err := waitReady(t.Context(), "http://"+addr+"/healthz", p, 20*time.Second, nil); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	var out bytes.Buffer
	err = Run(t.Context(), Config{
		Scenarios: []string{"rps", "idle", "storm"}, Exe: binary, Tiny: true, Duration: 300 * time.Millisecond,
		Concurrency: []int{4}, IdleTunnels: 20, Relay: "http://" + addr, RelayMetrics: "http://" + maddr,
		Secret: secret, JSON: filepath.Join(dir, "r.json"),
	}, &out)
	if err != nil {
		t.Fatalf("Run: %v\n%s", err, out.String())
	}
	var rep Report
	js, err := os.ReadFile(filepath.Join(dir, "r.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(js, &rep); err != nil {
		t.Fatal(err)
	}
	if got, want := len(rep.Scenarios), 3; got != want {
		t.Fatalf("%d scenarios in the report, want %d", got, want)
	}
	rps, idle, storm := rep.Scenarios[0], rep.Scenarios[1], rep.Scenarios[2]
	if len(rps.Rows) == 0 || rps.Rows[0].Relay <= 0 || rps.Relay != nil {
		t.Fatalf("rps against an existing relay: rows %v, relay figures %v; want rows and no process figures", rps.Rows, rps.Relay)
	}
	var goroutines bool
	for _, r := range idle.Rows {
		goroutines = goroutines || strings.HasPrefix(r.Metric, "goroutines per tunnel")
	}
	if !goroutines {
		t.Fatalf("idle against an existing relay lacks metrics rows: %+v", idle.Rows)
	}
	if len(storm.Rows) != 0 || len(storm.Notes) == 0 {
		t.Fatalf("storm against an existing relay: rows %v, notes %v; want skipped with a note", storm.Rows, storm.Notes)
	}
	if p.exited() {
		t.Fatalf("the existing relay was stopped by the bench: %s", p.describe())
	}
}
