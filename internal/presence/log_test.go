package presence

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
	"unsafe"

	"github.com/redis/rueidis"
	"go.uber.org/goleak"

	"github.com/switchboard-relay/switchboard/internal/redistest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		goleak.IgnoreAnyFunction("github.com/redis/rueidis.(*clusterClient)._refresh.func2"),
		goleak.IgnoreAnyFunction("github.com/redis/rueidis.(*call).DelayDo.func1"))
}

// runLogContract runs the behaviour every Log shares. newLog returns a fresh, empty log with room for at least
// maxEvents events and a function that makes the log drop its oldest events (by appending past its bound).
func runLogContract(t *testing.T, newLog func(t *testing.T, maxEvents int) Log) {
	ev := func(host string, epoch uint64) Event {
		return Event{Kind: Online, HostID: host, Epoch: epoch, Seq: SeqOf(Online, epoch), Replica: "r1"}
	}

	t.Run("AppendThenReadInOrder", func(t *testing.T) {
		l := newLog(t, 100)
		var ids []string
		for i := range 5 {
			e, err := l.Append(t.Context(), ev(fmt.Sprint("h", i), uint64(i+1)))
			if err != nil {
				t.Fatalf("append: %v", err)
			}
			if e.ID == "" {
				t.Fatal("append returned no ID")
			}
			ids = append(ids, e.ID)
		}
		got, err := l.Read(t.Context(), "", 10, 0)
		if err != nil {
			t.Fatalf("read: %v", err)
		}
		if len(got) != 5 {
			t.Fatalf("read %d events, want 5", len(got))
		}
		for i, e := range got {
			if e.ID != ids[i] || e.HostID != fmt.Sprint("h", i) || e.Seq != SeqOf(Online, uint64(i+1)) || e.Kind != Online {
				t.Fatalf("event %d = %+v, want id %s host h%d", i, e, ids[i], i)
			}
		}
		got, err = l.Read(t.Context(), ids[1], 2, 0)
		if err != nil || len(got) != 2 || got[0].ID != ids[2] || got[1].ID != ids[3] {
			t.Fatalf("read after %s max 2 = %v, %v; want ids %v", ids[1], got, err, ids[2:4])
		}
		got, err = l.Read(t.Context(), ids[4], 10, 0)
		if err != nil || len(got) != 0 {
			t.Fatalf("read after the last = %v, %v; want nothing", got, err)
		}
	})

	t.Run("EmptyLogReadsNothing", func(t *testing.T) {
		l := newLog(t, 100)
		got, err := l.Read(t.Context(), "", 10, 0)
		if err != nil || len(got) != 0 {
			t.Fatalf("read = %v, %v; want nothing", got, err)
		}
	})

	t.Run("ReadBlocksUntilAppend", func(t *testing.T) {
		l := newLog(t, 100)
		first, err := l.Append(t.Context(), ev("a", 1))
		if err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		var got []Event
		var rerr error
		wg.Go(func() { got, rerr = l.Read(t.Context(), first.ID, 10, 10*time.Second) })
		time.Sleep(50 * time.Millisecond) // let the reader block; the test passes either way
		second, err := l.Append(t.Context(), ev("b", 2))
		if err != nil {
			t.Fatal(err)
		}
		wg.Wait()
		if rerr != nil || len(got) != 1 || got[0].ID != second.ID {
			t.Fatalf("blocked read = %v, %v; want the event %s", got, rerr, second.ID)
		}
	})

	t.Run("ReadBlockTimesOut", func(t *testing.T) {
		l := newLog(t, 100)
		got, err := l.Read(t.Context(), "", 10, 100*time.Millisecond)
		if err != nil || len(got) != 0 {
			t.Fatalf("read = %v, %v; want nothing", got, err)
		}
	})

	t.Run("ReadEndsWithContext", func(t *testing.T) {
		l := newLog(t, 100)
		ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
		defer cancel()
		done := make(chan struct{})
		go func() {
			defer close(done)
			_, _ = l.Read(ctx, "", 10, time.Minute)
		}()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatal("read did not end with its context")
		}
	})

	t.Run("TrimmedPositionIsAGap", func(t *testing.T) {
		l := newLog(t, 10)
		first, err := l.Append(t.Context(), ev("a", 1))
		if err != nil {
			t.Fatal(err)
		}
		var last Event
		for i := range 50 { // past the bound
			if last, err = l.Append(t.Context(), ev("b", uint64(i+2))); err != nil {
				t.Fatal(err)
			}
		}
		got, err := l.Read(t.Context(), first.ID, 5, 0)
		if !errors.Is(err, ErrGap) {
			t.Fatalf("read after a trimmed event: %v, want ErrGap", err)
		}
		if len(got) == 0 || got[0].ID == first.ID {
			t.Fatalf("gap read returned %d events starting %v; want the oldest retained ones", len(got), got)
		}
		if got, err := l.Read(t.Context(), last.ID, 5, 0); err != nil || len(got) != 0 {
			t.Fatalf("read after the newest = %v, %v", got, err)
		}
	})

	t.Run("ForeignIDIsAGap", func(t *testing.T) {
		l := newLog(t, 100)
		if _, err := l.Append(t.Context(), ev("a", 1)); err != nil {
			t.Fatal(err)
		}
		for _, id := range []string{"nonsense", "99999999999999-0", "-", "1-x"} {
			if _, err := l.Read(t.Context(), id, 5, 0); !errors.Is(err, ErrGap) {
				t.Errorf("read after %q: %v, want ErrGap", id, err)
			}
		}
	})
}

func TestMemoryLog(t *testing.T) {
	runLogContract(t, func(t *testing.T, maxEvents int) Log {
		return NewMemory(MemoryConfig{MaxEvents: maxEvents})
	})
}

func TestMemoryLogRetentionWindow(t *testing.T) {
	now := time.Unix(1000, 0)
	var mu sync.Mutex
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	l := NewMemory(MemoryConfig{Retention: time.Minute, Now: clock})
	old, _ := l.Append(t.Context(), Event{Kind: Online, HostID: "a"})
	mu.Lock()
	now = now.Add(2 * time.Minute)
	mu.Unlock()
	fresh, _ := l.Append(t.Context(), Event{Kind: Online, HostID: "b"})
	got, err := l.Read(t.Context(), "", 10, 0)
	if err != nil || len(got) != 1 || got[0].ID != fresh.ID {
		t.Fatalf("read = %v, %v; want only %s", got, err, fresh.ID)
	}
	if _, err := l.Read(t.Context(), old.ID, 10, 0); err != nil {
		t.Fatalf("read after the newest dropped event: %v, want no gap (nothing after it was dropped)", err)
	}
}

func TestRedisLog(t *testing.T) {
	addr, _ := redistest.Start(t)
	client := rawClient(t, addr)
	n := 0
	runLogContract(t, func(t *testing.T, maxEvents int) Log {
		n++
		l, err := NewRedis(RedisConfig{Client: client, Prefix: fmt.Sprintf("test:%d:", n), MaxEvents: maxEvents})
		if err != nil {
			t.Fatal(err)
		}
		return l
	})
}

func TestRedisLogCluster(t *testing.T) {
	addrs, _ := redistest.StartCluster(t, 3)
	client := rawClient(t, addrs...)
	n := 0
	runLogContract(t, func(t *testing.T, maxEvents int) Log {
		n++
		l, err := NewRedis(RedisConfig{Client: client, Prefix: fmt.Sprintf("test:%d:", n), MaxEvents: maxEvents})
		if err != nil {
			t.Fatal(err)
		}
		return l
	})
}

// TestRedisLogLost checks that a reader resuming in a stream that Redis lost (FLUSHALL, or a restart without
// persistence) is told of the gap, even once new events have been appended with IDs above its position.
func TestRedisLogLost(t *testing.T) {
	srv := redistest.StartServer(t)
	client := rawClient(t, srv.Addr)
	l, err := NewRedis(RedisConfig{Client: client})
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	a, err := l.Append(ctx, Event{Kind: Online, HostID: "a", Epoch: 1, Seq: 2})
	if err != nil {
		t.Fatal(err)
	}
	if err := client.Do(ctx, client.B().Flushall().Build()).Error(); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Read(ctx, a.ID, 10, 0); !errors.Is(err, ErrGap) {
		t.Fatalf("read after flush, empty stream: %v, want ErrGap", err)
	}
	time.Sleep(2 * time.Millisecond) // new IDs above a's
	b, err := l.Append(ctx, Event{Kind: Online, HostID: "b", Epoch: 1, Seq: 2})
	if err != nil {
		t.Fatal(err)
	}
	got, err := l.Read(ctx, a.ID, 10, 0)
	if !errors.Is(err, ErrGap) || len(got) != 1 || got[0].ID != b.ID {
		t.Fatalf("read after flush, new stream: %v, %v; want ErrGap with %s", got, err, b.ID)
	}
	if got, err := l.Read(ctx, b.ID, 10, 0); err != nil || len(got) != 0 {
		t.Fatalf("read after the newest = %v, %v", got, err)
	}

	// A reader waiting at the newest event when the server restarts empty.
	done := make(chan error, 1)
	go func() {
		_, err := l.Read(ctx, b.ID, 10, 15*time.Second)
		done <- err
	}()
	srv.Restart()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := l.Append(ctx, Event{Kind: Online, HostID: "c", Epoch: 1, Seq: 2}); err == nil {
			break
		} else if time.Now().After(deadline) {
			t.Fatalf("append after restart: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	select {
	case err := <-done:
		// Either the wait saw the new stream (a gap) or it failed while the server was down; never events.
		if err == nil {
			t.Fatal("waiting read across a restart returned no error")
		}
	case <-time.After(20 * time.Second):
		t.Fatal("waiting read did not return")
	}
	if _, err := l.Read(ctx, b.ID, 10, 0); !errors.Is(err, ErrGap) {
		t.Fatalf("read after restart: %v, want ErrGap", err)
	}
}

func rawClient(t testing.TB, addrs ...string) rueidis.Client {
	t.Helper()
	c, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: addrs, DisableCache: true})
	if err != nil {
		t.Fatalf("redis client: %v", err)
	}
	t.Cleanup(c.Close)
	return c
}

// fanoutOver wraps l in a running Fanout of size for the test.
func fanoutOver(t *testing.T, l Log, size int) *Fanout {
	f := NewFanout(l, size)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); f.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return f
}

func TestFanoutMemory(t *testing.T) {
	runLogContract(t, func(t *testing.T, maxEvents int) Log {
		return fanoutOver(t, NewMemory(MemoryConfig{MaxEvents: maxEvents}), maxEvents)
	})
}

func TestFanoutRedis(t *testing.T) {
	addr, _ := redistest.Start(t)
	client := rawClient(t, addr)
	n := 0
	runLogContract(t, func(t *testing.T, maxEvents int) Log {
		n++
		l, err := NewRedis(RedisConfig{Client: client, Prefix: fmt.Sprintf("fan:%d:", n), MaxEvents: maxEvents})
		if err != nil {
			t.Fatal(err)
		}
		return fanoutOver(t, l, maxEvents)
	})
}

// TestFanoutManyReaders: many blocked readers of one Fanout all get each new event, and the underlying log is read
// by one reader only.
func TestFanoutManyReaders(t *testing.T) {
	base := &countingLog{Log: NewMemory(MemoryConfig{})}
	f := fanoutOver(t, base, 100)
	first, err := f.Append(t.Context(), Event{Kind: Online, HostID: "a"})
	if err != nil {
		t.Fatal(err)
	}
	// Wait until the fanout has the first event, so readers are served from its buffer.
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, hit, _ := f.fromBuffer(first.ID, 1); hit {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("fanout did not catch up")
		}
		time.Sleep(10 * time.Millisecond)
	}
	before := base.reads()
	const readers = 50
	var wg sync.WaitGroup
	got := make([][]Event, readers)
	for i := range readers {
		wg.Go(func() { got[i], _ = f.Read(t.Context(), first.ID, 10, 10*time.Second) })
	}
	time.Sleep(50 * time.Millisecond)
	second, err := f.Append(t.Context(), Event{Kind: Offline, HostID: "a"})
	if err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	for i, evs := range got {
		if len(evs) != 1 || evs[0].ID != second.ID {
			t.Fatalf("reader %d got %v, want %s", i, evs, second.ID)
		}
	}
	if n := base.reads() - before; n > 10 {
		t.Fatalf("%d reads of the underlying log for %d readers; want the fanout's own few", n, readers)
	}
}

// countingLog counts Reads.
type countingLog struct {
	Log
	mu sync.Mutex
	n  int
}

func (c *countingLog) Read(ctx context.Context, after string, max int, block time.Duration) ([]Event, error) {
	c.mu.Lock()
	c.n++
	c.mu.Unlock()
	return c.Log.Read(ctx, after, max, block)
}

func (c *countingLog) reads() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n
}

// TestFanoutRecent: Recent returns the newest events first, at most n of them and at most the buffer's size.
func TestFanoutRecent(t *testing.T) {
	f := fanoutOver(t, NewMemory(MemoryConfig{}), 3)
	for { // Run starts from the log's newest event: wait until it has, so that it sees every event appended next
		f.mu.Lock()
		ready, wake := f.ready, f.wake
		f.mu.Unlock()
		if ready {
			break
		}
		<-wake
	}
	if got := f.Recent(5); len(got) != 0 {
		t.Fatalf("Recent before any event = %v", got)
	}
	var last Event
	for _, id := range []string{"a", "b", "c", "d"} {
		e, err := f.Append(t.Context(), Event{Kind: Online, HostID: id})
		if err != nil {
			t.Fatal(err)
		}
		last = e
	}
	for { // wait until Run has read the last event
		if _, hit, wake := f.fromBuffer(last.ID, 1); hit {
			break
		} else {
			<-wake
		}
	}
	var hosts []string
	for _, e := range f.Recent(5) {
		hosts = append(hosts, e.HostID)
	}
	if strings.Join(hosts, ",") != "d,c,b" {
		t.Fatalf("Recent(5) = %v, want d,c,b (newest first, at most the buffer of 3)", hosts)
	}
	if got := f.Recent(1); len(got) != 1 || got[0].HostID != "d" {
		t.Fatalf("Recent(1) = %v", got)
	}
}

// TestFanoutAddIsAmortised: adding one event to a full buffer costs a few events' worth of allocation, not a copy
// of the buffer (which made every tunnel connect leave ~150 KiB of garbage on the relay), and the buffer still holds
// exactly the newest size events after base.
func TestFanoutAddIsAmortised(t *testing.T) {
	const size, n = 1024, 20 * 1024
	f := NewFanout(NewMemory(MemoryConfig{}), size)
	f.reset("0")
	evs := make([]Event, n)
	for i := range evs {
		evs[i] = Event{ID: strconv.Itoa(i + 1), Kind: Online, HostID: "h"}
	}
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for i := range evs {
		f.add(evs[i:i+1], evs[i].ID)
	}
	runtime.ReadMemStats(&after)
	perEvent := (after.TotalAlloc - before.TotalAlloc) / n
	// A copy of the buffer per event would be size × sizeof(Event); the wake channel and the amortised moves of
	// the window are a few events' worth.
	if limit := 16 * uint64(unsafe.Sizeof(Event{})); perEvent > limit {
		t.Fatalf("%d bytes allocated per event added to a full buffer of %d; want at most %d", perEvent, size, limit)
	}
	if len(f.buf) != size || f.buf[0].ID != strconv.Itoa(n-size+1) || f.base != strconv.Itoa(n-size) || f.pos != strconv.Itoa(n) {
		t.Fatalf("buffer holds %d events from %s after base %s up to %s; want %d from %d after %d up to %d",
			len(f.buf), f.buf[0].ID, f.base, f.pos, size, n-size+1, n-size, n)
	}
}
