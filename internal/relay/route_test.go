package relay

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"testing"

	"github.com/switchboard-relay/switchboard/internal/directory"
)

func mustURL(t *testing.T, raw string) *url.URL {
	t.Helper()
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// TestResolveRoute: the routing table of route.go, row by row.
func TestResolveRoute(t *testing.T) {
	a, c := mustURL(t, "http://a:1"), mustURL(t, "http://c:1")
	for _, tc := range []struct {
		name string
		v    routeView
		want route
	}{
		{"a tunnel serves it here", routeView{self: "B", serving: true}, route{kind: routeServe}},
		{"a tunnel serves it here, directory down", routeView{self: "B", serving: true, dirDown: true}, route{kind: routeServe}},
		{"a hop, a tunnel serves it here", routeView{self: "B", hop: true, serving: true}, route{kind: routeServe}},
		{"directory not read yet", routeView{self: "B"}, route{kind: routeLookup}},
		{"directory not read yet, tunnel retiring here", routeView{self: "B", retiring: true}, route{kind: routeLookup}},
		{"directory names another replica", routeView{self: "B", read: true, owner: "A", ownerURL: a}, route{kind: routeRemote, replica: "A", peer: a}},
		{"directory names another replica of unknown URL: ask", routeView{self: "B", read: true, owner: "A"}, route{kind: routeAsk}},
		{"directory names this replica", routeView{self: "B", read: true, owner: "B"}, route{kind: routeClaimed}},
		{"named here, retiring tunnel moved", routeView{self: "B", read: true, owner: "B", movedTo: "C", movedURL: c}, route{kind: routeRemote, replica: "C", peer: c}},
		{"named here, moved to an unknown URL", routeView{self: "B", read: true, owner: "B", movedTo: "C"}, route{kind: routeClaimed}},
		{"directory known down: ask, not read", routeView{self: "B", dirDown: true}, route{kind: routeAsk}},
		{"directory did not answer: ask", routeView{self: "B", read: true, lookupErr: true}, route{kind: routeAsk}},
		{"directory does not know the host: ask", routeView{self: "B", read: true}, route{kind: routeAsk}},
		{"a peer holds it", routeView{self: "B", dirDown: true, asked: true, holder: "C", holderURL: c}, route{kind: routeRemote, replica: "C", peer: c}},
		{"nobody holds it, time left", routeView{self: "B", read: true, asked: true, mayWait: true}, route{kind: routeWait}},
		{"nobody holds it, no time left", routeView{self: "B", read: true, asked: true}, route{kind: routeOffline}},
		{"down, nobody holds it, no time left", routeView{self: "B", dirDown: true, asked: true}, route{kind: routeOffline}},

		{"a hop not tried here: wait for it here", routeView{self: "B", hop: true}, route{kind: routeClaimed}},
		{"a hop not tried here, directory down", routeView{self: "B", hop: true, dirDown: true}, route{kind: routeClaimed}},
		{"a hop tried here, nothing retiring", routeView{self: "B", hop: true, tried: true}, route{kind: routeOffline}},
		{"a hop tried here, nothing retiring, named elsewhere", routeView{self: "B", hop: true, tried: true, read: true, owner: "A", ownerURL: a}, route{kind: routeOffline}},
		{"a hop tried here, retiring: read the directory", routeView{self: "B", hop: true, tried: true, retiring: true}, route{kind: routeLookup}},
		{"a hop, retiring, moved: pass on", routeView{self: "B", hop: true, tried: true, retiring: true, read: true, owner: "A", ownerURL: a}, route{kind: routeRemote, replica: "A", peer: a}},
		{"a hop, retiring, moved to an unknown URL", routeView{self: "B", hop: true, tried: true, retiring: true, read: true, owner: "A"}, route{kind: routeOffline}},
		{"a hop, retiring, named here", routeView{self: "B", hop: true, tried: true, retiring: true, read: true, owner: "B", movedTo: "C", movedURL: c}, route{kind: routeOffline}},
		{"a hop tried here, retired and moved away: read the directory", routeView{self: "B", hop: true, tried: true, movedAway: true}, route{kind: routeLookup}},
		{"a hop, retired and moved away: pass on", routeView{self: "B", hop: true, tried: true, movedAway: true, read: true, owner: "A", ownerURL: a}, route{kind: routeRemote, replica: "A", peer: a}},
		{"a hop, retired and moved away, but named here", routeView{self: "B", hop: true, tried: true, movedAway: true, read: true, owner: "B"}, route{kind: routeOffline}},
		{"a hop, retiring, directory down", routeView{self: "B", hop: true, tried: true, retiring: true, dirDown: true}, route{kind: routeOffline}},
		{"a hop, retiring, directory did not answer", routeView{self: "B", hop: true, tried: true, retiring: true, read: true, lookupErr: true}, route{kind: routeOffline}},
		{"a hop is never held nor asked about", routeView{self: "B", hop: true, tried: true, read: true, mayWait: true}, route{kind: routeOffline}},
	} {
		if got := resolveRoute(tc.v); got != tc.want {
			t.Errorf("%s: resolveRoute(%+v) = %+v, want %+v", tc.name, tc.v, got, tc.want)
		}
	}
}

// TestDirHealthObserve: only a call that found the directory unreachable, made by a caller still waiting for it,
// turns the state down.
func TestDirHealthObserve(t *testing.T) {
	live := context.Background()
	gone, cancel := context.WithCancel(context.Background())
	cancel()
	for _, tc := range []struct {
		name string
		ctx  context.Context
		err  error
		down bool
	}{
		{"success", live, nil, false},
		{"not found", live, fmt.Errorf("lookup h: %w", directory.ErrNotFound), false},
		{"invalid", live, fmt.Errorf("claim: %w", directory.ErrInvalid), false},
		{"closed", live, directory.ErrClosed, false},
		{"caller gone", gone, fmt.Errorf("lookup h: %w", context.Canceled), false},
		{"timeout", live, fmt.Errorf("lookup h: %w", context.DeadlineExceeded), true},
		{"network", live, fmt.Errorf("lookup h: %w", errors.New("connection refused")), true},
	} {
		var h dirHealth
		h.observe(tc.ctx, tc.err)
		if h.isDown() != tc.down {
			t.Errorf("%s: down=%v, want %v", tc.name, h.isDown(), tc.down)
		}
	}
	var h dirHealth
	if !h.setDown(true, nil) || h.setDown(true, nil) || !h.setDown(false, nil) || h.isDown() {
		t.Fatal("setDown does not report changes")
	}
}
