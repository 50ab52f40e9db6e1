package relay_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/switchboard-relay/switchboard/agent"
	"github.com/switchboard-relay/switchboard/internal/auth"
	"github.com/switchboard-relay/switchboard/internal/relay"
	"github.com/switchboard-relay/switchboard/internal/relaytest"
	"github.com/switchboard-relay/switchboard/internal/tunnel"
)

// echoPath answers with the path it got.
var echoPath = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	_, _ = io.WriteString(w, "echoPath "+r.URL.Path)
})

func getText(t *testing.T, url, token string) (int, string) {
	t.Helper()
	resp := relaytest.Do(t, "GET", url, token)
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// fetchText is getText for a goroutine the test spawned, which must not call t.Fatal: it returns the error.
func fetchText(url, token string) (int, string, error) {
	req, err := http.NewRequest("GET", url, nil)
	if err != nil {
		return 0, "", err
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

func TestEachTransportCarriesExchanges(t *testing.T) {
	for _, transport := range []string{agent.TransportRaw, agent.TransportWebSocket, agent.TransportAuto} {
		t.Run(transport, func(t *testing.T) {
			r := relaytest.StartRelay(t, nil)
			relaytest.StartHost(t, r.URL, "h1", echoPath, func(c *agent.Config) { c.Transport = transport })
			code, body := getText(t, r.URL+"/hosts/h1/x", relaytest.ClientToken(t, "c", "h1"))
			if code != 200 || body != "echoPath /x" {
				t.Fatalf("got %d %q", code, body)
			}
		})
	}
}

// A proxy in front of the relay that refuses unfamiliar upgrades (as some do) makes the agent fall back to
// WebSocket, and stay there.
func TestAutoTransportFallsBackToWebSocket(t *testing.T) {
	srv, err := relay.New(relay.Config{Verifier: auth.NewHS256([]byte(relaytest.Secret)), Logger: relaytest.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	var rawAttempts atomic.Int32
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.EqualFold(r.Header.Get("Upgrade"), tunnel.RawUpgrade) {
			rawAttempts.Add(1)
			http.Error(w, "unsupported upgrade", http.StatusBadRequest)
			return
		}
		srv.ServeHTTP(w, r)
	}))
	t.Cleanup(func() {
		_ = srv.Close()
		front.CloseClientConnections()
		front.Close()
	})
	ln := relaytest.StartHost(t, front.URL, "h1", echoPath, nil)
	code, body := getText(t, front.URL+"/hosts/h1/y", relaytest.ClientToken(t, "c", "h1"))
	if code != 200 || body != "echoPath /y" {
		t.Fatalf("got %d %q", code, body)
	}
	if n := rawAttempts.Load(); n != 1 {
		t.Fatalf("raw attempts = %d, want 1", n)
	}
	if ln.Tunnels() != 1 {
		t.Fatalf("tunnels = %d, want 1", ln.Tunnels())
	}
}

// A relay refusal (here: a token for another host) is final on the raw transport: no WebSocket retry hides it.
func TestRawRefusalIsNotRetriedOverWebSocket(t *testing.T) {
	r := relaytest.StartRelay(t, nil)
	ln, err := agent.Listen(context.Background(), agent.Config{
		Relays:     []string{r.URL},
		HostID:     "victim",
		Token:      relaytest.HostToken(t, "attacker"),
		MinBackoff: time.Hour, // one attempt is enough
		Logger:     relaytest.Logger(t),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	relaytest.Eventually(t, 5*time.Second, "one refused attempt", func() bool {
		return registrationCount(t, r, "forbidden") >= 1
	})
	time.Sleep(100 * time.Millisecond) // a wrong fallback would follow at once; give it the chance to show
	if got := registrationCount(t, r, "forbidden"); got != 1 {
		t.Fatalf("forbidden registrations = %v, want 1 (no fallback retry)", got)
	}
}

// registrationCount reads switchboard_tunnel_registrations_total{outcome} from the relay's registry.
func registrationCount(t *testing.T, r *relaytest.Relay, outcome string) float64 {
	t.Helper()
	mfs, err := r.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "switchboard_tunnel_registrations_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "outcome" && l.GetValue() == outcome {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}
