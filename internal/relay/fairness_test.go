package relay_test

import (
	"context"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/switchboard-relay/switchboard/internal/auth"
	"github.com/switchboard-relay/switchboard/internal/directory"
	"github.com/switchboard-relay/switchboard/internal/relay"
	"github.com/switchboard-relay/switchboard/internal/relaytest"
)

// holdWebSocket is a WebSocket upstream that accepts and then reads until the client goes: every connection holds
// one of the host's stream places for as long as the client keeps it.
var holdWebSocket = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	if !websocketUpgrade(r) {
		_, _ = w.Write([]byte("plain"))
		return
	}
	c, err := websocket.Accept(w, r, nil)
	if err != nil {
		return
	}
	defer c.CloseNow()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for {
		if _, _, err := c.Read(ctx); err != nil {
			return
		}
	}
})

func websocketUpgrade(r *http.Request) bool { return r.Header.Get("Upgrade") == "websocket" }

// wsFrom dials a WebSocket to url from the local address src (empty: any), with token if not empty. A refused
// upgrade returns the response: its status, error code and Retry-After.
func wsFrom(t *testing.T, url, token, src string) (*websocket.Conn, *http.Response) {
	t.Helper()
	d := &net.Dialer{}
	if src != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(src)}
	}
	tr := &http.Transport{DialContext: d.DialContext}
	t.Cleanup(tr.CloseIdleConnections)
	opts := &websocket.DialOptions{HTTPHeader: http.Header{}, HTTPClient: &http.Client{Transport: tr}}
	if token != "" {
		opts.HTTPHeader.Set("Authorization", "Bearer "+token)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, resp, err := websocket.Dial(ctx, url, opts)
	if err != nil {
		if resp == nil {
			t.Fatalf("dial %s: %v", url, err)
		}
		return nil, resp
	}
	t.Cleanup(func() { _ = c.CloseNow() })
	return c, resp
}

// TestStreamsPerClientShare: one caller holding WebSockets to a host is refused 429 too_many_streams (with
// Retry-After) past its share of the host's streams, while other callers of the same host, told apart by token
// subject or, without authentication, by IP, still get through.
func TestStreamsPerClientShare(t *testing.T) {
	const share, hogTries = 3, 10
	tests := []struct {
		name     string
		verifier auth.Verifier
		hog      [2]string // token subject, source IP
		other    [2]string
	}{
		{"by subject", nil, [2]string{"hog", "127.0.0.1"}, [2]string{"polite", "127.0.0.1"}},
		{"by IP without auth", auth.AllowAll(), [2]string{"", "127.0.0.1"}, [2]string{"", "127.0.0.2"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := relaytest.StartRelay(t, func(c *relay.Config) {
				c.MaxStreamsPerHost = 4 * share
				c.MaxStreamsPerClient = share
				if tt.verifier != nil {
					c.Verifier = tt.verifier
				}
			})
			relaytest.StartHost(t, r.URL, "h", holdWebSocket, nil)
			relaytest.StartHost(t, r.URL, "h2", holdWebSocket, nil)
			token := func(sub string) string {
				if sub == "" {
					return ""
				}
				return relaytest.ClientToken(t, sub, "*")
			}
			wsURL := "ws" + r.URL[len("http"):] + "/hosts/h/"
			refused := 0
			for i := range hogTries {
				c, resp := wsFrom(t, wsURL, token(tt.hog[0]), tt.hog[1])
				if i < share {
					if c == nil {
						t.Fatalf("hog's WebSocket %d: %d, want 101", i, resp.StatusCode)
					}
					continue
				}
				if c != nil || resp.StatusCode != http.StatusTooManyRequests || errorCode(t, resp) != "too_many_streams" {
					t.Fatalf("hog's WebSocket %d: got through or wrong refusal (%v)", i, resp.Status)
				}
				if resp.Header.Get("Retry-After") == "" {
					t.Fatal("429 without Retry-After")
				}
				refused++
			}
			// Everyone else: the same host, by WebSocket; and another host for the hog itself.
			for i := range share {
				if c, resp := wsFrom(t, wsURL, token(tt.other[0]), tt.other[1]); c == nil {
					t.Fatalf("another caller's WebSocket %d: %d, want 101", i, resp.StatusCode)
				}
			}
			if c, resp := wsFrom(t, "ws"+r.URL[len("http"):]+"/hosts/h2/", token(tt.hog[0]), tt.hog[1]); c == nil {
				t.Fatalf("the hog on another host: %d, want 101", resp.StatusCode)
			}
			if got := metricValue(t, r, "switchboard_client_stream_limit_refused_total", "", ""); got != float64(refused) {
				t.Fatalf("switchboard_client_stream_limit_refused_total = %v, want %d", got, refused)
			}
		})
	}
}

// TestStreamsPerClientPlacesComeBack: a caller's places are given back when its exchanges end, so a caller at its
// share gets in again once it closes a WebSocket.
func TestStreamsPerClientPlacesComeBack(t *testing.T) {
	r := relaytest.StartRelay(t, func(c *relay.Config) { c.MaxStreamsPerHost = 100; c.MaxStreamsPerClient = 1 })
	relaytest.StartHost(t, r.URL, "h", holdWebSocket, nil)
	tok := relaytest.ClientToken(t, "c", "h")
	wsURL := "ws" + r.URL[len("http"):] + "/hosts/h/"
	first, _ := wsFrom(t, wsURL, tok, "")
	if first == nil {
		t.Fatal("first WebSocket refused")
	}
	if c, resp := wsFrom(t, wsURL, tok, ""); c != nil || resp.StatusCode != http.StatusTooManyRequests {
		t.Fatal("second WebSocket got through at a share of 1")
	}
	_ = first.Close(websocket.StatusNormalClosure, "")
	relaytest.Eventually(t, 20*time.Second, "the place to come back", func() bool {
		c, _ := wsFrom(t, wsURL, tok, "")
		if c != nil {
			_ = c.CloseNow()
		}
		return c != nil
	})
}

// TestStreamsPerClientThroughAnotherReplica: the share is kept where the tunnel is, so a caller cannot pass it by
// calling the host through another replica, which forwards its exchanges with the caller's subject.
func TestStreamsPerClientThroughAnotherReplica(t *testing.T) {
	const share = 2
	dir := directory.NewMemory()
	t.Cleanup(func() { _ = dir.Close() })
	mutate := func(c *relay.Config) { c.MaxStreamsPerHost = 4 * share; c.MaxStreamsPerClient = share }
	a, b := relaytest.StartRelayOn(t, dir, mutate), relaytest.StartRelayOn(t, dir, mutate)
	relaytest.StartHost(t, a.URL, "h", holdWebSocket, nil)
	hog, polite := relaytest.ClientToken(t, "hog", "h"), relaytest.ClientToken(t, "polite", "h")
	relaytest.Eventually(t, 20*time.Second, "the host through B", func() bool {
		code, _ := getText(t, b.URL+"/hosts/h/", polite)
		return code == 200
	})
	for i, base := range []string{a.URL, b.URL, b.URL} {
		c, resp := wsFrom(t, "ws"+base[len("http"):]+"/hosts/h/", hog, "")
		if (c != nil) != (i < share) {
			t.Fatalf("hog's WebSocket %d via %s: %d", i, base, resp.StatusCode)
		}
		if c == nil && (resp.StatusCode != http.StatusTooManyRequests || errorCode(t, resp) != "too_many_streams") {
			t.Fatalf("hog's WebSocket %d refused with %d", i, resp.StatusCode)
		}
	}
	if c, resp := wsFrom(t, "ws"+b.URL[len("http"):]+"/hosts/h/", polite, ""); c == nil {
		t.Fatalf("another caller via B: %d", resp.StatusCode)
	}
}
