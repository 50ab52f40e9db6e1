package presence

import (
	"context"
	"errors"
	"sync"
	"time"
)

// Fanout is a Log that serves many readers of one replica from a single reader of the underlying log: Run tails
// the log into a bounded buffer of recent events, and Read answers from that buffer when it can — one blocking
// Redis read per replica instead of one per open event stream. A reader whose position is not in the buffer (it
// resumes from further back, or Run has not caught up yet) reads the underlying log directly, so answers, gaps
// included, are those of the log.
type Fanout struct {
	// Immutable after NewFanout.
	log  Log
	size int

	// Guarded by mu.
	mu    sync.Mutex
	ready bool          // pos is known
	pos   string        // the newest ID Run has read up to
	buf   []Event       // events up to pos, oldest first, at most size
	base  string        // the ID just before buf[0] (pos when buf is empty)
	wake  chan struct{} // closed and replaced whenever pos moves
}

var _ Log = (*Fanout)(nil)

// NewFanout returns a Fanout over l keeping the size most recent events (if size <= 0, 1024). Call Run.
func NewFanout(l Log, size int) *Fanout {
	if size <= 0 {
		size = 1024
	}
	return &Fanout{log: l, size: size, wake: make(chan struct{})}
}

// Append implements Log: it appends to the underlying log (Run then sees the event like any other).
func (f *Fanout) Append(ctx context.Context, e Event) (Event, error) { return f.log.Append(ctx, e) }

// Newest returns the underlying log's newest ID; see the package function Newest.
func (f *Fanout) Newest(ctx context.Context) (string, error) { return Newest(ctx, f.log) }

// Run tails the underlying log from its newest event until ctx ends. Failures are retried every second.
func (f *Fanout) Run(ctx context.Context) {
	for ctx.Err() == nil {
		pos, err := Newest(ctx, f.log)
		if err == nil {
			f.reset(pos)
			f.tail(ctx, pos)
			continue
		}
		pause(ctx, time.Second)
	}
}

// tail reads the log after pos until ctx ends or the log reports a gap.
func (f *Fanout) tail(ctx context.Context, pos string) {
	for ctx.Err() == nil {
		evs, err := f.log.Read(ctx, pos, 1000, time.Second)
		switch {
		case errors.Is(err, ErrGap):
			return // start over from the newest event; readers behind find the gap in the log
		case err != nil:
			pause(ctx, time.Second)
			continue
		}
		if len(evs) == 0 {
			continue
		}
		pos = evs[len(evs)-1].ID
		f.add(evs, pos)
	}
}

// add appends evs, read up to pos, to the buffer, drops the oldest beyond size and wakes the readers.
func (f *Fanout) add(evs []Event, pos string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.buf = append(f.buf, evs...)
	if over := len(f.buf) - f.size; over > 0 {
		f.base = f.buf[over-1].ID
		// Resliced, not copied: append moves the window to a new array only when it reaches the array's end,
		// so an event costs a few Event copies, not a copy of the whole buffer (a copy per event was most of
		// the garbage a tunnel's connect left on the relay).
		f.buf = f.buf[over:]
	}
	f.pos = pos
	close(f.wake)
	f.wake = make(chan struct{})
}

// Recent returns up to n of the most recent events Run has read (since it started, or since the last gap), newest
// first. It never reads the underlying log: it is what a status page shows.
func (f *Fanout) Recent(n int) []Event {
	f.mu.Lock()
	defer f.mu.Unlock()
	n = max(0, min(n, len(f.buf)))
	out := make([]Event, 0, n)
	for i := len(f.buf) - 1; i >= len(f.buf)-n; i-- {
		out = append(out, f.buf[i])
	}
	return out
}

// reset empties the buffer and starts it at pos.
func (f *Fanout) reset(pos string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.ready, f.pos, f.base, f.buf = true, pos, pos, nil
	close(f.wake)
	f.wake = make(chan struct{})
}

// Read implements Log.
func (f *Fanout) Read(ctx context.Context, after string, max int, block time.Duration) ([]Event, error) {
	if max <= 0 {
		max = 100
	}
	var timer <-chan time.Time
	for {
		out, hit, wake := f.fromBuffer(after, max)
		// A reader that may wait takes what the buffer has; one that may not is owed everything up to max that
		// the log holds now, and Run may not have buffered all of it yet.
		if hit && len(out) > 0 && (block > 0 || len(out) == max) {
			return out, nil
		}
		if !hit || block <= 0 {
			// Not in the buffer, or nothing newer there and no time to wait for Run: the log answers, without
			// waiting (Run may be behind).
			evs, err := f.log.Read(ctx, after, max, 0)
			if err != nil || len(evs) > 0 || block <= 0 {
				return evs, err
			}
		}
		if timer == nil {
			t := time.NewTimer(block)
			defer t.Stop()
			timer = t.C
		}
		select {
		case <-ctx.Done():
			return nil, nil
		case <-timer:
			return nil, nil
		case <-wake:
		}
	}
}

// fromBuffer returns the events after `after` if the buffer can tell (hit), and the channel that signals the next
// move of the buffer.
func (f *Fanout) fromBuffer(after string, max int) (out []Event, hit bool, wake <-chan struct{}) {
	f.mu.Lock()
	defer f.mu.Unlock()
	wake = f.wake
	if !f.ready || after == "" {
		return nil, false, wake
	}
	if after == f.pos {
		return nil, true, wake
	}
	from := -1
	if after == f.base {
		from = 0
	}
	for i := len(f.buf) - 1; i >= 0 && from < 0; i-- {
		if f.buf[i].ID == after {
			from = i + 1
		}
	}
	if from < 0 {
		return nil, false, wake
	}
	rest := f.buf[from:]
	return append([]Event(nil), rest[:min(len(rest), max)]...), true, wake
}

// pause waits d or until ctx ends.
func pause(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
