package relay_test

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/switchboard-relay/switchboard/agent"
	"github.com/switchboard-relay/switchboard/internal/auth"
	"github.com/switchboard-relay/switchboard/internal/relay"
	"github.com/switchboard-relay/switchboard/internal/relaytest"
)

// TestTokenIsOneKind: an issuer's token that carries both a host id and an organization claim, without "kind", would
// let its bearer register a host and reach every host of the organization; it is refused on both endpoints (401).
// So is a client token without a subject. Well-formed tokens of each kind keep working meanwhile.
func TestTokenIsOneKind(t *testing.T) {
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
	j, err := auth.NewJWKS(auth.JWKSConfig{URL: jwks.URL, HostsClaim: "organizationIds", HostsSuffix: ":*", Audience: "relay"})
	if err != nil {
		t.Fatal(err)
	}
	r := relaytest.StartRelay(t, func(c *relay.Config) {
		c.Verifier = auth.Chain(auth.NewHS256([]byte(relaytest.Secret)), j)
	})
	sign := func(claims jwt.MapClaims) string {
		claims["exp"] = time.Now().Add(time.Hour).Unix()
		claims["aud"] = "relay"
		tok := jwt.NewWithClaims(jwt.SigningMethodEdDSA, claims)
		tok.Header["kid"] = "k1"
		s, err := tok.SignedString(priv)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	relaytest.StartHost(t, r.URL, "org1:m1", echoPath, func(c *agent.Config) {
		c.Token = sign(jwt.MapClaims{"sub": "desktop", "host_id": "org1:m1"})
	})

	both := sign(jwt.MapClaims{"sub": "desktop", "host_id": "org1:m2", "organizationIds": []string{"org1"}})
	if status, code := tunnelAttempt(t, r.URL, "org1:m2", both); status != 401 || code != "unauthorized" {
		t.Fatalf("tunnel with a host-and-client token: %d %s, want 401 unauthorized", status, code)
	}
	if code, body := getText(t, r.URL+"/hosts/org1:m1/x", both); code != 401 {
		t.Fatalf("client call with a host-and-client token: %d %q, want 401", code, body)
	}
	noSub := sign(jwt.MapClaims{"organizationIds": []string{"org1"}})
	if code, body := getText(t, r.URL+"/hosts/org1:m1/x", noSub); code != 401 {
		t.Fatalf("client token without sub: %d %q, want 401", code, body)
	}
	hsNoSub, _ := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"kind": "client", "hosts": []string{"*"},
		"exp": time.Now().Add(time.Hour).Unix()}).SignedString([]byte(relaytest.Secret))
	if code, body := getText(t, r.URL+"/hosts/org1:m1/x", hsNoSub); code != 401 {
		t.Fatalf("HS256 client token without sub: %d %q, want 401", code, body)
	}

	user := sign(jwt.MapClaims{"sub": "user-7", "organizationIds": []string{"org1"}})
	if code, body := getText(t, r.URL+"/hosts/org1:m1/x", user); code != 200 || body != "echoPath /x" {
		t.Fatalf("well-formed client token: %d %q", code, body)
	}
	if code, body := getText(t, r.URL+"/hosts/org1:m1/x", relaytest.ClientToken(t, "c", "org1:*")); code != 200 {
		t.Fatalf("HS256 client token: %d %q", code, body)
	}
}
