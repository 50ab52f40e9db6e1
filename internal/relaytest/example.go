package relaytest

import (
	"context"
	"log/slog"
	"net/http/httptest"
	"time"

	"github.com/switchboard-relay/switchboard/internal/auth"
	"github.com/switchboard-relay/switchboard/internal/relay"
)

// Example is a real relay for the runnable examples of the public packages, which have no testing.T: HS256 on
// Secret, presence events without a flap window, logs discarded. Close stops it.
type Example struct {
	// URL is the relay's base URL.
	URL string

	srv    *relay.Server
	ts     *httptest.Server
	cancel context.CancelFunc
	done   chan struct{}
}

// StartExample starts an Example relay; it panics if the relay cannot start (a broken test setup, not input).
func StartExample() *Example {
	srv, err := relay.New(relay.Config{Verifier: auth.NewHS256([]byte(Secret)), FlapWindow: -1,
		Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		panic(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	e := &Example{srv: srv, ts: httptest.NewServer(srv), cancel: cancel, done: make(chan struct{})}
	e.URL = e.ts.URL
	go func() { defer close(e.done); _ = srv.Run(ctx) }()
	return e
}

// HostToken mints a host token for id.
func (e *Example) HostToken(id string) string {
	tok, err := auth.MintHost([]byte(Secret), id, time.Hour)
	if err != nil {
		panic(err)
	}
	return tok
}

// ClientToken mints a client token reaching hosts.
func (e *Example) ClientToken(hosts ...string) string {
	tok, err := auth.MintClient([]byte(Secret), "example", hosts, time.Hour)
	if err != nil {
		panic(err)
	}
	return tok
}

// Close stops the relay and waits for it.
func (e *Example) Close() {
	e.cancel()
	<-e.done
	_ = e.srv.Close()
	e.ts.CloseClientConnections()
	e.ts.Close()
}
