package auth

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// rsaTestKey is generated once: 2048-bit generation is slow under the race detector.
var rsaTestKey = sync.OnceValue(func() *rsa.PrivateKey {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		panic(err)
	}
	return k
})

// signer is a private key with its kid.
type signer struct {
	kid string
	key any // *rsa.PrivateKey or ed25519.PrivateKey
}

func (s signer) method() jwt.SigningMethod {
	if _, ok := s.key.(ed25519.PrivateKey); ok {
		return jwt.SigningMethodEdDSA
	}
	return jwt.SigningMethodRS256
}

func (s signer) jwk() map[string]string {
	switch k := s.key.(type) {
	case *rsa.PrivateKey:
		return map[string]string{
			"kty": "RSA", "kid": s.kid, "use": "sig", "alg": "RS256",
			"n": base64.RawURLEncoding.EncodeToString(k.N.Bytes()),
			"e": base64.RawURLEncoding.EncodeToString(big.NewInt(int64(k.E)).Bytes()),
		}
	case ed25519.PrivateKey:
		return map[string]string{
			"kty": "OKP", "crv": "Ed25519", "kid": s.kid,
			"x": base64.RawURLEncoding.EncodeToString(k.Public().(ed25519.PublicKey)),
		}
	}
	panic(fmt.Sprintf("unexpected key %T", s.key))
}

// sign returns a token for claims, with an exp an hour ahead unless claims set one.
func (s signer) sign(t testing.TB, claims jwt.MapClaims) string {
	t.Helper()
	if _, ok := claims["exp"]; !ok {
		claims["exp"] = time.Now().Add(24 * time.Hour).Unix() // outlives the tests' fake clock
	}
	tok := jwt.NewWithClaims(s.method(), claims)
	tok.Header["kid"] = s.kid
	str, err := tok.SignedString(s.key)
	if err != nil {
		t.Fatalf("sign: %v", err)
	}
	return str
}

func newEd25519(t testing.TB, kid string) signer {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return signer{kid: kid, key: priv}
}

// jwksServer serves the public halves of its signers and counts fetches.
type jwksServer struct {
	*httptest.Server
	fetches atomic.Int64

	mu      sync.Mutex
	signers []signer
	status  int
}

func startJWKS(t testing.TB, signers ...signer) *jwksServer {
	t.Helper()
	s := &jwksServer{signers: signers, status: http.StatusOK}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.fetches.Add(1)
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.status != http.StatusOK {
			http.Error(w, "unavailable", s.status)
			return
		}
		keys := make([]map[string]string, 0, len(s.signers))
		for _, sg := range s.signers {
			keys = append(keys, sg.jwk())
		}
		w.Header().Set("Content-Type", "application/jwk-set+json")
		_ = json.NewEncoder(w).Encode(map[string]any{"keys": keys})
	}))
	t.Cleanup(s.Close)
	return s
}

func (s *jwksServer) set(status int, signers ...signer) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.status, s.signers = status, signers
}

// fakeClock is a settable clock for the JWKS rate limit.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }

func (c *fakeClock) advance(d time.Duration) { c.mu.Lock(); defer c.mu.Unlock(); c.t = c.t.Add(d) }

func newTestJWKS(t *testing.T, srv *jwksServer, cfg JWKSConfig) (*JWKS, *fakeClock) {
	t.Helper()
	cfg.URL = srv.URL
	cfg.HTTPClient = srv.Client()
	cfg.Logger = slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
	j, err := NewJWKS(cfg)
	if err != nil {
		t.Fatalf("NewJWKS: %v", err)
	}
	clock := &fakeClock{t: time.Now()}
	j.now = clock.now
	return j, clock
}

func TestJWKSVerify(t *testing.T) {
	rs := signer{kid: "rsa-1", key: rsaTestKey()}
	ed := newEd25519(t, "ed-1")
	srv := startJWKS(t, rs, ed)
	j, _ := newTestJWKS(t, srv, JWKSConfig{})

	for _, sg := range []signer{rs, ed} {
		t.Run(sg.kid, func(t *testing.T) {
			c, err := j.Verify(t.Context(), sg.sign(t, jwt.MapClaims{"sub": "user-1", "hosts": []string{"org:*"}}))
			if err != nil {
				t.Fatalf("Verify: %v", err)
			}
			if c.Subject != "user-1" || c.Kind != KindClient || !slices.Equal(c.Hosts, []string{"org:*"}) || c.ExpiresAt.IsZero() {
				t.Fatalf("claims = %+v", c)
			}
			if !c.MayReach("org:a") || c.MayReach("other:a") {
				t.Fatalf("permissions wrong: %+v", c)
			}
		})
	}
	if got := srv.fetches.Load(); got != 1 {
		t.Fatalf("fetches = %d, want 1", got)
	}
}

func TestJWKSRejects(t *testing.T) {
	rs := signer{kid: "rsa-1", key: rsaTestKey()}
	ed := newEd25519(t, "ed-1")
	srv := startJWKS(t, rs, ed)
	j, _ := newTestJWKS(t, srv, JWKSConfig{})

	otherEd := newEd25519(t, "ed-1") // same kid, key the JWKS does not hold
	pub := rs.jwk()
	nb, _ := base64.RawURLEncoding.DecodeString(pub["n"])
	hsWithModulus := signer{kid: "rsa-1", key: nb}
	// hsToken signs with HMAC using the RSA modulus as the secret: the classic alg-confusion attack.
	hsTok := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"sub": "x", "exp": time.Now().Add(time.Hour).Unix()})
	hsTok.Header["kid"] = hsWithModulus.kid
	hsStr, err := hsTok.SignedString(nb)
	if err != nil {
		t.Fatal(err)
	}
	// edAsRSA claims RS256 under the Ed25519 kid.
	rsUnderEdKid := signer{kid: "ed-1", key: rsaTestKey()}
	noKid := jwt.NewWithClaims(jwt.SigningMethodEdDSA, jwt.MapClaims{"sub": "x", "exp": time.Now().Add(time.Hour).Unix()})
	noKidStr, err := noKid.SignedString(ed.key)
	if err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name    string
		token   string
		wantErr error
	}{
		{"empty", "", ErrNoToken},
		{"expired", ed.sign(t, jwt.MapClaims{"sub": "x", "exp": time.Now().Add(-time.Hour).Unix()}), ErrExpired},
		{"no exp", ed.sign(t, jwt.MapClaims{"sub": "x", "exp": nil}), ErrInvalidToken},
		{"wrong key same kid", otherEd.sign(t, jwt.MapClaims{"sub": "x"}), ErrInvalidToken},
		{"hs256 with rsa modulus", hsStr, ErrInvalidToken},
		{"rs256 under ed25519 kid", rsUnderEdKid.sign(t, jwt.MapClaims{"sub": "x"}), ErrInvalidToken},
		{"no kid", noKidStr, ErrInvalidToken},
		{"hosts wrong type", ed.sign(t, jwt.MapClaims{"hosts": 7}), ErrInvalidToken},
		{"hosts array of numbers", ed.sign(t, jwt.MapClaims{"hosts": []int{1}}), ErrInvalidToken},
		{"sub wrong type", ed.sign(t, jwt.MapClaims{"sub": 1}), ErrInvalidToken},
		{"host_id wrong type", ed.sign(t, jwt.MapClaims{"host_id": []string{"a"}}), ErrInvalidToken},
		{"unknown kind", ed.sign(t, jwt.MapClaims{"kind": "root"}), ErrInvalidToken},
		{"malformed", "a.b.c", ErrInvalidToken},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := j.Verify(t.Context(), tt.token)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("Verify = %+v, %v; want %v", c, err, tt.wantErr)
			}
		})
	}
}

func TestJWKSClaims(t *testing.T) {
	adminCfg := JWKSConfig{AdminClaim: "role", AdminValue: "sb-admin"}
	ed := newEd25519(t, "ed-1")
	srv := startJWKS(t, ed)
	tests := []struct {
		name       string
		cfg        JWKSConfig
		claims     jwt.MapClaims
		wantHosts  []string
		wantHostID string
		wantKind   string
		wantErr    error
	}{
		{"defaults", JWKSConfig{}, jwt.MapClaims{"sub": "u", "hosts": []string{"a", "b*"}}, []string{"a", "b*"}, "", KindClient, nil},
		{"kind read", JWKSConfig{}, jwt.MapClaims{"kind": "host", "host_id": "h"}, nil, "h", KindHost, nil},
		{"hosts as one string", JWKSConfig{}, jwt.MapClaims{"sub": "u", "hosts": "a"}, []string{"a"}, "", KindClient, nil},
		{"custom claims", JWKSConfig{HostsClaim: "machines", HostIDClaim: "machine"},
			jwt.MapClaims{"sub": "u", "machines": []string{"m1"}, "host_id": "ignored"}, []string{"m1"}, "", KindClient, nil},
		{"custom host id claim", JWKSConfig{HostsClaim: "machines", HostIDClaim: "machine"},
			jwt.MapClaims{"machine": "m2", "hosts": []string{"ignored"}}, nil, "m2", KindHost, nil},
		{"organization ids with suffix", JWKSConfig{HostsClaim: "organizationIds", HostsSuffix: ":*"},
			jwt.MapClaims{"sub": "u", "organizationIds": []string{"org1", "org2"}}, []string{"org1:*", "org2:*"}, "", KindClient, nil},
		{"issuer ok", JWKSConfig{Issuer: "https://id.example"}, jwt.MapClaims{"sub": "u", "iss": "https://id.example"}, nil, "", KindClient, nil},
		{"issuer wrong", JWKSConfig{Issuer: "https://id.example"}, jwt.MapClaims{"sub": "u", "iss": "https://evil.example"}, nil, "", "", ErrInvalidToken},
		{"issuer missing", JWKSConfig{Issuer: "https://id.example"}, jwt.MapClaims{"sub": "u"}, nil, "", "", ErrInvalidToken},
		{"audience ok", JWKSConfig{Audience: "switchboard"}, jwt.MapClaims{"sub": "u", "aud": "switchboard"}, nil, "", KindClient, nil},
		{"audience in list", JWKSConfig{Audience: "switchboard"}, jwt.MapClaims{"sub": "u", "aud": []string{"x", "switchboard"}}, nil, "", KindClient, nil},
		{"audience wrong", JWKSConfig{Audience: "switchboard"}, jwt.MapClaims{"sub": "u", "aud": "other"}, nil, "", "", ErrInvalidToken},
		{"audience missing", JWKSConfig{Audience: "switchboard"}, jwt.MapClaims{"sub": "u"}, nil, "", "", ErrInvalidToken},

		// One kind per token (settleKind).
		{"kindless host id and hosts", JWKSConfig{}, jwt.MapClaims{"sub": "u", "host_id": "h", "hosts": []string{"h"}}, nil, "", "", ErrInvalidToken},
		{"kindless host id and org claim", JWKSConfig{HostsClaim: "organizationIds", HostsSuffix: ":*"},
			jwt.MapClaims{"sub": "u", "host_id": "org1:m", "organizationIds": []string{"org1"}}, nil, "", "", ErrInvalidToken},
		{"kindless host id and empty hosts", JWKSConfig{}, jwt.MapClaims{"host_id": "h", "hosts": []string{}}, nil, "", "", ErrInvalidToken},
		{"kindless host id", JWKSConfig{}, jwt.MapClaims{"host_id": "h"}, nil, "h", KindHost, nil},
		{"kindless client without sub", JWKSConfig{}, jwt.MapClaims{"hosts": []string{"a"}}, nil, "", "", ErrInvalidToken},
		{"kindless client empty sub", JWKSConfig{}, jwt.MapClaims{"sub": "", "hosts": []string{"a"}}, nil, "", "", ErrInvalidToken},
		{"kindless nothing without sub", JWKSConfig{}, jwt.MapClaims{}, nil, "", "", ErrInvalidToken},
		{"kindless nothing with sub", JWKSConfig{}, jwt.MapClaims{"sub": "u"}, nil, "", KindClient, nil},
		{"host kind with hosts", JWKSConfig{}, jwt.MapClaims{"kind": "host", "host_id": "h", "hosts": []string{"*"}}, nil, "", "", ErrInvalidToken},
		{"host kind without host id", JWKSConfig{}, jwt.MapClaims{"kind": "host", "sub": "u"}, nil, "", "", ErrInvalidToken},
		{"client kind with host id", JWKSConfig{}, jwt.MapClaims{"kind": "client", "sub": "u", "host_id": "h"}, nil, "", "", ErrInvalidToken},
		{"client kind without sub", JWKSConfig{}, jwt.MapClaims{"kind": "client", "hosts": []string{"a"}}, nil, "", "", ErrInvalidToken},

		// Admin tokens come only through the configured claim.
		{"admin claim", adminCfg, jwt.MapClaims{"sub": "ops", "role": "sb-admin"}, nil, "", KindAdmin, nil},
		{"admin claim in array", adminCfg, jwt.MapClaims{"sub": "ops", "role": []string{"x", "sb-admin"}}, nil, "", KindAdmin, nil},
		{"admin claim other value", adminCfg, jwt.MapClaims{"sub": "ops", "role": "user"}, nil, "", KindClient, nil},
		{"admin kind without claim", adminCfg, jwt.MapClaims{"sub": "ops", "kind": "admin"}, nil, "", "", ErrInvalidToken},
		{"admin kind unconfigured", JWKSConfig{}, jwt.MapClaims{"sub": "ops", "kind": "admin", "role": "sb-admin"}, nil, "", "", ErrInvalidToken},
		{"admin claim and client kind", adminCfg, jwt.MapClaims{"sub": "ops", "kind": "client", "role": "sb-admin"}, nil, "", "", ErrInvalidToken},
		{"admin claim with hosts", adminCfg, jwt.MapClaims{"sub": "ops", "role": "sb-admin", "hosts": "*"}, nil, "", "", ErrInvalidToken},
		{"admin claim with host id", adminCfg, jwt.MapClaims{"sub": "ops", "role": "sb-admin", "host_id": "h"}, nil, "", "", ErrInvalidToken},
		{"admin claim without sub", adminCfg, jwt.MapClaims{"role": "sb-admin"}, nil, "", "", ErrInvalidToken},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			j, _ := newTestJWKS(t, srv, tt.cfg)
			c, err := j.Verify(t.Context(), ed.sign(t, tt.claims))
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("Verify: %v, want %v", err, tt.wantErr)
			}
			if err != nil {
				return
			}
			if !slices.Equal(c.Hosts, tt.wantHosts) || c.HostID != tt.wantHostID || c.Kind != tt.wantKind {
				t.Fatalf("claims = %+v, want hosts %q host_id %q kind %q", c, tt.wantHosts, tt.wantHostID, tt.wantKind)
			}
		})
	}
}

func TestJWKSRotation(t *testing.T) {
	old := newEd25519(t, "k1")
	srv := startJWKS(t, old)
	j, clock := newTestJWKS(t, srv, JWKSConfig{})
	ctx := t.Context()

	if _, err := j.Verify(ctx, old.sign(t, jwt.MapClaims{"sub": "a"})); err != nil {
		t.Fatalf("Verify old: %v", err)
	}
	next := signer{kid: "k2", key: rsaTestKey()}
	srv.set(http.StatusOK, old, next)

	// Within MinFetchInterval of the first fetch a new kid is not fetched yet.
	if _, err := j.Verify(ctx, next.sign(t, jwt.MapClaims{"sub": "a"})); !errors.Is(err, ErrInvalidToken) {
		t.Fatalf("Verify new kid right after a fetch: %v, want ErrInvalidToken", err)
	}
	if got := srv.fetches.Load(); got != 1 {
		t.Fatalf("fetches = %d, want 1", got)
	}

	clock.advance(MinFetchInterval)
	for i := range 5 {
		if _, err := j.Verify(ctx, next.sign(t, jwt.MapClaims{"sub": "a"})); err != nil {
			t.Fatalf("Verify new kid, try %d: %v", i, err)
		}
	}
	if got := srv.fetches.Load(); got != 2 {
		t.Fatalf("fetches = %d, want 2 (the new kid fetched once)", got)
	}

	// The old key retires; after the refresh interval it is gone.
	srv.set(http.StatusOK, next)
	clock.advance(time.Hour)
	if _, err := j.Verify(ctx, next.sign(t, jwt.MapClaims{"sub": "a"})); err != nil {
		t.Fatalf("Verify after refresh: %v", err)
	}
	if got := srv.fetches.Load(); got != 3 {
		t.Fatalf("fetches = %d, want 3 (one periodic refresh)", got)
	}
	if _, err := j.Verify(ctx, old.sign(t, jwt.MapClaims{"sub": "a"})); !errors.Is(err, ErrInvalidToken) {
		t.Fatalf("Verify retired key: %v, want ErrInvalidToken", err)
	}
}

func TestJWKSUnknownKidFloodBounded(t *testing.T) {
	ed := newEd25519(t, "real")
	srv := startJWKS(t, ed)
	j, clock := newTestJWKS(t, srv, JWKSConfig{})
	ctx := t.Context()

	bogus := func(i int) string {
		return signer{kid: fmt.Sprintf("bogus-%d", i), key: ed.key}.sign(t, jwt.MapClaims{"sub": "x"})
	}
	tokens := make([]string, 200)
	for i := range tokens {
		tokens[i] = bogus(i)
	}
	var wg sync.WaitGroup
	var accepted atomic.Int64
	for _, tok := range tokens {
		wg.Go(func() {
			if _, err := j.Verify(ctx, tok); err == nil {
				accepted.Add(1)
			}
		})
	}
	wg.Wait()
	if got := srv.fetches.Load(); got != 1 {
		t.Fatalf("fetches after a concurrent flood = %d, want 1", got)
	}
	if accepted.Load() != 0 {
		t.Fatalf("%d bogus tokens accepted", accepted.Load())
	}

	// A sustained flood over time fetches at most once per MinFetchInterval.
	for i := range 100 {
		clock.advance(MinFetchInterval / 10)
		if _, err := j.Verify(ctx, tokens[i]); err == nil {
			t.Fatal("bogus token accepted")
		}
	}
	if got, max := srv.fetches.Load(), int64(1+10); got > max {
		t.Fatalf("fetches over 10 intervals = %d, want at most %d", got, max)
	}
	// The real key still works throughout.
	if _, err := j.Verify(ctx, ed.sign(t, jwt.MapClaims{"sub": "x"})); err != nil {
		t.Fatalf("Verify real key: %v", err)
	}
}

func TestJWKSFetchErrorsKeepKeys(t *testing.T) {
	ed := newEd25519(t, "k1")
	srv := startJWKS(t, ed)
	j, clock := newTestJWKS(t, srv, JWKSConfig{RefreshInterval: time.Minute})
	ctx := t.Context()
	tok := ed.sign(t, jwt.MapClaims{"sub": "a"})

	if _, err := j.Verify(ctx, tok); err != nil {
		t.Fatalf("Verify: %v", err)
	}
	srv.set(http.StatusInternalServerError)
	clock.advance(2 * time.Minute) // refresh due; it fails
	if _, err := j.Verify(ctx, tok); err != nil {
		t.Fatalf("Verify after a failed refresh: %v", err)
	}
	if got := srv.fetches.Load(); got != 2 {
		t.Fatalf("fetches = %d, want 2", got)
	}
	// A failed refresh is not retried on every call.
	for range 10 {
		if _, err := j.Verify(ctx, tok); err != nil {
			t.Fatalf("Verify: %v", err)
		}
	}
	if got := srv.fetches.Load(); got != 2 {
		t.Fatalf("fetches = %d, want 2 (failure rate-limited)", got)
	}
	// A document with no usable key is a failure too.
	srv.set(http.StatusOK)
	clock.advance(MinFetchInterval)
	if _, err := j.Verify(ctx, tok); err != nil {
		t.Fatalf("Verify after an empty document: %v", err)
	}
	if err := j.Refresh(ctx); err == nil {
		t.Fatal("Refresh of an empty document succeeded")
	}
}

func TestJWKSFirstFetchFails(t *testing.T) {
	ed := newEd25519(t, "k1")
	srv := startJWKS(t, ed)
	srv.set(http.StatusNotFound)
	j, clock := newTestJWKS(t, srv, JWKSConfig{})
	tok := ed.sign(t, jwt.MapClaims{"sub": "a"})
	if _, err := j.Verify(t.Context(), tok); !errors.Is(err, ErrInvalidToken) {
		t.Fatalf("Verify with no keys: %v, want ErrInvalidToken", err)
	}
	if err := j.Refresh(t.Context()); err == nil {
		t.Fatal("Refresh succeeded against a 404")
	}
	srv.set(http.StatusOK, ed)
	clock.advance(MinFetchInterval)
	if _, err := j.Verify(t.Context(), tok); err != nil {
		t.Fatalf("Verify once the document is back: %v", err)
	}
}

func TestJWKSContextCancelled(t *testing.T) {
	block := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-block:
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(srv.Close)
	t.Cleanup(func() { close(block) })
	j, err := NewJWKS(JWKSConfig{URL: srv.URL, HTTPClient: srv.Client()})
	if err != nil {
		t.Fatal(err)
	}
	ed := newEd25519(t, "k1")
	ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancel()
	if _, err := j.Verify(ctx, ed.sign(t, jwt.MapClaims{"sub": "a"})); !errors.Is(err, ErrInvalidToken) {
		t.Fatalf("Verify with a hanging JWKS: %v, want ErrInvalidToken", err)
	}
	// The abandoned fetch does not count against the rate limit.
	j.mu.Lock()
	attempted := j.attemptedAt
	j.mu.Unlock()
	if !attempted.IsZero() {
		t.Fatalf("attemptedAt = %v after a cancelled fetch, want zero", attempted)
	}
}

func TestNewJWKSConfig(t *testing.T) {
	for _, tt := range []struct {
		name string
		cfg  JWKSConfig
		ok   bool
	}{
		{"ok", JWKSConfig{URL: "https://id.example/.well-known/jwks.json"}, true},
		{"empty url", JWKSConfig{}, false},
		{"relative url", JWKSConfig{URL: "/jwks.json"}, false},
		{"ftp url", JWKSConfig{URL: "ftp://id.example/jwks"}, false},
		{"negative refresh", JWKSConfig{URL: "https://id.example/jwks", RefreshInterval: -time.Second}, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := NewJWKS(tt.cfg)
			if (err == nil) != tt.ok {
				t.Fatalf("NewJWKS: %v, want ok=%v", err, tt.ok)
			}
		})
	}
}

func TestParseJWKS(t *testing.T) {
	rs := signer{kid: "r", key: rsaTestKey()}.jwk()
	small, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	smallJWK := signer{kid: "small", key: small}.jwk()
	ed := newEd25519(t, "e").jwk()
	doc := func(keys ...map[string]string) []byte {
		b, err := json.Marshal(map[string]any{"keys": keys})
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	mod := func(k map[string]string, kv ...string) map[string]string {
		c := make(map[string]string, len(k))
		for a, b := range k {
			c[a] = b
		}
		for i := 0; i < len(kv); i += 2 {
			c[kv[i]] = kv[i+1]
		}
		return c
	}
	tests := []struct {
		name     string
		body     []byte
		wantKids []string
	}{
		{"rsa and ed25519", doc(rs, ed), []string{"e", "r"}},
		{"padded base64", doc(mod(ed, "x", ed["x"]+"=")), []string{"e"}},
		{"skip small rsa", doc(smallJWK, ed), []string{"e"}},
		{"skip enc use", doc(mod(rs, "use", "enc"), ed), []string{"e"}},
		{"skip other alg", doc(mod(rs, "alg", "RS512"), ed), []string{"e"}},
		{"skip no kid", doc(mod(rs, "kid", ""), ed), []string{"e"}},
		{"skip x25519", doc(mod(ed, "crv", "X25519", "kid", "x"), rs), []string{"r"}},
		{"skip ec", doc(map[string]string{"kty": "EC", "kid": "ec", "crv": "P-256"}, rs), []string{"r"}},
		{"skip short x", doc(mod(ed, "x", "AAAA", "kid", "short"), rs), []string{"r"}},
		{"skip even e", doc(mod(rs, "e", "Ag", "kid", "even"), ed), []string{"e"}},
		{"first duplicate wins", doc(ed, mod(rs, "kid", "e")), []string{"e"}},
		{"none usable", doc(smallJWK), nil},
		{"empty", []byte(`{"keys":[]}`), nil},
		{"not json", []byte(`<html>`), nil},
		{"keys not array", []byte(`{"keys":{}}`), nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			keys, _, err := parseJWKS(tt.body)
			if (err == nil) != (tt.wantKids != nil) {
				t.Fatalf("parseJWKS: %v, want kids %v", err, tt.wantKids)
			}
			var kids []string
			for kid := range keys {
				kids = append(kids, kid)
			}
			slices.Sort(kids)
			if !slices.Equal(kids, tt.wantKids) {
				t.Fatalf("kids = %v, want %v", kids, tt.wantKids)
			}
		})
	}
	keys, _, err := parseJWKS(doc(ed))
	if err != nil {
		t.Fatal(err)
	}
	if k := keys["e"]; k.alg != "EdDSA" || !k.allows("EdDSA") || k.allows("RS256") {
		t.Fatalf("ed25519 key = %+v", k)
	}
}
