package relay_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/switchboard-relay/switchboard/agent"
	"github.com/switchboard-relay/switchboard/internal/auth"
	"github.com/switchboard-relay/switchboard/internal/relay"
	"github.com/switchboard-relay/switchboard/internal/relaytest"
)

// TestForwardedProto: the host learns the scheme the client used. X-Forwarded-Proto is https when the connection
// was TLS at the relay, when the connection's context says a front terminated TLS (a PROXY v2 header), or with
// TrustForwardedProto when the front's X-Forwarded-Proto says so; a client's own X-Forwarded-Proto is ignored
// otherwise. Plain requests and upgrades alike.
func TestForwardedProto(t *testing.T) {
	for _, tc := range []struct {
		name      string
		tlsRelay  bool
		frontTLS  bool // ConnContext marks the connection
		trust     bool
		clientSet string
		want      string
	}{
		{name: "plain", want: "http"},
		{name: "client claim ignored", clientSet: "https", want: "http"},
		{name: "tls at the relay", tlsRelay: true, want: "https"},
		{name: "tls at a PROXY front", frontTLS: true, want: "https"},
		{name: "trusted front header", trust: true, clientSet: "https", want: "https"},
		{name: "trusted front says http", trust: true, clientSet: "http", want: "http"},
		{name: "trusted but absent", trust: true, want: "http"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reg := prometheus.NewRegistry()
			srv, err := relay.New(relay.Config{Verifier: auth.NewHS256([]byte(relaytest.Secret)), Logger: relaytest.Logger(t),
				Registerer: reg, Gatherer: reg, TrustForwardedProto: tc.trust})
			if err != nil {
				t.Fatal(err)
			}
			ts := httptest.NewUnstartedServer(srv)
			if tc.frontTLS {
				ts.Config.ConnContext = func(ctx context.Context, _ net.Conn) context.Context { return relay.ContextWithClientTLS(ctx) }
			}
			if tc.tlsRelay {
				ts.StartTLS()
			} else {
				ts.Start()
			}
			t.Cleanup(func() { _ = srv.Close(); ts.CloseClientConnections(); ts.Close() })
			seen := make(chan string, 2)
			relaytest.StartHost(t, ts.URL, "h", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				seen <- r.Header.Get("X-Forwarded-Proto")
				if r.Header.Get("Upgrade") != "" {
					w.Header().Set("Connection", "Upgrade")
					w.Header().Set("Upgrade", "test")
					w.WriteHeader(http.StatusSwitchingProtocols)
				}
			}), func(c *agent.Config) {
				if tc.tlsRelay {
					c.TLSConfig = &tls.Config{InsecureSkipVerify: true}
				}
			})
			tok := relaytest.ClientToken(t, "alice", "h")

			req, _ := http.NewRequest("GET", ts.URL+"/hosts/h/", nil)
			req.Header.Set("Authorization", "Bearer "+tok)
			if tc.clientSet != "" {
				req.Header.Set("X-Forwarded-Proto", tc.clientSet)
			}
			resp, err := ts.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if got := <-seen; got != tc.want {
				t.Fatalf("plain request: host saw X-Forwarded-Proto %q, want %q", got, tc.want)
			}

			// An upgrade, on a raw connection.
			var c net.Conn
			addr := ts.Listener.Addr().String()
			if tc.tlsRelay {
				c, err = tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"http/1.1"}})
			} else {
				c, err = net.Dial("tcp", addr)
			}
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			head := "GET /hosts/h/up HTTP/1.1\r\nHost: relay\r\nConnection: Upgrade\r\nUpgrade: test\r\nAuthorization: Bearer " + tok + "\r\n"
			if tc.clientSet != "" {
				head += "X-Forwarded-Proto: " + tc.clientSet + "\r\n"
			}
			if _, err := c.Write([]byte(head + "\r\n")); err != nil {
				t.Fatal(err)
			}
			resp, err = http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
				t.Fatalf("upgrade: %v %v", resp, err)
			}
			if got := <-seen; got != tc.want {
				t.Fatalf("upgrade: host saw X-Forwarded-Proto %q, want %q", got, tc.want)
			}
		})
	}
}
