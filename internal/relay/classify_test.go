package relay

import (
	"testing"
	"time"

	"github.com/switchboard-relay/switchboard/internal/directory"
	"github.com/switchboard-relay/switchboard/internal/presence"
)

func TestClassify(t *testing.T) {
	now := time.Unix(1000, 0)
	flap := 5 * time.Second
	m := directory.Metadata{Name: "a", Labels: map[string]string{"k": "v"}}
	m2 := directory.Metadata{Name: "b"}
	recent := now.Add(-time.Second)
	for _, tc := range []struct {
		name string
		p    directory.Prior
		meta directory.Metadata
		want presence.Kind // "" for no event
	}{
		{"unknown host", directory.Prior{}, m, presence.Online},
		{"offline announced", directory.Prior{Known: true, Announced: true, LastReplica: "r1", DisconnectedAt: recent, Metadata: m}, m, presence.Online},
		{"live owner elsewhere", directory.Prior{Known: true, Replica: "r2", LastReplica: "r2", Live: true, Metadata: m}, m, presence.Moved},
		{"live owner here (duplicate agent)", directory.Prior{Known: true, Replica: "r1", LastReplica: "r1", Live: true, Metadata: m}, m2, presence.Moved},
		{"dead owner", directory.Prior{Known: true, Replica: "r2", LastReplica: "r2", Metadata: m}, m, presence.Online},
		{"flap, same metadata", directory.Prior{Known: true, LastReplica: "r1", DisconnectedAt: recent, Metadata: m}, m, ""},
		{"flap, nil and empty labels", directory.Prior{Known: true, LastReplica: "r1", DisconnectedAt: recent}, directory.Metadata{Labels: map[string]string{}}, ""},
		{"flap, new metadata", directory.Prior{Known: true, LastReplica: "r1", DisconnectedAt: recent, Metadata: m}, m2, presence.Updated},
		{"flap onto another replica", directory.Prior{Known: true, LastReplica: "r2", DisconnectedAt: recent, Metadata: m}, m, presence.Moved},
		{"release never announced, long ago", directory.Prior{Known: true, LastReplica: "r1", DisconnectedAt: now.Add(-time.Hour), Metadata: m}, m, presence.Online},
	} {
		got, ok := classify(tc.p, "r1", tc.meta, flap, now)
		if got != tc.want || ok != (tc.want != "") {
			t.Errorf("%s: classify = %q, %v; want %q", tc.name, got, ok, tc.want)
		}
	}
}
