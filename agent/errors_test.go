package agent_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/switchboard-relay/switchboard/agent"
	"github.com/switchboard-relay/switchboard/internal/relaytest"
)

// TestRefusedStaticTokenStopsTheListener: a static token the relay refuses (401: not a valid token; 403: a host
// token for another id) ends the listener; Accept, WaitUp and Err say so with an error matching ErrAuth that
// carries the relay's status, and http.Serve returns it.
func TestRefusedStaticTokenStopsTheListener(t *testing.T) {
	r := relaytest.StartRelay(t, nil)
	for _, tc := range []struct {
		name   string
		token  string
		status int
	}{
		{"invalid", "not-a-token", http.StatusUnauthorized},
		{"other host id", relaytest.HostToken(t, "someone-else"), http.StatusForbidden},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ln, err := agent.Listen(t.Context(), agent.Config{Relays: []string{r.URL}, HostID: "mine", Token: tc.token,
				MinBackoff: 10 * time.Millisecond, Logger: relaytest.Logger(t)})
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			serveErr := make(chan error, 1)
			go func() { serveErr <- http.Serve(ln, http.NotFoundHandler()) }()
			var err2 error
			select {
			case err2 = <-serveErr:
			case <-time.After(time.Minute):
				t.Fatal("http.Serve still running a minute after the relay refused the token")
			}
			if !errors.Is(err2, agent.ErrAuth) {
				t.Fatalf("http.Serve returned %v, want an error matching agent.ErrAuth", err2)
			}
			var de *agent.DialError
			if !errors.As(err2, &de) || de.Status != tc.status || de.Relay != r.URL {
				t.Fatalf("error %v: want a *DialError with status %d from %s, got %+v", err2, tc.status, r.URL, de)
			}
			if err := ln.WaitUp(t.Context()); !errors.Is(err, agent.ErrAuth) {
				t.Fatalf("WaitUp = %v, want ErrAuth", err)
			}
			if err := ln.Err(); !errors.Is(err, agent.ErrAuth) {
				t.Fatalf("Err = %v, want ErrAuth", err)
			}
		})
	}
}

// TestTokenSourceRefusalIsRetried: with a TokenSource a refused token is transient (the next call may return a
// good one): Err shows the refusal while the listener retries, and the tunnel comes up once the source recovers.
func TestTokenSourceRefusalIsRetried(t *testing.T) {
	r := relaytest.StartRelay(t, nil)
	var calls atomic.Int32
	good := relaytest.HostToken(t, "h1")
	ln, err := agent.Listen(t.Context(), agent.Config{Relays: []string{r.URL}, HostID: "h1",
		TokenSource: func(context.Context) (string, error) {
			if calls.Add(1) <= 3 {
				return "not-a-token", nil
			}
			return good, nil
		},
		MinBackoff: 10 * time.Millisecond, MaxBackoff: 20 * time.Millisecond, Logger: relaytest.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	relaytest.Eventually(t, time.Minute, "a transient refusal in Err", func() bool {
		return errors.Is(ln.Err(), agent.ErrAuth) || ln.Tunnels() > 0
	})
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	if err := ln.WaitUp(ctx); err != nil {
		t.Fatalf("WaitUp after the source recovered: %v", err)
	}
	if err := ln.Err(); err != nil {
		t.Fatalf("Err while up = %v, want nil", err)
	}
	if n := calls.Load(); n < 4 {
		t.Fatalf("token source called %d times, want at least 4", n)
	}
}

// TestTokenSourceErrAuthStops: a TokenSource error wrapping ErrAuth stops the listener; any other error is
// retried.
func TestTokenSourceErrAuthStops(t *testing.T) {
	r := relaytest.StartRelay(t, nil)
	var calls atomic.Int32
	ln, err := agent.Listen(t.Context(), agent.Config{Relays: []string{r.URL}, HostID: "h1",
		TokenSource: func(context.Context) (string, error) {
			if calls.Add(1) == 1 {
				return "", errors.New("token service unreachable")
			}
			return "", fmt.Errorf("signed out: %w", agent.ErrAuth)
		},
		MinBackoff: 10 * time.Millisecond, Logger: relaytest.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	_, err = ln.Accept()
	if !errors.Is(err, agent.ErrAuth) || errors.Is(err, net.ErrClosed) {
		t.Fatalf("Accept = %v, want ErrAuth", err)
	}
	if n := calls.Load(); n != 2 {
		t.Fatalf("token source called %d times, want 2 (one transient failure retried, then the permanent one)", n)
	}
}

// TestAcceptAfterCloseIsErrClosed: Close is not a failure; Accept says net.ErrClosed and Err stays quiet.
func TestAcceptAfterCloseIsErrClosed(t *testing.T) {
	r := relaytest.StartRelay(t, nil)
	ln := relaytest.StartListener(t, r.URL, "h1", nil)
	_ = ln.Close()
	if _, err := ln.Accept(); !errors.Is(err, net.ErrClosed) || errors.Is(err, agent.ErrAuth) {
		t.Fatalf("Accept after Close = %v, want net.ErrClosed", err)
	}
}
