package relay_test

import (
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/switchboard-relay/switchboard/internal/relay"
	"github.com/switchboard-relay/switchboard/internal/relaytest"
)

// TestAccessLogSlowDiskDropsLines: with the log's file a pipe nobody reads (a disk that stopped), every exchange
// is still answered; lines past the bounded buffer are dropped and counted in switchboard_access_log_dropped_total;
// Close writes what the buffer holds once the reader drains the pipe.
func TestAccessLogSlowDiskDropsLines(t *testing.T) {
	path := filepath.Join(t.TempDir(), "stuck.log")
	if err := syscall.Mkfifo(path, 0o600); err != nil {
		t.Fatal(err)
	}
	// The reader end, opened first so that the writer's open does not wait; read only at the end.
	rd, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()
	const maxBuffered = 8 << 10
	al, _ := startAccessLog(t, relay.AccessLogConfig{Path: path, MaxBuffered: maxBuffered})
	env := startProxy(t, listenerHost, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}),
		func(c *relay.Config) { c.AccessLog = al }, nil)
	c := newClient(t)
	long := "/" + strings.Repeat("p", 1000) // lines of about 1.3 KB: the pipe (64 KiB) fills after ~50
	const n = 200
	for range n {
		resp := env.do(t, c, "GET", long, nil)
		readAll(t, resp)
		if resp.StatusCode != 200 {
			t.Fatalf("status %d", resp.StatusCode)
		}
	}
	// Every exchange was answered while the writer was stuck; its lines are written, buffered or dropped.
	var got int64
	drained := make(chan struct{})
	go func() {
		defer close(drained)
		m, _ := io.Copy(io.Discard, rd)
		got = m
	}()
	dropped := al.Dropped()
	if dropped == 0 {
		t.Fatalf("no line dropped with the writer stuck")
	}
	if v := seriesValue(t, env.relay, "switchboard_access_log_dropped_total", nil); v < float64(dropped) {
		t.Fatalf("switchboard_access_log_dropped_total %v, want at least %d", v, dropped)
	}
	if err := al.Close(); err != nil {
		t.Fatal(err)
	}
	<-drained
	// A line of an exchange that ended after Close is dropped too: every line is accounted for.
	relaytest.Eventually(t, 30*time.Second, "every line written or dropped", func() bool { return al.Written()+al.Dropped() == n })
	if lines := int64(al.Written()); got < lines*1000 {
		t.Fatalf("read %d bytes from the pipe for %d written lines", got, lines)
	}
}
