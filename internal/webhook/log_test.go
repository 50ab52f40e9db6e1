package webhook

import (
	"context"
	"strconv"
	"sync"
	"time"

	"github.com/switchboard-relay/switchboard/internal/presence"
)

// testLog is a presence.Log in memory for this package's tests, with IDs "1", "2", ... and a Trim that drops the
// oldest events, so tests can make gaps.
type testLog struct {
	mu      sync.Mutex
	events  []presence.Event // retained, oldest first
	next    uint64           // ID of the next event
	changed chan struct{}    // closed and replaced on every Append
}

func newTestLog() *testLog { return &testLog{next: 1, changed: make(chan struct{})} }

func (l *testLog) Append(_ context.Context, e presence.Event) (presence.Event, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	e.ID = strconv.FormatUint(l.next, 10)
	l.next++
	l.events = append(l.events, e)
	close(l.changed)
	l.changed = make(chan struct{})
	return e, nil
}

// Trim drops all but the newest keep events.
func (l *testLog) Trim(keep int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.events) > keep {
		l.events = append([]presence.Event(nil), l.events[len(l.events)-keep:]...)
	}
}

func (l *testLog) Read(ctx context.Context, after string, max int, block time.Duration) ([]presence.Event, error) {
	var a uint64
	if after != "" {
		var err error
		if a, err = strconv.ParseUint(after, 10, 64); err != nil {
			return nil, err
		}
	}
	deadline := time.Now().Add(block)
	for {
		l.mu.Lock()
		var out []presence.Event
		var err error
		if len(l.events) > 0 {
			first, _ := strconv.ParseUint(l.events[0].ID, 10, 64)
			if a != 0 && a+1 < first {
				err = presence.ErrGap
			}
		} else if a != 0 && a+1 < l.next {
			err = presence.ErrGap
		}
		for _, e := range l.events {
			id, _ := strconv.ParseUint(e.ID, 10, 64)
			if (id > a || err != nil) && len(out) < max {
				out = append(out, e)
			}
		}
		ch := l.changed
		l.mu.Unlock()
		if len(out) > 0 || err != nil {
			return out, err
		}
		wait := time.Until(deadline)
		if wait <= 0 {
			return nil, nil
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, ctx.Err()
		case <-ch:
		case <-t.C:
		}
		t.Stop()
	}
}

var _ presence.Log = (*testLog)(nil)
