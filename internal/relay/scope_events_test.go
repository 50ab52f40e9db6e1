package relay_test

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/switchboard-relay/switchboard/internal/relay"
	"github.com/switchboard-relay/switchboard/internal/relaytest"
)

// rawLine is one line of an event stream.
type rawLine struct {
	text string
}

func (l rawLine) String() string { return l.text }

// rawStream is an event stream read line by line, comments included; its reader goroutine ends with the test.
type rawStream struct {
	lines  chan rawLine
	status int
	header http.Header
	opened time.Time
}

// subscribeRaw opens GET base/v1/presence/events with token and, if not empty, Last-Event-ID lastID.
func subscribeRaw(t *testing.T, base, token, lastID string) *rawStream {
	t.Helper()
	return subscribeRawAt(t, base+"/v1/presence/events", token, lastID)
}

// subscribeRawAt is subscribeRaw for the stream's full URL, query included.
func subscribeRawAt(t *testing.T, u, token, lastID string) *rawStream {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "GET", u, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	if lastID != "" {
		req.Header.Set("Last-Event-ID", lastID)
	}
	opened := time.Now()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		cancel()
		t.Fatalf("subscribe: %v", err)
	}
	s := &rawStream{lines: make(chan rawLine, 4096), status: resp.StatusCode, header: resp.Header, opened: opened}
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer close(s.lines)
		defer resp.Body.Close()
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			s.lines <- rawLine{text: sc.Text()}
		}
	}()
	t.Cleanup(func() { cancel(); <-done })
	return s
}

// until reads lines until one satisfies stop, failing after timeout; it returns every line read, the last one
// included.
func (s *rawStream) until(t *testing.T, timeout time.Duration, what string, stop func(string) bool) []rawLine {
	t.Helper()
	var got []rawLine
	deadline := time.After(timeout)
	for {
		select {
		case l, ok := <-s.lines:
			if !ok {
				t.Fatalf("stream ended waiting for %s; read %v", what, got)
			}
			got = append(got, l)
			if stop(l.text) {
				return got
			}
		case <-deadline:
			t.Fatalf("no %s within %v; read %v", what, timeout, got)
		}
	}
}

// drain returns the lines already received, without waiting.
func (s *rawStream) drain() []rawLine {
	var got []rawLine
	for {
		select {
		case l, ok := <-s.lines:
			if !ok {
				return got
			}
			got = append(got, l)
		default:
			return got
		}
	}
}

// TestEventsRevealNothingOutOfScope: a stream with a one-host token writes nothing but its fixed-schedule
// heartbeats while another tenant's hosts come and go; its event ids do not count the other tenant's events, yet
// resuming from them skips those events; forged positions get the same reset as lost ones. A wide stream sees all
// of it meanwhile.
func TestEventsRevealNothingOutOfScope(t *testing.T) {
	const beat = 200 * time.Millisecond
	r := relaytest.StartRelay(t, func(c *relay.Config) { c.FlapWindow = -1; c.EventsHeartbeat = beat })
	narrowTok := relaytest.ClientToken(t, "c", "a:1")
	wideTok := relaytest.ClientToken(t, "c", "*")
	narrow := subscribeRaw(t, r.URL, narrowTok, "")
	wide := subscribe(t, r.URL, wideTok, "")

	a := relaytest.StartHost(t, r.URL, "a:1", textHandler("a"), nil)
	wide.expect(t, 10*time.Second, "online a:1")
	var firstID string
	narrow.until(t, 10*time.Second, "online a:1", func(l string) bool {
		if id, ok := strings.CutPrefix(l, "id: "); ok {
			firstID = id
		}
		return strings.HasPrefix(l, "data: ") && strings.Contains(l, `"a:1"`)
	})
	narrow.drain()

	// Another tenant's hosts come and go, ten events.
	var want []string
	for i := range 5 {
		id := fmt.Sprintf("b:%d", i)
		l := relaytest.StartHost(t, r.URL, id, textHandler("b"), nil)
		wide.expect(t, 10*time.Second, "online "+id)
		_ = l.Close()
		wide.expect(t, 10*time.Second, "offline "+id)
		want = append(want, "online "+id, "offline "+id)
	}
	// The narrow stream meanwhile: heartbeat comments only, at most one per beat since the stream opened. Wait for
	// a few more beats, so that anything the churn caused has arrived.
	n := 0
	lines := narrow.until(t, 30*time.Second, "three heartbeats after the churn", func(l string) bool {
		if l == ": heartbeat" {
			n++
		}
		return n >= 3 || (l != "" && l != ": heartbeat") // anything else fails below, at once
	})
	elapsed := time.Since(narrow.opened)
	beats := 0
	for _, l := range lines {
		switch l.text {
		case ": heartbeat":
			beats++
		case "":
		default:
			t.Fatalf("the narrow stream wrote %q while only another tenant's hosts changed", l.text)
		}
	}
	if max := int(elapsed/beat) + 1; beats > max {
		t.Fatalf("%d heartbeats in %v, more than one per %v: their timing follows something else", beats, elapsed, beat)
	}

	// The narrow client's next own event: its id reads as nothing, and resuming from the first one skips the
	// other tenant's ten events.
	_ = a.Close()
	var secondID string
	got := narrow.until(t, 10*time.Second, "offline a:1", func(l string) bool {
		if id, ok := strings.CutPrefix(l, "id: "); ok {
			secondID = id
		}
		return strings.HasPrefix(l, "data: ")
	})
	data := got[len(got)-1].text
	if !strings.Contains(data, `"type":"offline"`) || !strings.Contains(data, `"id":"`+secondID+`"`) {
		t.Fatalf("event %q, want the offline of a:1 carrying its id %q", data, secondID)
	}
	for _, id := range []string{firstID, secondID} {
		if strings.Count(id, "-") == 1 && !strings.ContainsAny(id, "_ABCDEFGHIJKLMNOPQRSTUVWXYZ") {
			t.Fatalf("event id %q looks like a raw log position", id)
		}
	}
	resumed := subscribe(t, r.URL, narrowTok, firstID)
	resumed.expect(t, 10*time.Second, "offline a:1")
	resumed.quiet(t, 3*beat)
	wideResumed := subscribe(t, r.URL, wideTok, firstID)
	wideResumed.expect(t, 10*time.Second, append(want, "offline a:1")...) // the id is a real position before them

	// Positions the relay did not issue: a reset and the present, the same whatever was forged.
	tampered := []byte(secondID)
	tampered[len(tampered)/2] ^= 0x01
	for name, id := range map[string]string{
		"raw log position": "1-1",
		"junk":             "!!",
		"tampered":         string(tampered),
		"very long":        strings.Repeat("A", 4096),
	} {
		s := subscribeRaw(t, r.URL, narrowTok, id)
		if s.status != 200 {
			t.Fatalf("%s: status %d, want 200", name, s.status)
		}
		lines := s.until(t, 10*time.Second, "the reset's data", func(l string) bool { return strings.HasPrefix(l, "data: ") })
		var kinds []string
		for _, l := range lines {
			if k, ok := strings.CutPrefix(l.text, "event: "); ok {
				kinds = append(kinds, k)
			}
		}
		if strings.Join(kinds, ",") != "reset" || lines[len(lines)-1].text != `data: {"reason":"gap"}` {
			t.Fatalf("%s: %v, want one reset", name, lines)
		}
	}
	if n := metricValue(t, r, "switchboard_positions_refused_total", "kind", "event_id"); n != 4 {
		t.Errorf("switchboard_positions_refused_total{kind=event_id} = %v, want 4", n)
	}
}
