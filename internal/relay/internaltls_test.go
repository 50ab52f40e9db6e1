package relay_test

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/switchboard-relay/switchboard/internal/directory"
	"github.com/switchboard-relay/switchboard/internal/relaytest"
)

// TestClusterInternalTLS: replicas whose internal listeners speak TLS and require a client certificate from the
// cluster's CA forward a GET, a POST and a WebSocket to each other over it. A caller without such a certificate
// (even one holding a correctly signed hop), a plain-HTTP caller, and a replica that does not trust the CA are all
// refused, and the replicas keep serving meanwhile.
func TestClusterInternalTLS(t *testing.T) {
	pki := relaytest.NewInternalPKI(t)
	dir := directory.NewMemory()
	t.Cleanup(func() { _ = dir.Close() })
	a := relaytest.StartTLSRelayOn(t, dir, pki, nil)
	b := relaytest.StartTLSRelayOn(t, dir, pki, nil)
	if !strings.HasPrefix(a.InternalURL, "https://") {
		t.Fatalf("internal URL %s, want https", a.InternalURL)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/get", seenHeaders)
	mux.HandleFunc("/post", func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		_, _ = io.WriteString(w, "got "+string(body))
	})
	echo := newEchoUpstream()
	mux.Handle("/ws", echo)
	relaytest.StartHost(t, a.URL, "h1", mux, nil)
	tok := relaytest.ClientToken(t, "alice", "h1")

	code, body := getText(t, b.URL+"/hosts/h1/get", tok)
	if want := `uri=/get sub=alice xff=127.0.0.1 auth="" hop="" hopsub=""`; code != 200 || body != want {
		t.Fatalf("GET via B over TLS: %d %q, want 200 %q", code, body, want)
	}
	req, _ := http.NewRequest("POST", b.URL+"/hosts/h1/post", strings.NewReader("payload"))
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := newClient(t).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	rb, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(rb) != "got payload" {
		t.Fatalf("POST via B over TLS: %d %q", resp.StatusCode, rb)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, _, err := dialWS(t, "ws"+strings.TrimPrefix(b.URL, "http")+"/hosts/h1/ws", tok)
	if err != nil {
		t.Fatalf("WebSocket via B over TLS: %v", err)
	}
	if err := c.Write(ctx, websocket.MessageText, []byte("hello")); err != nil {
		t.Fatal(err)
	}
	if _, got, err := c.Read(ctx); err != nil || string(got) != "hello" {
		t.Fatalf("echo via B over TLS: %q %v", got, err)
	}
	_ = c.Close(websocket.StatusNormalClosure, "bye")
	<-echo.requests

	// Without a client certificate from the CA: refused in the handshake, whatever the hop says.
	addr := strings.TrimPrefix(a.InternalURL, "https://")
	noCert := relaytest.NewInternalPKI(t) // another CA: a certificate A does not accept, and roots that accept A
	cfg := noCert.ClientConfig(t)
	cfg.RootCAs = pki.ClientConfig(t).RootCAs
	for name, cc := range map[string]*tls.Config{"no certificate": {RootCAs: cfg.RootCAs}, "certificate of another CA": cfg} {
		tr := &http.Transport{TLSClientConfig: cc}
		req, _ := http.NewRequest("GET", a.InternalURL+"/hosts/h1/get", nil)
		req.Header.Set("Switchboard-Hop", hopHeader(relaytest.ClusterSecret, "B", time.Now(), "GET", "/hosts/h1/get", addr, ""))
		resp, err := tr.RoundTrip(req)
		tr.CloseIdleConnections()
		if err == nil {
			resp.Body.Close()
			t.Fatalf("%s: internal listener answered %d, want a failed handshake", name, resp.StatusCode)
		}
	}
	// Plain HTTP to the TLS listener gets no HTTP answer from the relay.
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
	_, _ = io.WriteString(conn, "GET /hosts/h1/get HTTP/1.1\r\nHost: "+addr+"\r\n\r\n")
	got, _ := io.ReadAll(conn)
	conn.Close()
	if strings.Contains(string(got), "uri=/get") {
		t.Fatalf("plain HTTP reached the host: %q", got)
	}

	// A replica that does not trust the cluster's CA cannot forward to A: its clients get an error, not A's host.
	stranger := relaytest.StartTLSRelayOn(t, dir, relaytest.NewInternalPKI(t), nil)
	if code, body := getText(t, stranger.URL+"/hosts/h1/get", tok); code < 500 || strings.Contains(body, "uri=") {
		t.Fatalf("forward from a replica outside the CA: %d %q, want a 5xx", code, body)
	}
	if n := metricValue(t, stranger.Relay, "switchboard_forwards_total", "outcome", "peer_failed"); n != 1 {
		t.Errorf("stranger's failed forwards = %v, want 1", n)
	}
	// Meanwhile the cluster serves on.
	if code, _ := getText(t, b.URL+"/hosts/h1/get", tok); code != 200 {
		t.Fatalf("GET via B after the refusals: %d", code)
	}
}
