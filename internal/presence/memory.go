package presence

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Defaults for the retention of Memory and Redis logs.
const (
	DefaultRetention = time.Hour
	DefaultMaxEvents = 100_000
)

// Memory is a Log held in the memory of one process: the log of a single relay with the memory directory. It keeps
// at most MaxEvents events and none older than Retention; events go when the process does.
//
// IDs are "<generation>-<n>": n counts appends from 1, and generation is fixed per Memory (the creation time in
// microseconds), so an ID handed out by an earlier process is recognised as foreign and read as a gap.
type Memory struct {
	// Immutable after NewMemory.
	gen       string
	retention time.Duration
	maxEvents int
	now       func() time.Time

	// Guarded by mu.
	mu     sync.Mutex
	events []held        // ring, oldest at head
	head   int           // index of the oldest event in events
	n      int           // number of events held
	first  uint64        // number of the oldest held event (next to be assigned if n == 0)
	wake   chan struct{} // closed and replaced by every Append
}

// held is an event in a Memory log and when it was appended.
type held struct {
	e  Event
	at time.Time
}

var _ Log = (*Memory)(nil)

// MemoryConfig configures a Memory log. The zero value is usable.
type MemoryConfig struct {
	// Retention drops events older than this. If zero, DefaultRetention.
	Retention time.Duration
	// MaxEvents bounds the events held. If zero, DefaultMaxEvents.
	MaxEvents int
	// Now is the clock used for retention. If nil, time.Now.
	Now func() time.Time
}

// NewMemory returns an empty memory log.
func NewMemory(cfg MemoryConfig) *Memory {
	if cfg.Retention <= 0 {
		cfg.Retention = DefaultRetention
	}
	if cfg.MaxEvents <= 0 {
		cfg.MaxEvents = DefaultMaxEvents
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Memory{
		gen:       strconv.FormatInt(cfg.Now().UnixMicro(), 10),
		retention: cfg.Retention,
		maxEvents: cfg.MaxEvents,
		now:       cfg.Now,
		first:     1,
		wake:      make(chan struct{}),
	}
}

// Append implements Log.
func (m *Memory) Append(ctx context.Context, e Event) (Event, error) {
	if err := ctx.Err(); err != nil {
		return e, fmt.Errorf("append: %w", err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.trimLocked()
	if m.n == m.maxEvents {
		m.dropOldestLocked()
	}
	if m.events == nil {
		m.events = make([]held, min(m.maxEvents, 1024))
	}
	if m.n == len(m.events) {
		grown := make([]held, min(m.maxEvents, 2*len(m.events)))
		for i := range m.n {
			grown[i] = m.events[(m.head+i)%len(m.events)]
		}
		m.events, m.head = grown, 0
	}
	e.ID = m.gen + "-" + strconv.FormatUint(m.first+uint64(m.n), 10)
	if e.At.IsZero() {
		e.At = m.now()
	}
	m.events[(m.head+m.n)%len(m.events)] = held{e: e, at: m.now()}
	m.n++
	close(m.wake)
	m.wake = make(chan struct{})
	return e, nil
}

// Read implements Log.
func (m *Memory) Read(ctx context.Context, after string, max int, block time.Duration) ([]Event, error) {
	if max <= 0 {
		max = 100
	}
	var timer <-chan time.Time
	for {
		m.mu.Lock()
		m.trimLocked()
		out, err := m.readLocked(after, max)
		wake := m.wake
		m.mu.Unlock()
		if err != nil || len(out) > 0 || block <= 0 {
			return out, err
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

// readLocked returns the events after the one numbered by after.
func (m *Memory) readLocked(after string, max int) ([]Event, error) {
	next := m.first // number of the first event to return
	if after != "" {
		last := m.first + uint64(m.n) - 1 // newest number handed out (first-1 when empty)
		n, ok := m.parseID(after)
		// An ID from another generation, or beyond what was handed out, comes from a log that is gone.
		if !ok || n > last || n+1 < m.first {
			return m.copyLocked(m.first, max), fmt.Errorf("read after %q: %w", after, ErrGap)
		}
		next = n + 1
	}
	return m.copyLocked(next, max), nil
}

// copyLocked returns up to max events starting with number from.
func (m *Memory) copyLocked(from uint64, max int) []Event {
	end := m.first + uint64(m.n)
	if from >= end {
		return nil
	}
	k := min(int(end-from), max)
	out := make([]Event, k)
	off := int(from - m.first)
	for i := range k {
		out[i] = m.events[(m.head+off+i)%len(m.events)].e
	}
	return out
}

// parseID parses an ID of this generation.
func (m *Memory) parseID(id string) (uint64, bool) {
	gen, num, ok := strings.Cut(id, "-")
	if !ok || gen != m.gen {
		return 0, false
	}
	n, err := strconv.ParseUint(num, 10, 64)
	if err != nil || n == 0 {
		return 0, false
	}
	return n, true
}

// trimLocked drops events older than the retention window.
func (m *Memory) trimLocked() {
	cutoff := m.now().Add(-m.retention)
	for m.n > 0 && m.events[m.head].at.Before(cutoff) {
		m.dropOldestLocked()
	}
}

func (m *Memory) dropOldestLocked() {
	m.events[m.head] = held{}
	m.head = (m.head + 1) % len(m.events)
	m.n--
	m.first++
}

// Newest returns the ID of the newest event appended, "" if none; see the package function Newest.
func (m *Memory) Newest(ctx context.Context) (string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	last := m.first + uint64(m.n) - 1
	if last == 0 {
		return "", nil
	}
	return m.gen + "-" + strconv.FormatUint(last, 10), nil
}
