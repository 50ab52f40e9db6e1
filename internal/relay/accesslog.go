package relay

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
)

// AccessLogConfig configures an AccessLog.
type AccessLogConfig struct {
	// Path is the file lines are appended to (created 0640 if missing), or "-" for standard output. Required.
	Path string
	// Sample logs one in Sample exchanges that succeeded; exchanges that failed (status 400 and up, or an error
	// code) are always logged. Zero or one logs every exchange.
	Sample int
	// MaxBuffered bounds the bytes waiting to be written: past it, lines are dropped and counted
	// (switchboard_access_log_dropped_total) rather than holding up exchanges behind a slow disk. Zero means 4 MiB.
	MaxBuffered int
	// Logger receives a WARN when writing (or reopening) the file fails. If nil, nothing is logged.
	Logger *slog.Logger
}

// AccessLog writes one JSON line per client exchange (accessentry.go builds them) to a file or standard output.
// Lines are appended to a bounded buffer under a short lock and written by a goroutine of the log's own, so an
// exchange never waits for the disk. Reopen makes the writer reopen the file by name before its next write (for
// logrotate: rename, then SIGHUP); Close writes what is buffered and closes the file.
type AccessLog struct {
	// Immutable after NewAccessLog.
	path   string
	sample uint64
	max    int
	log    *slog.Logger
	wake   chan struct{} // capacity 1: the writer has lines to write
	stop   chan struct{} // closed by Close
	done   chan struct{} // closed when the writer has flushed and exited

	seq     atomic.Uint64 // successful exchanges seen, for sampling
	written atomic.Uint64 // lines handed to the file
	dropped atomic.Uint64 // lines dropped: buffer full, or a write failed
	reopen  atomic.Bool

	// Guarded by mu.
	mu     sync.Mutex
	buf    []byte // lines waiting for the writer
	closed bool   // Close has flushed: later lines are dropped

	// Owned by the writer goroutine (and NewAccessLog before it starts).
	out   io.Writer
	file  *os.File // nil for standard output
	spare []byte
	errs  int // consecutive failed writes, to log only the first

	closeOnce sync.Once
	closeErr  error
}

// NewAccessLog opens cfg.Path and starts the writer.
func NewAccessLog(cfg AccessLogConfig) (*AccessLog, error) {
	if cfg.Path == "" {
		return nil, errors.New("access log: no path")
	}
	if cfg.Sample < 0 {
		return nil, fmt.Errorf("access log: sample %d must not be negative", cfg.Sample)
	}
	if cfg.MaxBuffered <= 0 {
		cfg.MaxBuffered = 4 << 20
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	a := &AccessLog{path: cfg.Path, sample: uint64(max(cfg.Sample, 1)), max: cfg.MaxBuffered, log: cfg.Logger,
		wake: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{})}
	if cfg.Path == "-" {
		a.out = os.Stdout
	} else {
		f, err := openAccessFile(cfg.Path)
		if err != nil {
			return nil, err
		}
		a.out, a.file = f, f
	}
	go a.writeLoop()
	return a, nil
}

func openAccessFile(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
	if err != nil {
		return nil, fmt.Errorf("access log: %w", err)
	}
	return f, nil
}

// sampled reports whether a successful exchange is to be logged: one in Sample.
func (a *AccessLog) sampled() bool {
	return a.sample <= 1 || a.seq.Add(1)%a.sample == 0
}

// append queues one line (ending in '\n'), or drops it if the buffer is full. It never blocks on the disk.
func (a *AccessLog) append(line []byte) {
	a.mu.Lock()
	if a.closed || len(a.buf)+len(line) > a.max {
		a.mu.Unlock()
		a.dropped.Add(1)
		return
	}
	a.buf = append(a.buf, line...)
	a.mu.Unlock()
	select {
	case a.wake <- struct{}{}:
	default:
	}
}

// Reopen makes the writer close and reopen the file by its name before its next write, so that a file renamed by
// logrotate is let go and a new one created. No-op for standard output.
func (a *AccessLog) Reopen() {
	a.reopen.Store(true)
	select {
	case a.wake <- struct{}{}:
	default:
	}
}

// Written and Dropped count lines written and lines dropped (buffer full, or the write failed).
func (a *AccessLog) Written() uint64 { return a.written.Load() }

// Dropped: see Written.
func (a *AccessLog) Dropped() uint64 { return a.dropped.Load() }

// Close writes the buffered lines and closes the file (not standard output). Lines appended after Close are
// dropped. Idempotent.
func (a *AccessLog) Close() error {
	a.closeOnce.Do(func() {
		close(a.stop)
		<-a.done
	})
	return a.closeErr
}

// writeLoop writes buffered lines until Close, then flushes and closes the file.
func (a *AccessLog) writeLoop() {
	defer close(a.done)
	for {
		select {
		case <-a.wake:
			a.flush()
		case <-a.stop:
			a.flush()
			a.mu.Lock()
			a.closed = true
			a.mu.Unlock()
			a.flush() // lines appended between the first flush and closed
			if a.file != nil {
				a.closeErr = a.file.Close()
			}
			return
		}
	}
}

// flush swaps the buffer for the spare one and writes it, reopening the file first if asked.
func (a *AccessLog) flush() {
	if a.reopen.Swap(false) && a.file != nil {
		if f, err := openAccessFile(a.path); err == nil {
			_ = a.file.Close()
			a.out, a.file = f, f
		} else {
			a.log.Warn("access log reopen failed; still writing to the old file", "err", err)
		}
	}
	a.mu.Lock()
	pending := a.buf
	a.buf = a.spare[:0]
	a.mu.Unlock()
	if len(pending) == 0 {
		a.spare = pending
		return
	}
	lines := uint64(countLines(pending))
	if _, err := a.out.Write(pending); err != nil {
		a.dropped.Add(lines)
		if a.errs == 0 {
			a.log.Warn("access log write failed; dropping lines until a write succeeds", "err", err)
		}
		a.errs++
	} else {
		a.written.Add(lines)
		a.errs = 0
	}
	if cap(pending) > 2*a.max { // do not keep an oversized spare around
		pending = nil
	}
	a.spare = pending[:0]
}

func countLines(b []byte) int {
	n := 0
	for _, c := range b {
		if c == '\n' {
			n++
		}
	}
	return n
}
