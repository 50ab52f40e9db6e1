package relay_test

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/switchboard-relay/switchboard/internal/presence"
	"github.com/switchboard-relay/switchboard/internal/relay"
	"github.com/switchboard-relay/switchboard/internal/relaytest"
)

// TestStalledPresenceConsumerIsCut: a consumer of /v1/presence/events that stops reading while events keep coming
// is cut after StallTimeout, instead of holding its goroutine and buffers until the relay stops; the relay keeps
// serving meanwhile.
func TestStalledPresenceConsumerIsCut(t *testing.T) {
	events := presence.NewMemory(presence.MemoryConfig{MaxEvents: 1 << 20})
	r := relaytest.StartRelay(t, func(c *relay.Config) {
		c.Events = events
		c.StallTimeout = 300 * time.Millisecond
	})
	tok := relaytest.ClientToken(t, "c", "*")
	nc, err := net.Dial("tcp", strings.TrimPrefix(r.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	_ = nc.(*net.TCPConn).SetReadBuffer(4 << 10)
	fmt.Fprintf(nc, "GET /v1/presence/events HTTP/1.1\r\nHost: relay\r\nAuthorization: Bearer %s\r\n\r\n", tok)
	status, err := bufio.NewReader(nc).ReadString('\n')
	if err != nil || !strings.Contains(status, " 200 ") {
		t.Fatalf("stream: %q %v", status, err)
	}
	// From here on the consumer reads nothing. Events far beyond what socket buffers hold keep coming.
	stop := make(chan struct{})
	appended := make(chan struct{})
	go func() {
		defer close(appended)
		label := strings.Repeat("x", 900)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			_, err := events.Append(context.Background(), presence.Event{Kind: presence.Online,
				HostID: fmt.Sprintf("h%d", i%1000), Seq: uint64(i + 1), Epoch: 1, Replica: label})
			if err != nil {
				return
			}
			if i%2000 == 1999 {
				time.Sleep(10 * time.Millisecond) // let the stream's reader keep up with the log
			}
		}
	}()
	defer func() { close(stop); <-appended }()
	relaytest.Eventually(t, 60*time.Second, "the stalled consumer cut", func() bool {
		return metricValue(t, r, "switchboard_bound_cuts_total", "reason", "stalled_client") >= 1
	})
	if code, _ := getText(t, r.URL+"/v1/hosts?online=true", tok); code != 200 {
		t.Fatalf("the relay stopped answering: %d", code)
	}
}
