package relay_test

import (
	"bufio"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/switchboard-relay/switchboard/agent"
	"github.com/switchboard-relay/switchboard/internal/auth"
	"github.com/switchboard-relay/switchboard/internal/relay"
	"github.com/switchboard-relay/switchboard/internal/relaytest"
	"github.com/switchboard-relay/switchboard/internal/tunnel"
)

// tunnelAttempt sends one raw tunnel upgrade, written by hand so that any header bytes can be sent, and returns
// the status and error code the relay answered. A 101 is closed at once.
func tunnelAttempt(t *testing.T, relayURL, id, token string) (int, string) {
	t.Helper()
	u, _ := url.Parse(relayURL)
	c, err := net.Dial("tcp", u.Host)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var b strings.Builder
	fmt.Fprintf(&b, "GET %s HTTP/1.1\r\nHost: %s\r\nConnection: Upgrade\r\nUpgrade: %s\r\n%s: %s\r\n",
		tunnel.Path, u.Host, tunnel.RawUpgrade, tunnel.HeaderHostID, id)
	if token != "" {
		fmt.Fprintf(&b, "Authorization: Bearer %s\r\n", token)
	}
	b.WriteString("\r\n")
	if _, err := io.WriteString(c, b.String()); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusSwitchingProtocols {
		return resp.StatusCode, ""
	}
	var body struct {
		Error struct{ Code string } `json:"error"`
	}
	_ = json.NewDecoder(resp.Body).Decode(&body)
	return resp.StatusCode, body.Error.Code
}

func TestHostTokenIsBoundToItsID(t *testing.T) {
	r := relaytest.StartRelay(t, nil)
	expiredClaims := jwt.MapClaims{"sub": "host:a", "kind": "host", "host_id": "a", "exp": time.Now().Add(-time.Hour).Unix()}
	longExpired, _ := jwt.NewWithClaims(jwt.SigningMethodHS256, expiredClaims).SignedString([]byte(relaytest.Secret))
	forged, _ := auth.MintHost([]byte("another secret"), "a", time.Hour)
	tests := []struct {
		name, id, token string
		status          int
		code            string
	}{
		{"token for A registering B", "b", relaytest.HostToken(t, "a"), 403, "forbidden"},
		{"client token registering", "a", relaytest.ClientToken(t, "c", "*"), 403, "forbidden"},
		{"forged", "a", forged, 401, "unauthorized"},
		{"expired", "a", longExpired, 401, "unauthorized"},
		{"no token", "a", "", 401, "unauthorized"},
		{"garbage", "a", "not.a.jwt", 401, "unauthorized"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, code := tunnelAttempt(t, r.URL, tt.id, tt.token)
			if status != tt.status || code != tt.code {
				t.Fatalf("got %d %q, want %d %q", status, code, tt.status, tt.code)
			}
		})
	}
	if n := registrationCount(t, r, "forbidden"); n != 2 {
		t.Fatalf("forbidden registrations counted %v, want 2", n)
	}
}

func TestClientTokenReachesOnlyListedHosts(t *testing.T) {
	r := relaytest.StartRelay(t, nil)
	for _, id := range []string{"org1:a", "org1:b", "org2:a", "solo"} {
		relaytest.StartHost(t, r.URL, id, echoPath, nil)
	}
	tok := relaytest.ClientToken(t, "c", "org1:*", "solo")
	for id, want := range map[string]int{"org1:a": 200, "org1:b": 200, "solo": 200, "org2:a": 403} {
		if code, _ := getText(t, r.URL+"/hosts/"+id+"/", tok); code != want {
			t.Errorf("%s: got %d, want %d", id, code, want)
		}
	}
	hostTok := relaytest.HostToken(t, "solo")
	if code, _ := getText(t, r.URL+"/hosts/solo/", hostTok); code != 403 {
		t.Errorf("a host token used as a client token: got %d, want 403", code)
	}
}

// TestJWKSTokensEndToEnd: an app's own Ed25519 JWTs, verified against its JWKS, with a custom hosts claim.
func TestJWKSTokensEndToEnd(t *testing.T) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	jwks := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_ = json.NewEncoder(w).Encode(map[string]any{"keys": []map[string]string{{
			"kty": "OKP", "crv": "Ed25519", "kid": "k1", "alg": "EdDSA", "use": "sig",
			"x": base64.RawURLEncoding.EncodeToString(pub),
		}}})
	}))
	defer jwks.Close()
	j, err := auth.NewJWKS(auth.JWKSConfig{URL: jwks.URL, HostsClaim: "organizationIds", HostsSuffix: ":*", HostIDClaim: "machine"})
	if err != nil {
		t.Fatal(err)
	}
	r := relaytest.StartRelay(t, func(c *relay.Config) {
		c.Verifier = auth.Chain(auth.NewHS256([]byte(relaytest.Secret)), j)
	})
	sign := func(claims jwt.MapClaims) string {
		claims["exp"] = time.Now().Add(time.Hour).Unix()
		tok := jwt.NewWithClaims(jwt.SigningMethodEdDSA, claims)
		tok.Header["kid"] = "k1"
		s, err := tok.SignedString(priv)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	relaytest.StartHost(t, r.URL, "org1:m1", echoPath, func(c *agent.Config) {
		c.Token = sign(jwt.MapClaims{"sub": "desktop", "machine": "org1:m1"})
	})
	user := sign(jwt.MapClaims{"sub": "user-7", "organizationIds": []string{"org1"}})
	if code, body := getText(t, r.URL+"/hosts/org1:m1/x", user); code != 200 || body != "echoPath /x" {
		t.Fatalf("JWKS client through JWKS host: %d %q", code, body)
	}
	other := sign(jwt.MapClaims{"sub": "user-8", "organizationIds": []string{"org2"}})
	if code, _ := getText(t, r.URL+"/hosts/org1:m1/x", other); code != 403 {
		t.Fatalf("user of another org: %d, want 403", code)
	}
	if status, _ := tunnelAttempt(t, r.URL, "org1:m2", sign(jwt.MapClaims{"sub": "d", "machine": "org1:m1"})); status != 403 {
		t.Fatalf("JWKS host token for another machine: %d, want 403", status)
	}
}

// TestNewerTunnelReplacesOlder: last write wins, the older agent is told it was replaced (and does not fight
// back), and the old tunnel's end never removes the new one.
func TestNewerTunnelReplacesOlder(t *testing.T) {
	r := relaytest.StartRelay(t, nil)
	first := relaytest.StartHost(t, r.URL, "h", http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte("first"))
	}), nil)
	relaytest.StartHost(t, r.URL, "h", http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte("second"))
	}), nil)
	relaytest.Eventually(t, 5*time.Second, "the first agent's tunnel to close", func() bool { return first.Tunnels() == 0 })
	tok := relaytest.ClientToken(t, "c", "h")
	// The first agent waits ReplacedBackoff (60 s) before trying again, so for the rest of the test only the
	// second tunnel exists; it must keep routing and stay online.
	for range 20 {
		if code, body := getText(t, r.URL+"/hosts/h/", tok); code != 200 || body != "second" {
			t.Fatalf("after replacement: %d %q", code, body)
		}
	}
	if code, body := getText(t, r.URL+"/v1/hosts/h", tok); code != 200 || !strings.Contains(body, `"online":true`) {
		t.Fatalf("presence after replacement: %d %s", code, body)
	}
	if n := registrationCount(t, r, "replaced_older"); n != 1 {
		t.Fatalf("replaced registrations %v, want 1", n)
	}
	if first.Tunnels() != 0 {
		t.Fatal("the replaced agent reconnected at once (flapping)")
	}
}

func TestTokenSourceIsCalledOnEveryAttempt(t *testing.T) {
	r := relaytest.StartRelay(t, nil)
	calls := make(chan struct{}, 100)
	ln := relaytest.StartHost(t, r.URL, "h", echoPath, func(c *agent.Config) {
		c.Token = ""
		c.TokenSource = func(context.Context) (string, error) {
			calls <- struct{}{}
			return relaytest.HostToken(t, "h"), nil
		}
	})
	if len(calls) != 1 {
		t.Fatalf("token fetched %d times for one connection", len(calls))
	}
	// Drain makes the relay close the tunnel with 4001; the agent reconnects at once with a fresh token.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	go func() { _ = r.Drain(ctx) }()
	relaytest.Eventually(t, 5*time.Second, "a second token fetch", func() bool { return len(calls) >= 2 })
	_ = ln
}
