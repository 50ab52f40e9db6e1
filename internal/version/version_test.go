package version

import (
	"runtime/debug"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestFromBuild(t *testing.T) {
	rev := "0123456789abcdef0123456789abcdef01234567"
	settings := func(modified string) []debug.BuildSetting {
		return []debug.BuildSetting{{Key: "vcs.revision", Value: rev}, {Key: "vcs.modified", Value: modified}}
	}
	for _, tc := range []struct {
		name string
		tag  string
		bi   *debug.BuildInfo
		want string
	}{
		{"stamped tag wins", "v1.4.0", &debug.BuildInfo{Main: debug.Module{Version: "(devel)"}, Settings: settings("true")}, "v1.4.0"},
		{"clean checkout", "", &debug.BuildInfo{Main: debug.Module{Version: "v0.0.0-20261202120000-0123456789ab"}, Settings: settings("false")}, "devel+0123456789ab"},
		{"dirty checkout", "", &debug.BuildInfo{Main: debug.Module{Version: "v0.0.0-20261202120000-0123456789ab+dirty"}, Settings: settings("true")}, "devel+0123456789ab-dirty"},
		{"pseudo after a tag", "", &debug.BuildInfo{Main: debug.Module{Version: "v1.2.1-0.20261202120000-0123456789ab"}, Settings: settings("false")}, "devel+0123456789ab"},
		{"go install at a tag", "", &debug.BuildInfo{Main: debug.Module{Version: "v1.2.0"}}, "v1.2.0"},
		{"no vcs", "", &debug.BuildInfo{Main: debug.Module{Version: "(devel)"}}, "devel"},
		{"no build info", "", nil, "devel"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := fromBuild(tc.tag, tc.bi).Version; got != tc.want {
				t.Fatalf("version %q, want %q", got, tc.want)
			}
		})
	}
	if got := fromBuild("", &debug.BuildInfo{Settings: settings("false")}).Revision; got != rev {
		t.Fatalf("revision %q", got)
	}
}

func TestBuildInfoMetric(t *testing.T) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(NewCollector())
	want := `# HELP switchboard_build_info The running build: version (release tag or devel+revision), VCS revision and Go version. Always 1.
# TYPE switchboard_build_info gauge
switchboard_build_info{goversion="` + Get().GoVersion + `",revision="` + Get().Revision + `",version="` + String() + `"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "switchboard_build_info"); err != nil {
		t.Fatal(err)
	}
}
