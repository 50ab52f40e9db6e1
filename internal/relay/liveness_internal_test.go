package relay

import (
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/coder/websocket"
	"github.com/hashicorp/yamux"

	"github.com/switchboard-relay/switchboard/internal/tunnel"
)

// blackholeTunnel registers a tunnel for id whose agent never answers: its side of an in-memory pipe reads every
// frame and answers none. It records when each ping arrived (yamux header: version, type 2 = ping, flags 1 = SYN).
func blackholeTunnel(t *testing.T, s *Server, id string, pings func(id string, at time.Time)) *tunnelConn {
	t.Helper()
	relaySide, agentSide := net.Pipe()
	ycfg := tunnel.Options{PingInterval: s.cfg.PingInterval}.YamuxConfig()
	ycfg.EnableKeepAlive = false
	sess, err := yamux.Client(relaySide, ycfg)
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		defer agentSide.Close()
		var hdr [12]byte
		for {
			if _, err := io.ReadFull(agentSide, hdr[:]); err != nil {
				return
			}
			if hdr[1] == 2 && binary.BigEndian.Uint16(hdr[2:4])&1 != 0 {
				pings(id, time.Now())
			}
			if hdr[1] == 0 { // data: skip its payload
				if _, err := io.CopyN(io.Discard, agentSide, int64(binary.BigEndian.Uint32(hdr[8:12]))); err != nil {
					return
				}
			}
		}
	}()
	tc := &tunnelConn{hostID: id, sess: sess, log: s.log, done: make(chan struct{}),
		closeConn: func(*tunnelConn, websocket.StatusCode, string) {}}
	tc.transport = s.newTransport(tc)
	s.mu.Lock()
	s.settingUp++ // as reserveSlot would
	s.mu.Unlock()
	if _, ok := s.register(tc); !ok {
		t.Fatal("register refused the tunnel")
	}
	return tc
}

// TestPingLoopSpreadsAndFindsBlackholes: the ping loop pings each tunnel once per interval, the tunnels in
// pingSlices groups spread over the interval rather than all at once; a tunnel that answers no ping is aborted
// within three intervals of its registration, and not before two.
func TestPingLoopSpreadsAndFindsBlackholes(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const interval = 10 * time.Second
		s := newBubbleServer(t, func(c *Config) { c.PingInterval = interval })
		var mu sync.Mutex
		first := map[string]time.Time{}
		record := func(id string, at time.Time) {
			mu.Lock()
			defer mu.Unlock()
			if _, ok := first[id]; !ok {
				first[id] = at
			}
		}
		start := time.Now()
		const n = 40
		tcs := make([]*tunnelConn, n)
		for i := range n {
			tcs[i] = blackholeTunnel(t, s, fmt.Sprint("h", i), record)
		}
		go func() { _ = s.Run(t.Context()) }()

		time.Sleep(interval)
		synctest.Wait()
		mu.Lock()
		instants := map[time.Duration]int{}
		for _, at := range first {
			instants[at.Sub(start)]++
		}
		pinged := len(first)
		mu.Unlock()
		if pinged != n {
			t.Fatalf("%d of %d tunnels pinged within one interval", pinged, n)
		}
		if len(instants) != pingSlices {
			t.Fatalf("pings at %d instants within the interval, want %d (one per slice): %v", len(instants), pingSlices, instants)
		}
		for at, k := range instants {
			if k != n/pingSlices {
				t.Fatalf("%d pings at %v, want %d per slice: %v", k, at, n/pingSlices, instants)
			}
		}

		time.Sleep(2*interval - time.Since(start) - time.Millisecond)
		synctest.Wait()
		for _, tc := range tcs {
			select {
			case <-tc.done:
				t.Fatalf("%s aborted before two intervals", tc.hostID)
			default:
			}
		}
		time.Sleep(3*interval - time.Since(start))
		synctest.Wait()
		for _, tc := range tcs {
			select {
			case <-tc.done:
				if tc.closeReason != "ping_timeout" {
					t.Fatalf("%s closed as %q, want ping_timeout", tc.hostID, tc.closeReason)
				}
			default:
				t.Fatalf("%s, which answers no ping, still open after three intervals", tc.hostID)
			}
		}
	})
}
