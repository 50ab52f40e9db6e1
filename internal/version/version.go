// Package version names the build: one string for `switchboard --version`, the agent's Switchboard-Agent-Version
// header and the relay's switchboard_build_info metric.
package version

import (
	"regexp"
	"runtime"
	"runtime/debug"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
)

// Stamped by the release script (scripts/release.sh) with -ldflags "-X
// github.com/switchboard-relay/switchboard/internal/version.tag=v1.2.3 -X ...revision=<sha>"; empty in other
// builds, which fall back on what the toolchain recorded (nothing under -buildvcs=false).
var (
	tag      string // the version to print: a release tag, or devel+<revision>[-dirty] for a snapshot
	revision string // the full VCS revision
)

// Info describes the running build.
type Info struct {
	// Version is the release tag, or "devel+<12-hex revision>[-dirty]" for a build from a checkout, or "devel"
	// when the build recorded no revision (go test, go run of a single file).
	Version string
	// Revision is the full VCS revision, empty if unknown.
	Revision string
	// GoVersion is the toolchain that built the binary.
	GoVersion string
}

// Get returns the build's Info.
func Get() Info {
	bi, _ := debug.ReadBuildInfo()
	info := fromBuild(tag, bi)
	if revision != "" {
		info.Revision = revision
	}
	return info
}

// String is Get().Version.
func String() string { return Get().Version }

// fromBuild computes Info from a stamped tag and the build info the toolchain recorded (nil if none).
func fromBuild(tag string, bi *debug.BuildInfo) Info {
	info := Info{GoVersion: runtime.Version()}
	var modified bool
	if bi != nil {
		if bi.GoVersion != "" {
			info.GoVersion = bi.GoVersion
		}
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				info.Revision = s.Value
			case "vcs.modified":
				modified = s.Value == "true"
			}
		}
	}
	switch {
	case tag != "":
		info.Version = tag
	case bi != nil && isRelease(bi.Main.Version):
		// `go install module@vX.Y.Z`, or a clean checkout at a tag: the module version is the release.
		info.Version = bi.Main.Version
	case info.Revision != "":
		short := info.Revision
		if len(short) > 12 {
			short = short[:12]
		}
		info.Version = "devel+" + short
		if modified {
			info.Version += "-dirty"
		}
	default:
		info.Version = "devel"
	}
	return info
}

// pseudo matches the tail of a Go pseudo-version (vX.Y.Z-0.yyyymmddhhmmss-abcdefabcdef): a commit, not a release.
var pseudo = regexp.MustCompile(`[-.][0-9]{14}-[0-9a-f]{12}$`)

// isRelease reports whether a module version the toolchain stamped names a release tag: not "(devel)", not a
// pseudo-version, not a checkout with uncommitted changes ("+dirty").
func isRelease(v string) bool {
	return strings.HasPrefix(v, "v") && !strings.Contains(v, "+") && !pseudo.MatchString(v)
}

// NewCollector returns a collector of switchboard_build_info{version,revision,goversion}, always 1: the build's
// Info as labels, the one place in the metrics where labels are not a closed enum (there is one series per process).
func NewCollector() prometheus.Collector {
	info := Get()
	g := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "switchboard_build_info",
		Help: "The running build: version (release tag or devel+revision), VCS revision and Go version. Always 1.",
		ConstLabels: prometheus.Labels{
			"version": info.Version, "revision": info.Revision, "goversion": info.GoVersion,
		},
	})
	g.Set(1)
	return g
}
