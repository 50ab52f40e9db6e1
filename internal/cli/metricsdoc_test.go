package cli_test

import (
	"bufio"
	"maps"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// family is a metric family as documented or as exported: its type and its label names, sorted.
type family struct {
	typ    string
	labels string
}

// documentedFamilies parses the metrics table of docs/operations.md under heading (e.g. "### Relay metrics"): rows
// "| `name` | type | `label`, `label` | meaning |", with "—" for no labels.
func documentedFamilies(t *testing.T, heading string) map[string]family {
	t.Helper()
	b, err := os.ReadFile("../../docs/operations.md")
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	i := strings.Index(doc, "\n"+heading+"\n")
	if i < 0 {
		t.Fatalf("docs/operations.md has no %q", heading)
	}
	section := doc[i+len(heading)+2:]
	if j := strings.Index(section, "\n#"); j >= 0 {
		section = section[:j]
	}
	row := regexp.MustCompile("^\\| `(switchboard_[a-z_]+)` \\| (counter|gauge|histogram) \\| ([^|]*) \\|")
	label := regexp.MustCompile("`([a-z_]+)`")
	out := map[string]family{}
	for line := range strings.SplitSeq(section, "\n") {
		m := row.FindStringSubmatch(line)
		if m == nil {
			if strings.HasPrefix(line, "| `switchboard_") {
				t.Errorf("%s: row not in the table's form: %s", heading, line)
			}
			continue
		}
		var names []string
		for _, l := range label.FindAllStringSubmatch(m[3], -1) {
			names = append(names, l[1])
		}
		if len(names) == 0 && strings.TrimSpace(m[3]) != "—" {
			t.Errorf("%s: labels of %s: %q (want `name`, … or —)", heading, m[1], m[3])
		}
		slices.Sort(names)
		if _, dup := out[m[1]]; dup {
			t.Errorf("%s: %s listed twice", heading, m[1])
		}
		out[m[1]] = family{typ: m[2], labels: strings.Join(names, ",")}
	}
	if len(out) == 0 {
		t.Fatalf("%s: no metric rows", heading)
	}
	return out
}

// exportedFamilies parses a Prometheus text exposition: the switchboard_ families with their type and label names
// (a histogram's le left out).
func exportedFamilies(t *testing.T, text string) map[string]family {
	t.Helper()
	types := map[string]string{}
	labels := map[string]map[string]bool{}
	typeLine := regexp.MustCompile(`^# TYPE (switchboard_[a-z_]+) (\w+)$`)
	sample := regexp.MustCompile(`^(switchboard_[a-z_]+?)(_bucket|_sum|_count)?(\{[^}]*\})? `)
	labelName := regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)="(?:[^"\\]|\\.)*"`)
	sc := bufio.NewScanner(strings.NewReader(text))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if m := typeLine.FindStringSubmatch(line); m != nil {
			types[m[1]] = m[2]
			labels[m[1]] = map[string]bool{}
			continue
		}
		m := sample.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		name := m[1]
		if _, ok := types[name]; !ok {
			name += m[2] // a counter named …_count, not a histogram's
		}
		set, ok := labels[name]
		if !ok {
			t.Errorf("sample of an undeclared family: %s", line)
			continue
		}
		for _, l := range labelName.FindAllStringSubmatch(m[3], -1) {
			if l[1] != "le" {
				set[l[1]] = true
			}
		}
	}
	out := map[string]family{}
	for name, typ := range types {
		out[name] = family{typ: typ, labels: strings.Join(slices.Sorted(maps.Keys(labels[name])), ",")}
	}
	return out
}

// compareFamilies reports every family documented but not exported, exported but not documented, or different.
func compareFamilies(t *testing.T, what string, documented, exported map[string]family) {
	t.Helper()
	for _, name := range slices.Sorted(maps.Keys(documented)) {
		d := documented[name]
		e, ok := exported[name]
		switch {
		case !ok:
			t.Errorf("%s: %s is documented but not exported", what, name)
		case d != e:
			t.Errorf("%s: %s is documented as %s{%s} but exported as %s{%s}", what, name, d.typ, d.labels, e.typ, e.labels)
		}
	}
	for _, name := range slices.Sorted(maps.Keys(exported)) {
		if _, ok := documented[name]; !ok {
			t.Errorf("%s: %s is exported but not documented in docs/operations.md", what, name)
		}
	}
}

// TestMetricsMatchDocs: a fresh single-node relay and a fresh agent export exactly the families the tables of
// docs/operations.md list, with the documented types and label names. The doc is read by the test, so the two
// cannot drift apart.
func TestMetricsMatchDocs(t *testing.T) {
	_, addr, metrics := startRelay(t, withSecret)
	code, text := get("http://"+metrics+"/metrics", "")
	if code != 200 {
		t.Fatalf("relay /metrics: %d", code)
	}
	compareFamilies(t, "relay", documentedFamilies(t, "### Relay metrics"), exportedFamilies(t, text))

	msock := listenSockets(t, 1)
	startFiles(t, nil, msock.files, "host", "--relay", "http://"+addr, "--id", "doc", "--token", mint(t, "host", "--id", "doc"),
		"--upstream", "http://127.0.0.1:1", "--metrics-listen", "fd:3")
	waitStatus(t, "http://"+msock.addrs[0]+"/healthz", "", 200)
	_, text = get("http://"+msock.addrs[0]+"/metrics", "")
	compareFamilies(t, "agent", documentedFamilies(t, "### Agent metrics"), exportedFamilies(t, text))
}
