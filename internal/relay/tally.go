package relay

import (
	"maps"
	"sync"
	"sync/atomic"
)

// tally counts the client exchanges this replica ended since it started, in all and by error: every outcome but
// "ok" and "session" (a browser's token traded for its cookie), that is the error codes (host_offline,
// upstream_failed, ...). It is what the admin API and the status page show per replica; Prometheus has the same
// figures in switchboard_exchanges_total. Outcomes are a closed set of the relay's own names, so the map stays
// small.
type tally struct {
	total atomic.Int64

	mu      sync.Mutex
	byError map[string]int64
}

// outcomeSession: a browser traded its token for a session cookie (no error, like outcomeOK).
const outcomeSession = "session"

func (t *tally) note(outcome string) {
	t.total.Add(1)
	if outcome == outcomeOK || outcome == outcomeSession {
		return
	}
	t.mu.Lock()
	if t.byError == nil {
		t.byError = make(map[string]int64)
	}
	t.byError[outcome]++
	t.mu.Unlock()
}

// read returns the total and a copy of the counts by error.
func (t *tally) read() (total int64, byError map[string]int64) {
	t.mu.Lock()
	byError = maps.Clone(t.byError)
	t.mu.Unlock()
	if byError == nil {
		byError = map[string]int64{}
	}
	return t.total.Load(), byError
}
