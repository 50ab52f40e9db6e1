package deploy

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	"go.yaml.in/yaml/v3"

	"github.com/switchboard-relay/switchboard/agent"
	"github.com/switchboard-relay/switchboard/internal/auth"
	"github.com/switchboard-relay/switchboard/internal/cli"
	"github.com/switchboard-relay/switchboard/internal/redistest"
	"github.com/switchboard-relay/switchboard/internal/relaytest"
	"github.com/switchboard-relay/switchboard/internal/tcpstream"
	"github.com/switchboard-relay/switchboard/internal/tunnel"
)

// The monitoring files operators load: a Grafana dashboard, Prometheus alert rules and their promtool unit tests.
var (
	dashboardFile  = filepath.Join(root, "deploy", "grafana", "switchboard.json")
	alertsFile     = filepath.Join(root, "deploy", "prometheus", "alerts.yml")
	alertTestsFile = filepath.Join(root, "deploy", "prometheus", "alerts_test.yml")
	operationsDoc  = filepath.Join(root, "docs", "operations.md")
)

// ruleFile is the part of a Prometheus rule file the tests read.
type ruleFile struct {
	Groups []struct {
		Name  string `yaml:"name"`
		Rules []struct {
			Alert       string            `yaml:"alert"`
			Record      string            `yaml:"record"`
			Expr        string            `yaml:"expr"`
			Labels      map[string]string `yaml:"labels"`
			Annotations map[string]string `yaml:"annotations"`
		} `yaml:"rules"`
	} `yaml:"groups"`
}

func readRules(t *testing.T) ruleFile {
	t.Helper()
	b, err := os.ReadFile(alertsFile)
	if err != nil {
		t.Fatal(err)
	}
	var rf ruleFile
	if err := yaml.Unmarshal(b, &rf); err != nil {
		t.Fatalf("%s: %v", alertsFile, err)
	}
	return rf
}

// dashboard is the part of a Grafana dashboard the tests read.
type dashboard struct {
	Title         string `json:"title"`
	UID           string `json:"uid"`
	SchemaVersion int    `json:"schemaVersion"`
	Templating    struct {
		List []struct {
			Name       string          `json:"name"`
			Type       string          `json:"type"`
			Query      json.RawMessage `json:"query"`
			Datasource *datasourceRef  `json:"datasource"`
		} `json:"list"`
	} `json:"templating"`
	Panels []panel `json:"panels"`
}

type panel struct {
	ID         int            `json:"id"`
	Type       string         `json:"type"`
	Title      string         `json:"title"`
	Datasource *datasourceRef `json:"datasource"`
	Targets    []struct {
		Expr       string         `json:"expr"`
		RefID      string         `json:"refId"`
		Datasource *datasourceRef `json:"datasource"`
	} `json:"targets"`
	Panels []panel `json:"panels"` // a collapsed row's
}

type datasourceRef struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

func readDashboard(t *testing.T) dashboard {
	t.Helper()
	b, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("%s: %v", dashboardFile, err)
	}
	return d
}

// panels is every panel of d, rows' children included, rows themselves left out.
func (d dashboard) panels() []panel {
	var out []panel
	var walk func([]panel)
	walk = func(ps []panel) {
		for _, p := range ps {
			if p.Type == "row" {
				walk(p.Panels)
				continue
			}
			out = append(out, p)
		}
	}
	walk(d.Panels)
	return out
}

// variableQuery is the PromQL of a query variable: a string, or {"query": "..."} as Grafana 10+ saves it.
func variableQuery(raw json.RawMessage) string {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s
	}
	var q struct {
		Query string `json:"query"`
	}
	_ = json.Unmarshal(raw, &q)
	return q.Query
}

// TestDashboard: the dashboard parses, is of a recent schema, takes its data source from a variable (so it imports
// into any Grafana), and every panel has that data source and queries; every query is valid PromQL (promtool).
func TestDashboard(t *testing.T) {
	d := readDashboard(t)
	if d.Title == "" || d.UID == "" {
		t.Fatalf("title %q, uid %q: both needed (the uid keeps links stable across imports)", d.Title, d.UID)
	}
	if d.SchemaVersion < 39 {
		t.Fatalf("schemaVersion %d, want ≥ 39", d.SchemaVersion)
	}
	vars := map[string]string{}
	for _, v := range d.Templating.List {
		vars[v.Name] = v.Type
		if v.Type == "datasource" && variableQuery(v.Query) != "prometheus" {
			t.Errorf("variable %s: data source type %q, want prometheus", v.Name, variableQuery(v.Query))
		}
		if v.Type == "query" && (v.Datasource == nil || v.Datasource.UID != "${datasource}") {
			t.Errorf("variable %s: datasource %+v, want uid ${datasource}", v.Name, v.Datasource)
		}
	}
	for name, typ := range map[string]string{"datasource": "datasource", "job": "query", "instance": "query"} {
		if vars[name] != typ {
			t.Errorf("variable %s: type %q, want %q", name, vars[name], typ)
		}
	}
	ids := map[int]string{}
	ps := d.panels()
	if len(ps) < 20 {
		t.Fatalf("%d panels", len(ps))
	}
	for _, p := range ps {
		if prev, dup := ids[p.ID]; dup {
			t.Errorf("panels %q and %q share id %d", prev, p.Title, p.ID)
		}
		ids[p.ID] = p.Title
		if p.Title == "" {
			t.Errorf("panel %d has no title", p.ID)
		}
		if p.Datasource == nil || p.Datasource.UID != "${datasource}" || p.Datasource.Type != "prometheus" {
			t.Errorf("panel %q: datasource %+v, want prometheus ${datasource}", p.Title, p.Datasource)
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, tg := range p.Targets {
			if strings.TrimSpace(tg.Expr) == "" || tg.RefID == "" {
				t.Errorf("panel %q: a target without expr or refId", p.Title)
			}
			if tg.Datasource == nil || tg.Datasource.UID != "${datasource}" {
				t.Errorf("panel %q, query %s: datasource %+v, want ${datasource}", p.Title, tg.RefID, tg.Datasource)
			}
		}
	}
	if t.Failed() {
		return
	}

	// promtool parses the queries as recording rules, with Grafana's variables given values.
	promtool := requireTool(t, "promtool", "prometheus")
	var rules strings.Builder
	rules.WriteString("groups:\n  - name: dashboard\n    rules:\n")
	for _, p := range ps {
		for _, tg := range p.Targets {
			fmt.Fprintf(&rules, "      - record: dashboard:panel_%d_%s\n        expr: %s\n", p.ID, tg.RefID, yamlQuote(grafanaExpand(tg.Expr)))
		}
	}
	f := filepath.Join(t.TempDir(), "dashboard_rules.yml")
	if err := os.WriteFile(f, []byte(rules.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(promtool, "check", "rules", f).CombinedOutput(); err != nil {
		t.Fatalf("promtool check rules on the dashboard's queries: %v\n%s", err, out)
	}
}

// grafanaExpand gives Grafana's variables values, as Grafana does before it sends a query.
func grafanaExpand(expr string) string {
	return strings.NewReplacer("$__rate_interval", "5m", "$__interval", "1m", "${job}", "switchboard", "$job", "switchboard",
		"${instance}", ".*", "$instance", ".*").Replace(expr)
}

// yamlQuote quotes s as a YAML double-quoted scalar.
func yamlQuote(s string) string {
	b, _ := json.Marshal(s) // a JSON string is a valid YAML double-quoted scalar
	return string(b)
}

// TestAlertRules: promtool accepts the rules and passes their unit tests; every alert says what it is, how bad,
// and where its runbook is (an anchor that exists in docs/operations.md), and has a unit test in which it fires
// and one in which it stays silent.
func TestAlertRules(t *testing.T) {
	rf := readRules(t)
	doc, err := os.ReadFile(operationsDoc)
	if err != nil {
		t.Fatal(err)
	}
	anchors := markdownAnchors(string(doc))
	var alerts []string
	for _, g := range rf.Groups {
		for _, r := range g.Rules {
			if r.Alert == "" {
				continue
			}
			alerts = append(alerts, r.Alert)
			for _, a := range []string{"summary", "description", "runbook_url"} {
				if r.Annotations[a] == "" {
					t.Errorf("alert %s has no %s", r.Alert, a)
				}
			}
			if s := r.Labels["severity"]; s != "warning" && s != "critical" {
				t.Errorf("alert %s: severity %q, want warning or critical", r.Alert, s)
			}
			const prefix = "https://github.com/switchboard-relay/switchboard/blob/main/docs/operations.md#"
			anchor, ok := strings.CutPrefix(r.Annotations["runbook_url"], prefix)
			if !ok {
				t.Errorf("alert %s: runbook_url %q, want %s…", r.Alert, r.Annotations["runbook_url"], prefix)
			} else if !anchors[anchor] {
				t.Errorf("alert %s: runbook_url anchor #%s is no heading of docs/operations.md", r.Alert, anchor)
			}
		}
	}
	if len(alerts) < 8 {
		t.Fatalf("%d alerts in %s", len(alerts), alertsFile)
	}

	// Every alert has a case where it fires and one where it does not.
	b, err := os.ReadFile(alertTestsFile)
	if err != nil {
		t.Fatal(err)
	}
	var tests struct {
		RuleFiles []string `yaml:"rule_files"`
		Tests     []struct {
			AlertRuleTest []struct {
				Alertname string `yaml:"alertname"`
				ExpAlerts []any  `yaml:"exp_alerts"`
			} `yaml:"alert_rule_test"`
		} `yaml:"tests"`
	}
	if err := yaml.Unmarshal(b, &tests); err != nil {
		t.Fatalf("%s: %v", alertTestsFile, err)
	}
	if !slices.Equal(tests.RuleFiles, []string{"alerts.yml"}) {
		t.Errorf("%s: rule_files %v, want [alerts.yml]", alertTestsFile, tests.RuleFiles)
	}
	fires, silent := map[string]bool{}, map[string]bool{}
	for _, tc := range tests.Tests {
		for _, a := range tc.AlertRuleTest {
			if !slices.Contains(alerts, a.Alertname) {
				t.Errorf("%s tests %s, which alerts.yml does not define", alertTestsFile, a.Alertname)
			}
			if len(a.ExpAlerts) > 0 {
				fires[a.Alertname] = true
			} else {
				silent[a.Alertname] = true
			}
		}
	}
	for _, a := range alerts {
		if !fires[a] {
			t.Errorf("alert %s: no unit test in which it fires", a)
		}
		if !silent[a] {
			t.Errorf("alert %s: no unit test in which it stays silent", a)
		}
	}

	promtool := requireTool(t, "promtool", "prometheus")
	for _, args := range [][]string{{"check", "rules", "alerts.yml"}, {"test", "rules", "alerts_test.yml"}} {
		cmd := exec.Command(promtool, args...)
		cmd.Dir = filepath.Dir(alertsFile)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
}

// markdownAnchors returns the anchors GitHub gives the headings of a Markdown document: lowercased, punctuation
// other than '-' and '_' dropped, spaces turned into '-'.
func markdownAnchors(doc string) map[string]bool {
	anchors := map[string]bool{}
	inFence := false
	for line := range strings.Lines(doc) {
		line = strings.TrimRight(line, "\n")
		if strings.HasPrefix(line, "```") {
			inFence = !inFence
			continue
		}
		if inFence || !strings.HasPrefix(line, "#") {
			continue
		}
		text := strings.TrimSpace(strings.TrimLeft(line, "#"))
		var b strings.Builder
		for _, r := range strings.ToLower(text) {
			switch {
			case r == ' ':
				b.WriteRune('-')
			case r == '-' || r == '_' || r >= 'a' && r <= 'z' || r >= '0' && r <= '9':
				b.WriteRune(r)
			}
		}
		anchors[b.String()] = true
	}
	return anchors
}

// queriedMetrics returns the metric names an expression selects. It reads PromQL the way the tests need it, not
// as a full parser: string literals, label matchers, ranges and grouping clauses are dropped; what remains that
// is a name, not a function, keyword or Grafana variable, is a metric. label_values(metric, label) (Grafana's
// variable query) yields its metric.
func queriedMetrics(expr string) []string {
	if m := labelValues.FindStringSubmatch(expr); m != nil {
		expr = m[1]
	}
	for _, re := range []*regexp.Regexp{promString, promMatchers, promRange, promGrouping} {
		expr = re.ReplaceAllString(expr, " ")
	}
	var names []string
	for _, loc := range promToken.FindAllStringIndex(expr, -1) {
		tok := expr[loc[0]:loc[1]]
		if tok[0] == '$' || tok[0] >= '0' && tok[0] <= '9' || promKeywords[strings.ToLower(tok)] {
			continue
		}
		if strings.HasPrefix(strings.TrimLeft(expr[loc[1]:], " \t\n"), "(") { // a function or aggregation
			continue
		}
		if !slices.Contains(names, tok) {
			names = append(names, tok)
		}
	}
	return names
}

var (
	labelValues  = regexp.MustCompile(`^\s*label_values\((.*),\s*[a-zA-Z_][a-zA-Z0-9_]*\s*\)\s*$`)
	promString   = regexp.MustCompile("\"(?:[^\"\\\\]|\\\\.)*\"|'(?:[^'\\\\]|\\\\.)*'|`[^`]*`")
	promMatchers = regexp.MustCompile(`\{[^}]*\}`)
	promRange    = regexp.MustCompile(`\[[^\]]*\]`)
	promGrouping = regexp.MustCompile(`(?i)\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)`)
	promToken    = regexp.MustCompile(`\$\{?[a-zA-Z_]+\}?|[0-9][0-9a-zA-Z_.]*|[a-zA-Z_:][a-zA-Z0-9_:]*`)
	promKeywords = map[string]bool{"and": true, "or": true, "unless": true, "bool": true, "offset": true, "by": true,
		"without": true, "on": true, "ignoring": true, "group_left": true, "group_right": true, "inf": true, "nan": true,
		"atan2": true}
)

// TestQueriedMetrics: the name reader finds metrics, and only metrics, in the shapes the dashboard and alerts use.
func TestQueriedMetrics(t *testing.T) {
	for _, tc := range []struct {
		expr string
		want []string
	}{
		{`up{job="switchboard"} == 0`, []string{"up"}},
		{`sum by (go_version, instance) (switchboard_build_info{go_version=~"go1.*", job=~"$job"})`, []string{"switchboard_build_info"}},
		{`histogram_quantile(0.99, sum by (le) (rate(a_seconds_bucket{x="y}"}[$__rate_interval])))`, []string{"a_seconds_bucket"}},
		{"sum(a) / sum(b offset 5m) > 0.7 * 1e3 and on (job) c_total", []string{"a", "b", "c_total"}},
		{`a - time() < 14 * 86400`, []string{"a"}},
		{`label_values(switchboard_build_info{job=~"$job"}, instance)`, []string{"switchboard_build_info"}},
		{`absent(up{job="switchboard"})`, []string{"up"}},
		{`max by (job) (a) < 1 unless ignoring (instance) b`, []string{"a", "b"}},
	} {
		if got := queriedMetrics(tc.expr); !slices.Equal(got, tc.want) {
			t.Errorf("queriedMetrics(%q) = %q, want %q", tc.expr, got, tc.want)
		}
	}
}

// allQueries is every PromQL expression of the dashboard (panels and variables) and the alert rules, each with
// where it comes from.
func allQueries(t *testing.T) map[string]string {
	t.Helper()
	q := map[string]string{}
	d := readDashboard(t)
	for _, v := range d.Templating.List {
		if v.Type == "query" {
			q[variableQuery(v.Query)] = "dashboard variable " + v.Name
		}
	}
	for _, p := range d.panels() {
		for _, tg := range p.Targets {
			q[tg.Expr] = fmt.Sprintf("dashboard panel %q", p.Title)
		}
	}
	for _, g := range readRules(t).Groups {
		for _, r := range g.Rules {
			q[r.Expr] = "alert " + r.Alert + r.Record
		}
	}
	return q
}

// notExported are series a query may name that no relay exports: Prometheus makes up for every target.
var notExported = map[string]bool{"up": true}

// TestQueriedMetricsExported: every metric the dashboard and the alerts query is one a real relay exports. The
// relay is `switchboard serve` run in-process as operators run it, with every feature that adds metrics turned on
// (a Redis directory, TLS on the main and internal listeners, webhooks), after it did what relays do: a host
// registered, an HTTP exchange and a raw TCP stream went through it, a request for an offline host was held and
// answered, an unsigned request on the internal listener and tunnel upgrades with a bad token were refused, the
// host disconnected, and Redis went away.
func TestQueriedMetricsExported(t *testing.T) {
	queries := allQueries(t)
	r := startServe(t)
	r.traffic(t)

	// Both listeners' certificate expiries are there, with the certificate's NotAfter.
	block, _ := pem.Decode(r.pki.CertPEM)
	leaf, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	_, text := r.scrape(t)
	for _, l := range []string{"main", "internal"} {
		want := fmt.Sprintf("switchboard_tls_cert_expiry_timestamp_seconds{listener=%q} %s", l,
			strconv.FormatFloat(float64(leaf.NotAfter.Unix()), 'g', -1, 64))
		if !strings.Contains(text, "\n"+want+"\n") {
			t.Errorf("scrape has no line %q", want)
		}
	}

	families := r.families(t)
	var missing []string
	for expr, from := range queries {
		for _, name := range queriedMetrics(expr) {
			if notExported[name] || exported(families, name) {
				continue
			}
			missing = append(missing, fmt.Sprintf("%s (%s)", name, from))
		}
	}
	slices.Sort(missing)
	if len(missing) > 0 {
		var have []string
		for f := range families {
			have = append(have, f)
		}
		slices.Sort(have)
		t.Fatalf("queried but not exported by the relay:\n  %s\nexported families:\n  %s", strings.Join(missing, "\n  "),
			strings.Join(have, "\n  "))
	}
}

// exported reports whether name is a series of one of families (name → type), histogram and summary parts
// included.
func exported(families map[string]string, name string) bool {
	if _, ok := families[name]; ok {
		return true
	}
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		base, ok := strings.CutSuffix(name, suffix)
		if !ok {
			continue
		}
		typ := families[base]
		if typ == "histogram" || suffix != "_bucket" && typ == "summary" {
			return true
		}
	}
	return false
}

// Secrets of the relay the test runs; each is long enough for serve's check (32 bytes).
const (
	testSecret        = "monitoring-test-secret-0123456789abcdef"
	testClusterSecret = "monitoring-test-cluster-0123456789abcdef"
	testWebhookSecret = "monitoring-test-webhook-0123456789abcdef"
)

// servedRelay is `switchboard serve` running in this process.
type servedRelay struct {
	addr, metricsAddr, internalURL string
	pki                            relaytest.InternalPKI
	hooks                          *atomic.Int64 // webhook requests received
	redis                          *redistest.Server
}

// logBuffer collects the relay's log lines; safe for concurrent use.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// startServe runs cli.Main("serve", …) on ports the kernel picks (read back from its start line) until the test
// ends, when it is stopped as by SIGTERM and waited for.
func startServe(t *testing.T) *servedRelay {
	t.Helper()
	redis := redistest.StartServer(t)
	pki := relaytest.NewInternalPKI(t)
	dir := t.TempDir()
	files := map[string][]byte{"tls.crt": pki.CertPEM, "tls.key": pki.KeyPEM, "ca.pem": pki.CAPEM}
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	var hooks atomic.Int64
	receiver := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		hooks.Add(1)
	}))
	t.Cleanup(receiver.Close)

	args := []string{"serve",
		"--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0", "--internal-listen", "127.0.0.1:0",
		"--replica-id", "monitoring-test",
		"--secret", testSecret, "--cluster-secret", testClusterSecret,
		"--directory", "redis://" + redis.Addr + "/0",
		"--tls-cert", filepath.Join(dir, "tls.crt"), "--tls-key", filepath.Join(dir, "tls.key"),
		"--internal-tls-cert", filepath.Join(dir, "tls.crt"), "--internal-tls-key", filepath.Join(dir, "tls.key"),
		"--internal-ca", filepath.Join(dir, "ca.pem"),
		"--webhook-url", receiver.URL + "/hook", "--webhook-secret", testWebhookSecret,
		"--miss-wait", "200ms", "--drain-timeout", "5s", "--flap-window", "0", "--auth-fail-burst", "1", "--drain-jitter", "1ms",
	}
	ctx, cancel := context.WithCancel(context.Background())
	logs := &logBuffer{}
	done := make(chan int, 1)
	go func() { done <- cli.Main(ctx, args, io.Discard, logs) }()
	exited := false
	t.Cleanup(func() {
		cancel()
		if !exited {
			<-done
		}
		if t.Failed() {
			t.Logf("relay log:\n%s", logs.String())
		}
	})

	var start struct {
		Msg         string `json:"msg"`
		Addr        string `json:"addr"`
		MetricsAddr string `json:"metrics_addr"`
		InternalURL string `json:"internal_url"`
	}
	waitUntil(t, "the relay's start line", func() bool {
		select {
		case code := <-done:
			exited = true
			t.Fatalf("serve exited with %d before it listened", code)
		default:
		}
		for line := range strings.Lines(logs.String()) {
			if json.Unmarshal([]byte(line), &start) == nil && start.Msg == "relay listening" {
				return true
			}
		}
		return false
	})
	return &servedRelay{addr: start.Addr, metricsAddr: start.MetricsAddr, internalURL: start.InternalURL, pki: pki,
		hooks: &hooks, redis: redis}
}

// waitUntil polls cond every 20 ms; it gives up after a minute, a bound for a hung relay, not a measure of speed.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// traffic makes the relay do what a relay does, so that series that exist only once something happened exist.
func (r *servedRelay) traffic(t *testing.T) {
	t.Helper()
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(r.pki.CAPEM)
	clientTLS := &tls.Config{RootCAs: pool}

	hostToken, err := auth.MintHost([]byte(testSecret), "h1", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	// Host h1 serves HTTP and publishes a TCP service, echo.
	echo := relaytest.StartTCPServer(t, func(c *net.TCPConn) { _, _ = io.Copy(c, c) })
	services := map[string]string{"echo": echo}
	hostHandler, err := agent.NewTCPHandler(services, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, "hello from h1")
	}), nil)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := agent.Listen(context.Background(), agent.Config{
		Relays: []string{"https://" + r.addr}, HostID: "h1", Token: hostToken, TLSConfig: clientTLS,
		Labels:     map[string]string{tunnel.TCPLabel: agent.TCPLabelValue(services)},
		MinBackoff: 50 * time.Millisecond, MaxBackoff: 200 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	upstream := &http.Server{Handler: hostHandler}
	served := make(chan struct{})
	go func() { defer close(served); _ = upstream.Serve(ln) }()
	hostClosed := false
	closeHost := func() {
		if !hostClosed {
			hostClosed = true
			_ = upstream.Close()
			_ = ln.Close()
			<-served
			hostHandler.Wait()
		}
	}
	t.Cleanup(closeHost)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := ln.WaitUp(ctx); err != nil {
		t.Fatalf("agent: tunnel not up: %v", err)
	}

	hc := &http.Client{Timeout: time.Minute, Transport: &http.Transport{TLSClientConfig: clientTLS}}
	defer hc.CloseIdleConnections()
	clientToken, err := auth.MintClient([]byte(testSecret), "monitoring-test", []string{"h1", "offline*"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	get := func(url string) int {
		req, _ := http.NewRequest("GET", url, nil)
		req.Header.Set("Authorization", "Bearer "+clientToken)
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatalf("GET %s: %v", url, err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := get("https://" + r.addr + "/hosts/h1/"); code != 200 {
		t.Fatalf("GET /hosts/h1/: %d", code)
	}
	if code := get("https://" + r.addr + "/hosts/offline/"); code != 503 {
		t.Fatalf("GET /hosts/offline/: %d, want 503", code)
	}

	// A peer's request without a hop signature: refused on the internal listener (mutual TLS passes, the
	// signature does not).
	cert, err := tls.X509KeyPair(r.pki.CertPEM, r.pki.KeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	ic := &http.Client{Timeout: time.Minute, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool,
		Certificates: []tls.Certificate{cert}}}}
	defer ic.CloseIdleConnections()
	resp, err := ic.Get(r.internalURL + "/hosts/h1/")
	if err != nil {
		t.Fatalf("internal listener: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode < 400 {
		t.Fatalf("unsigned request on the internal listener: %d, want a refusal", resp.StatusCode)
	}

	// A raw TCP stream: bytes to the host's echo service and back.
	tcpToken, err := auth.MintClientServices([]byte(testSecret), "monitoring-test", []string{"h1"}, []string{"echo"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	ws, err := tcpstream.Dial(ctx, "https://"+r.addr, "h1", "echo", tcpToken, tcpstream.DialOptions{HTTPClient: hc})
	if err != nil {
		t.Fatalf("tcp stream: %v", err)
	}
	if err := ws.Write(ctx, websocket.MessageBinary, []byte("ping")); err != nil {
		t.Fatalf("tcp stream: %v", err)
	}
	if _, b, err := ws.Read(ctx); err != nil || string(b) != "ping" {
		t.Fatalf("tcp stream echo: %q, %v", b, err)
	}
	_ = ws.Close(websocket.StatusNormalClosure, "")

	// Failed tunnel upgrades beyond --auth-fail-burst: refused by the per-IP limit.
	for range 2 {
		req, _ := http.NewRequest("GET", "https://"+r.addr+"/v1/tunnel", nil)
		req.Header.Set("Authorization", "Bearer not-a-token")
		if resp, err := hc.Do(req); err == nil {
			resp.Body.Close()
		}
	}

	waitUntil(t, "a webhook delivery", func() bool { return r.hooks.Load() > 0 })
	closeHost()
	waitUntil(t, "the tunnel to close", func() bool {
		_, m := r.scrape(t)
		return strings.Contains(m, "\nswitchboard_tunnels 0\n")
	})

	// Redis goes away: a lookup fails, and the relay answers anyway.
	r.redis.Stop()
	if code := get("https://" + r.addr + "/hosts/offline-while-redis-is-down/"); code != 503 {
		t.Fatalf("GET a host while Redis is down: %d, want 503", code)
	}
}

// scrape GETs /metrics from the metrics listener.
func (r *servedRelay) scrape(t *testing.T) (int, string) {
	t.Helper()
	resp, err := http.Get("http://" + r.metricsAddr + "/metrics")
	if err != nil {
		t.Fatalf("scrape: %v", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("scrape: %v", err)
	}
	return resp.StatusCode, string(b)
}

// families returns the metric families of a scrape, name → type, from its # TYPE lines.
func (r *servedRelay) families(t *testing.T) map[string]string {
	t.Helper()
	code, text := r.scrape(t)
	if code != 200 {
		t.Fatalf("scrape: %d", code)
	}
	f := map[string]string{}
	for line := range strings.Lines(text) {
		if rest, ok := strings.CutPrefix(line, "# TYPE "); ok {
			if name, typ, ok := strings.Cut(strings.TrimSpace(rest), " "); ok {
				f[name] = typ
			}
		}
	}
	return f
}
