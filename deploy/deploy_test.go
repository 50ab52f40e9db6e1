// Package deploy holds no code: its test checks the files operators deploy with (Dockerfile, scripts/release.sh,
// deploy/compose, deploy/fly, deploy/systemd) as far as this machine can without a container runtime or Fly, and the
// monitoring files (deploy/grafana, deploy/prometheus) with promtool and a real relay (monitoring_test.go).
// deploy/haproxy is exercised for real by internal/cli's TestHAProxyInFront; deploy/kubernetes has its own module.
package deploy

import (
	"bytes"
	"crypto/sha256"
	"debug/buildinfo"
	"debug/elf"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/BurntSushi/toml"
)

// root is the module root, the parent of this directory.
const root = ".."

// requireTool returns the path of a program the test needs, or skips the test with one line naming the Debian
// package to install; under CI (CI set) a missing program fails the test instead.
func requireTool(t *testing.T, name, pkg string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err == nil {
		return path
	}
	msg := fmt.Sprintf("%s not found in PATH; install the Debian package %s (apt-get install %s) to run this test", name, pkg, pkg)
	if os.Getenv("CI") != "" {
		t.Fatal(msg + " (CI is set, so this is a failure)")
	}
	t.Skip(msg)
	return ""
}

var release struct {
	once sync.Once
	dir  string
	out  string
	err  error
}

const releaseVersion = "v9.8.7-test"

// releaseBuild runs scripts/release.sh once for two targets, this machine's and another OS's, and returns its
// output directory.
func releaseBuild(t *testing.T) string {
	t.Helper()
	release.once.Do(func() {
		release.dir, release.err = os.MkdirTemp("", "switchboard-release")
		if release.err != nil {
			return
		}
		other := "windows/arm64"
		if runtime.GOOS == "windows" {
			other = "darwin/arm64"
		}
		cmd := exec.Command("bash", filepath.Join(root, "scripts", "release.sh"))
		cmd.Env = append(os.Environ(), "TARGETS="+runtime.GOOS+"/"+runtime.GOARCH+" "+other, "OUT="+release.dir,
			"VERSION="+releaseVersion, "REVISION=0123456789abcdef0123456789abcdef01234567")
		b, err := cmd.CombinedOutput()
		release.out, release.err = string(b), err
	})
	if release.err != nil {
		t.Fatalf("scripts/release.sh: %v\n%s", release.err, release.out)
	}
	return release.dir
}

func TestMain(m *testing.M) {
	code := m.Run()
	if release.dir != "" {
		_ = os.RemoveAll(release.dir)
	}
	os.Exit(code)
}

// TestReleaseScript: the script cross-compiles, names files by version and target, writes SHA256SUMS that match,
// stamps the version (the binary for this machine prints it), and links statically without cgo.
func TestReleaseScript(t *testing.T) {
	dir := releaseBuild(t)
	sums, err := os.ReadFile(filepath.Join(dir, "SHA256SUMS"))
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(sums)), "\n")
	if len(lines) != 2 {
		t.Fatalf("SHA256SUMS has %d lines, want 2:\n%s", len(lines), sums)
	}
	var native string
	for _, l := range lines {
		sum, name, ok := strings.Cut(l, "  ")
		if !ok || !regexp.MustCompile(`^switchboard_`+regexp.QuoteMeta(releaseVersion)+`_[a-z]+_(amd64|arm64)(\.exe)?$`).MatchString(name) {
			t.Fatalf("SHA256SUMS line %q", l)
		}
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if h := sha256.Sum256(b); hex.EncodeToString(h[:]) != sum {
			t.Fatalf("%s: checksum does not match SHA256SUMS", name)
		}
		bi, err := buildinfo.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		settings := map[string]string{}
		for _, s := range bi.Settings {
			settings[s.Key] = s.Value
		}
		if settings["CGO_ENABLED"] != "0" || settings["-trimpath"] != "true" {
			t.Fatalf("%s built with %v: want CGO_ENABLED=0 and -trimpath", name, settings)
		}
		if strings.HasSuffix(name, "_"+runtime.GOOS+"_"+runtime.GOARCH) {
			native = filepath.Join(dir, name)
		}
	}
	if native == "" {
		t.Fatal("no binary for this machine")
	}
	out, err := exec.Command(native, "--version").Output()
	if err != nil || string(out) != releaseVersion+"\n" {
		t.Fatalf("--version: %q %v, want %q", out, err, releaseVersion)
	}
	if runtime.GOOS == "linux" {
		f, err := elf.Open(native)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		for _, p := range f.Progs {
			if p.Type == elf.PT_INTERP {
				t.Fatal("the linux binary has a dynamic loader (PT_INTERP): not static")
			}
		}
		if libs, _ := f.ImportedLibraries(); len(libs) > 0 {
			t.Fatalf("the linux binary needs %v", libs)
		}
	}
}

// dockerfile is the Dockerfile's instructions, continuation lines joined, comments dropped.
func dockerfile(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	var cur string
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(strings.TrimSpace(l), "#") {
			continue
		}
		if s, ok := strings.CutSuffix(l, "\\"); ok {
			cur += s
			continue
		}
		if cur += l; strings.TrimSpace(cur) != "" {
			out = append(out, strings.Join(strings.Fields(cur), " "))
		}
		cur = ""
	}
	return out
}

// TestDockerfile checks what can be checked without a container runtime: a multi-stage build whose binary comes
// from scripts/release.sh (static, as TestReleaseScript shows), a minimal final image with nothing but the binary,
// a non-root user, the switchboard entrypoint, and listeners on every address inside the container.
func TestDockerfile(t *testing.T) {
	ins := dockerfile(t)
	var froms []string
	var final []string // instructions of the last stage
	for _, in := range ins {
		if strings.HasPrefix(in, "FROM ") {
			froms = append(froms, in)
			final = nil
		}
		final = append(final, in)
	}
	if len(froms) < 2 {
		t.Fatalf("%d stages: want a build stage and a minimal final one", len(froms))
	}
	build := strings.Join(ins[:slices.Index(ins, froms[len(froms)-1])], "\n")
	if !strings.Contains(build, "scripts/release.sh") {
		t.Fatal("the build stage does not build with scripts/release.sh")
	}
	if f := froms[len(froms)-1]; !regexp.MustCompile(`^FROM (scratch|gcr\.io/distroless/static[-a-z0-9]*:nonroot)$`).MatchString(f) {
		t.Fatalf("final stage %q: want scratch or distroless static", f)
	}
	var user, entry string
	for _, in := range final {
		switch {
		case strings.HasPrefix(in, "USER "):
			user = strings.TrimPrefix(in, "USER ")
		case strings.HasPrefix(in, "ENTRYPOINT "):
			entry = strings.TrimPrefix(in, "ENTRYPOINT ")
		case strings.HasPrefix(in, "RUN "):
			t.Fatalf("final stage runs %q: it has no shell", in)
		case strings.HasPrefix(in, "COPY ") && !strings.HasPrefix(in, "COPY --from=build /switchboard /switchboard"):
			t.Fatalf("final stage copies more than the binary: %q", in)
		}
	}
	if uid, _, _ := strings.Cut(user, ":"); user == "" || uid == "0" || uid == "root" {
		t.Fatalf("USER %q: want a non-root user", user)
	}
	if entry != `["/switchboard"]` {
		t.Fatalf("ENTRYPOINT %s, want [\"/switchboard\"]", entry)
	}
	env := strings.Join(final, "\n")
	for _, want := range []string{"SWITCHBOARD_LISTEN=:8080", "SWITCHBOARD_METRICS_LISTEN=:9090"} {
		if !strings.Contains(env, want) {
			t.Fatalf("final stage does not set %s", want)
		}
	}
}

// knownEnv is every environment variable `switchboard serve --help` and `host --help` list, from the binary
// scripts/release.sh built for this machine.
func knownEnv(t *testing.T) map[string]bool {
	t.Helper()
	dir := releaseBuild(t)
	bin := filepath.Join(dir, fmt.Sprintf("switchboard_%s_%s_%s", releaseVersion, runtime.GOOS, runtime.GOARCH))
	known := map[string]bool{}
	for _, cmd := range []string{"serve", "host"} {
		out, err := exec.Command(bin, cmd, "--help").Output()
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range regexp.MustCompile(`\$(SWITCHBOARD_[A-Z0-9_]+)`).FindAllStringSubmatch(string(out), -1) {
			known[m[1]] = true
		}
	}
	return known
}

// TestFlyToml: replay mode, the internal listener on the private network only, a kill timeout above the drain,
// health on /readyz, machines never stopped for idleness, no secret in [env], and only variables serve knows.
func TestFlyToml(t *testing.T) {
	var fly struct {
		App         string `toml:"app"`
		KillSignal  string `toml:"kill_signal"`
		KillTimeout int    `toml:"kill_timeout"`
		Build       struct {
			Dockerfile string `toml:"dockerfile"`
		} `toml:"build"`
		Env         map[string]string `toml:"env"`
		HTTPService struct {
			InternalPort       int    `toml:"internal_port"`
			ForceHTTPS         bool   `toml:"force_https"`
			AutoStopMachines   string `toml:"auto_stop_machines"`
			AutoStartMachines  bool   `toml:"auto_start_machines"`
			MinMachinesRunning int    `toml:"min_machines_running"`
			Concurrency        struct {
				Type      string `toml:"type"`
				SoftLimit int    `toml:"soft_limit"`
				HardLimit int    `toml:"hard_limit"`
			} `toml:"concurrency"`
			Checks []struct {
				Method, Path, Interval, Timeout string
				GracePeriod                     string `toml:"grace_period"`
			} `toml:"checks"`
		} `toml:"http_service"`
		Metrics struct {
			Port int    `toml:"port"`
			Path string `toml:"path"`
		} `toml:"metrics"`
		VM []struct {
			Size   string `toml:"size"`
			Memory string `toml:"memory"`
		} `toml:"vm"`
		PrimaryRegion string `toml:"primary_region"`
	}
	md, err := toml.DecodeFile("fly/fly.toml", &fly)
	if err != nil {
		t.Fatal(err)
	}
	if u := md.Undecoded(); len(u) > 0 {
		t.Fatalf("keys this test does not know (check them, then add them here): %v", u)
	}
	if fly.Env["SWITCHBOARD_ROUTE_MODE"] != "fly-replay" {
		t.Fatal("not in replay mode")
	}
	if il := fly.Env["SWITCHBOARD_INTERNAL_LISTEN"]; !strings.HasPrefix(il, "fly-local-6pn:") {
		t.Fatalf("SWITCHBOARD_INTERNAL_LISTEN=%q: want the private network's address (fly-local-6pn:PORT)", il)
	}
	drain, err := time.ParseDuration(fly.Env["SWITCHBOARD_DRAIN_TIMEOUT"])
	if err != nil {
		t.Fatal(err)
	}
	if kill := time.Duration(fly.KillTimeout) * time.Second; fly.KillSignal != "SIGTERM" || kill <= drain+5*time.Second {
		t.Fatalf("kill_signal %s, kill_timeout %v: want SIGTERM and more than --drain-timeout %v + 5 s", fly.KillSignal, kill, drain)
	}
	if listen := fly.Env["SWITCHBOARD_LISTEN"]; listen != fmt.Sprintf(":%d", fly.HTTPService.InternalPort) {
		t.Fatalf("internal_port %d does not match SWITCHBOARD_LISTEN %q", fly.HTTPService.InternalPort, listen)
	}
	if len(fly.HTTPService.Checks) == 0 || fly.HTTPService.Checks[0].Path != "/readyz" {
		t.Fatal("no /readyz check")
	}
	if fly.HTTPService.AutoStopMachines != "off" || fly.HTTPService.MinMachinesRunning < 2 {
		t.Fatal("machines holding tunnels must not be stopped for idleness, and two must run")
	}
	known := knownEnv(t)
	for k := range fly.Env {
		if !known[k] {
			t.Fatalf("[env] %s is not a variable of switchboard serve", k)
		}
		if strings.Contains(k, "SECRET") || k == "SWITCHBOARD_DIRECTORY" {
			t.Fatalf("[env] %s: secrets go in `fly secrets set`, not fly.toml", k)
		}
	}
	if fly.Build.Dockerfile != "../../Dockerfile" {
		t.Fatalf("[build] dockerfile %q", fly.Build.Dockerfile)
	}
}

// TestCompose checks deploy/compose without docker: the shipped HAProxy configuration is the one mounted, every
// variable that configuration reads is set, the relays trust PROXY headers from HAProxy's fixed address only, and
// every relay variable is one serve knows.
func TestCompose(t *testing.T) {
	b, err := os.ReadFile("compose/compose.yaml")
	if err != nil {
		t.Fatal(err)
	}
	compose := string(b)
	if !strings.Contains(compose, "- ../haproxy/haproxy.cfg:/usr/local/etc/haproxy/haproxy.cfg:ro") {
		t.Fatal("compose does not mount deploy/haproxy/haproxy.cfg")
	}
	cfg, err := os.ReadFile("haproxy/haproxy.cfg")
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range regexp.MustCompile(`\$\{(SB_[A-Z0-9_]+)\}`).FindAllStringSubmatch(string(cfg), -1) {
		if !regexp.MustCompile(`(?m)^\s+` + m[1] + `: \S`).MatchString(compose) {
			t.Fatalf("haproxy.cfg reads %s, which compose does not set", m[1])
		}
	}
	ip := regexp.MustCompile(`ipv4_address: (\S+)`).FindStringSubmatch(compose)
	if ip == nil || !strings.Contains(compose, "SWITCHBOARD_PROXY_PROTOCOL_FROM: "+ip[1]+"/32") {
		t.Fatal("relays must accept PROXY headers from HAProxy's fixed address only")
	}
	if n := strings.Count(compose, "<<: *relay\n"); n != 3 {
		t.Fatalf("%d relays, want 3", n)
	}
	known := knownEnv(t)
	for _, m := range regexp.MustCompile(`(?m)^\s+(SWITCHBOARD_[A-Z0-9_]+):`).FindAllStringSubmatch(compose, -1) {
		if !known[m[1]] {
			t.Fatalf("%s is not a variable of switchboard serve", m[1])
		}
	}
}

// TestSystemdUnits: systemd-analyze verify accepts the units with no complaint at all (it exits 0 on many
// problems and only prints them), checked in a scratch root with the binary where the units expect it; and
// systemd-analyze security rates the sandboxing of both services "OK" or better (exposure at most 2.5).
func TestSystemdUnits(t *testing.T) {
	sa := requireTool(t, "systemd-analyze", "systemd")
	units, err := filepath.Glob("systemd/*.service")
	if err != nil || len(units) < 2 {
		t.Fatalf("units: %v %v", units, err)
	}
	sockets, _ := filepath.Glob("systemd/*.socket")
	units = append(units, sockets...)
	scratch := t.TempDir()
	for _, d := range []string{"etc/systemd/system", "usr/local/bin", "etc/switchboard", "usr/lib/systemd"} {
		if err := os.MkdirAll(filepath.Join(scratch, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// The system's own units (sysinit.target, …) that every service depends on.
	if out, err := exec.Command("cp", "-a", "/usr/lib/systemd/system", filepath.Join(scratch, "usr/lib/systemd/")).CombinedOutput(); err != nil {
		t.Fatalf("copy system units: %v %s", err, out)
	}
	bin := filepath.Join(releaseBuild(t), fmt.Sprintf("switchboard_%s_%s_%s", releaseVersion, runtime.GOOS, runtime.GOARCH))
	if out, err := exec.Command("cp", bin, filepath.Join(scratch, "usr/local/bin/switchboard")).CombinedOutput(); err != nil {
		t.Fatalf("%v %s", err, out)
	}
	for _, f := range []string{"relay.env", "host.env"} {
		if err := os.WriteFile(filepath.Join(scratch, "etc/switchboard", f), nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	var names []string
	for _, u := range units {
		b, err := os.ReadFile(u)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(scratch, "etc/systemd/system", filepath.Base(u)), b, 0o644); err != nil {
			t.Fatal(err)
		}
		names = append(names, filepath.Base(u))
	}
	cmd := exec.Command(sa, append([]string{"verify", "--root=" + scratch}, names...)...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil || out.Len() > 0 {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out.String())
	}
	for _, u := range names {
		if !strings.HasSuffix(u, ".service") {
			continue
		}
		out, err := exec.Command(sa, "security", "--offline=true", "--threshold=25", "--root="+scratch, u).CombinedOutput()
		m := regexp.MustCompile(`Overall exposure level for \S+: ([0-9.]+)`).FindSubmatch(out)
		if err != nil || m == nil {
			t.Fatalf("systemd-analyze security %s: %v\n%s", u, err, out)
		}
		if x, err := strconv.ParseFloat(string(m[1]), 64); err != nil || x > 2.5 {
			t.Fatalf("%s: exposure %s, want at most 2.5", u, m[1])
		}
	}
}
