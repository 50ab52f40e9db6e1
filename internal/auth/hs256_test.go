package auth

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

var testSecret = []byte("0123456789abcdef0123456789abcdef")

func TestMintVerifyRoundTrip(t *testing.T) {
	v := NewHS256(testSecret)
	ctx := t.Context()

	tok, err := MintHost(testSecret, "org1:laptop", time.Hour)
	if err != nil {
		t.Fatalf("MintHost: %v", err)
	}
	c, err := v.Verify(ctx, tok)
	if err != nil {
		t.Fatalf("Verify host token: %v", err)
	}
	if c.Subject != "host:org1:laptop" || c.Kind != KindHost || c.HostID != "org1:laptop" || c.Hosts != nil {
		t.Fatalf("host claims = %+v", c)
	}
	if d := time.Until(c.ExpiresAt); d < 59*time.Minute || d > time.Hour {
		t.Fatalf("host ExpiresAt in %v, want about 1h", d)
	}
	if !c.MayRegister("org1:laptop") || c.MayRegister("org1:other") || c.MayReach("org1:laptop") {
		t.Fatalf("host token permissions wrong: %+v", c)
	}

	tok, err = MintClient(testSecret, "user-7", []string{"org1:*", "org2:box"}, time.Minute)
	if err != nil {
		t.Fatalf("MintClient: %v", err)
	}
	c, err = v.Verify(ctx, tok)
	if err != nil {
		t.Fatalf("Verify client token: %v", err)
	}
	if c.Subject != "user-7" || c.Kind != KindClient || c.HostID != "" || !slices.Equal(c.Hosts, []string{"org1:*", "org2:box"}) {
		t.Fatalf("client claims = %+v", c)
	}
	if !c.MayReach("org1:x") || !c.MayReach("org2:box") || c.MayReach("org2:other") || c.MayRegister("org2:box") {
		t.Fatalf("client token permissions wrong: %+v", c)
	}

	tok, err = MintClient(testSecret, "nobody", nil, time.Minute)
	if err != nil {
		t.Fatalf("MintClient empty hosts: %v", err)
	}
	c, err = v.Verify(ctx, tok)
	if err != nil {
		t.Fatalf("Verify empty-hosts token: %v", err)
	}
	if c.MayReach("a") {
		t.Fatalf("empty hosts token reaches a host: %+v", c)
	}
}

func TestMintAdmin(t *testing.T) {
	v := NewHS256(testSecret)
	tok, err := MintAdmin(testSecret, "ops", time.Hour)
	if err != nil {
		t.Fatalf("MintAdmin: %v", err)
	}
	c, err := v.Verify(t.Context(), tok)
	if err != nil {
		t.Fatalf("Verify admin token: %v", err)
	}
	if c.Kind != KindAdmin || !c.IsAdmin() || c.Subject != "ops" || len(c.ID) != 32 {
		t.Fatalf("admin claims = %+v", c)
	}
	if c.MayReach("x") || c.MayRegister("x") {
		t.Fatalf("admin token reaches or registers a host: %+v", c)
	}
	tok2, _ := MintAdmin(testSecret, "ops", time.Hour)
	if c2, _ := v.Verify(t.Context(), tok2); c2.ID == c.ID {
		t.Fatalf("two minted tokens share jti %q", c.ID)
	}
	for _, mint := range []func() (string, error){
		func() (string, error) { return MintHost(testSecret, "h", time.Hour) },
		func() (string, error) { return MintClient(testSecret, "u", []string{"*"}, time.Hour) },
	} {
		tok, _ := mint()
		c, err := v.Verify(t.Context(), tok)
		if err != nil || c.IsAdmin() || c.ID == "" {
			t.Fatalf("claims %+v, err %v: want a non-admin token with a jti", c, err)
		}
	}
	if c, _ := AllowAll().Verify(t.Context(), ""); c.IsAdmin() {
		t.Fatal("AllowAll's claims pass the admin check")
	}
	if _, err := MintAdmin(testSecret, "", time.Hour); err == nil {
		t.Fatal("MintAdmin with an empty subject succeeded")
	}
}

func TestMintErrors(t *testing.T) {
	tests := []struct {
		name string
		mint func() (string, error)
	}{
		{"host empty secret", func() (string, error) { return MintHost(nil, "a", time.Hour) }},
		{"host empty id", func() (string, error) { return MintHost(testSecret, "", time.Hour) }},
		{"host zero ttl", func() (string, error) { return MintHost(testSecret, "a", 0) }},
		{"client empty subject", func() (string, error) { return MintClient(testSecret, "", []string{"a"}, time.Hour) }},
		{"client empty entry", func() (string, error) { return MintClient(testSecret, "u", []string{""}, time.Hour) }},
		{"client negative ttl", func() (string, error) { return MintClient(testSecret, "u", nil, -time.Second) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tok, err := tt.mint(); err == nil {
				t.Fatalf("minted %q, want an error", tok)
			}
		})
	}
}

// signHS signs claims with key under method, bypassing the package's minting checks.
func signHS(t *testing.T, method jwt.SigningMethod, key any, claims jwt.Claims) string {
	t.Helper()
	s, err := jwt.NewWithClaims(method, claims).SignedString(key)
	if err != nil {
		t.Fatalf("sign: %v", err)
	}
	return s
}

func TestHS256Rejects(t *testing.T) {
	now := time.Now()
	valid := func() hsClaims {
		return hsClaims{
			RegisteredClaims: jwt.RegisteredClaims{
				Subject:   "host:a",
				IssuedAt:  jwt.NewNumericDate(now),
				ExpiresAt: jwt.NewNumericDate(now.Add(time.Hour)),
			},
			Kind:   KindHost,
			HostID: "a",
		}
	}
	with := func(f func(*hsClaims)) hsClaims { c := valid(); f(&c); return c }

	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKIXPublicKey(&rsaKey.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	pubPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})

	good := signHS(t, jwt.SigningMethodHS256, testSecret, valid())
	parts := strings.Split(good, ".")
	noneTok := signHS(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, valid())
	// "alg": "none" header with the real token's payload and an empty or copied signature.
	noneHeader := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"none","typ":"JWT"}`))
	// "alg": "HS512" header, payload of a valid token, signed with the right secret under HS512.
	hs512 := signHS(t, jwt.SigningMethodHS512, testSecret, valid())

	tests := []struct {
		name    string
		token   string
		wantErr error
	}{
		{"empty", "", ErrNoToken},
		{"wrong secret", signHS(t, jwt.SigningMethodHS256, []byte("another secret, also 32 bytes.."), valid()), ErrInvalidToken},
		{"expired", signHS(t, jwt.SigningMethodHS256, testSecret, with(func(c *hsClaims) {
			c.ExpiresAt = jwt.NewNumericDate(now.Add(-time.Minute))
		})), ErrExpired},
		{"alg none", noneTok, ErrInvalidToken},
		{"alg none header swap", noneHeader + "." + parts[1] + ".", ErrInvalidToken},
		{"alg none header with signature", noneHeader + "." + parts[1] + "." + parts[2], ErrInvalidToken},
		{"alg hs512", hs512, ErrInvalidToken},
		{"alg confusion rs256 public key as hmac secret", signHS(t, jwt.SigningMethodHS256, pubPEM, valid()), ErrInvalidToken},
		{"rs256 signed", signHS(t, jwt.SigningMethodRS256, rsaKey, valid()), ErrInvalidToken},
		{"no exp", signHS(t, jwt.SigningMethodHS256, testSecret, with(func(c *hsClaims) { c.ExpiresAt = nil })), ErrInvalidToken},
		{"not yet valid", signHS(t, jwt.SigningMethodHS256, testSecret, with(func(c *hsClaims) {
			c.NotBefore = jwt.NewNumericDate(now.Add(time.Hour))
		})), ErrInvalidToken},
		{"issued in the future", signHS(t, jwt.SigningMethodHS256, testSecret, with(func(c *hsClaims) {
			c.IssuedAt = jwt.NewNumericDate(now.Add(time.Hour))
		})), ErrInvalidToken},
		{"no kind", signHS(t, jwt.SigningMethodHS256, testSecret, with(func(c *hsClaims) { c.Kind = "" })), ErrInvalidToken},
		{"unknown kind", signHS(t, jwt.SigningMethodHS256, testSecret, with(func(c *hsClaims) { c.Kind = "admin" })), ErrInvalidToken},
		{"host without host_id", signHS(t, jwt.SigningMethodHS256, testSecret, with(func(c *hsClaims) { c.HostID = "" })), ErrInvalidToken},
		{"host with hosts", signHS(t, jwt.SigningMethodHS256, testSecret, with(func(c *hsClaims) { c.Hosts = []string{"*"} })), ErrInvalidToken},
		{"client with host_id", signHS(t, jwt.SigningMethodHS256, testSecret, with(func(c *hsClaims) { c.Kind = KindClient })), ErrInvalidToken},
		{"client without sub", signHS(t, jwt.SigningMethodHS256, testSecret, with(func(c *hsClaims) {
			c.Kind, c.HostID, c.Subject = KindClient, "", ""
		})), ErrInvalidToken},
		{"tampered payload", parts[0] + "." + base64.RawURLEncoding.EncodeToString([]byte(`{"sub":"host:b","kind":"host","host_id":"b","exp":9999999999}`)) + "." + parts[2], ErrInvalidToken},
		{"truncated signature", good[:len(good)-4], ErrInvalidToken},
		{"two parts", parts[0] + "." + parts[1], ErrInvalidToken},
		{"four parts", good + ".x", ErrInvalidToken},
		{"garbage", "not a token", ErrInvalidToken},
		{"dots", "..", ErrInvalidToken},
		{"bad base64 header", "!!!." + parts[1] + "." + parts[2], ErrInvalidToken},
		{"oversized", good + strings.Repeat("A", maxTokenLen), ErrInvalidToken},
	}
	v := NewHS256(testSecret)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := v.Verify(t.Context(), tt.token)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("Verify = %+v, %v; want error %v", c, err, tt.wantErr)
			}
			if err != nil && tt.token != "" && strings.Contains(err.Error(), tt.token) {
				t.Fatalf("error %q contains the token", err)
			}
		})
	}
}

func TestHS256Leeway(t *testing.T) {
	v := NewHS256(testSecret)
	now := time.Now()
	for _, tt := range []struct {
		name    string
		expAgo  time.Duration
		wantErr error
	}{
		{"within leeway", 10 * time.Second, nil},
		{"beyond leeway", Leeway + 10*time.Second, ErrExpired},
	} {
		t.Run(tt.name, func(t *testing.T) {
			tok := signHS(t, jwt.SigningMethodHS256, testSecret, hsClaims{
				RegisteredClaims: jwt.RegisteredClaims{Subject: "u", ExpiresAt: jwt.NewNumericDate(now.Add(-tt.expAgo))},
				Kind:             KindClient,
			})
			if _, err := v.Verify(t.Context(), tok); !errors.Is(err, tt.wantErr) {
				t.Fatalf("Verify: %v, want %v", err, tt.wantErr)
			}
		})
	}
}

func TestHS256EmptySecretRejectsAll(t *testing.T) {
	tok := signHS(t, jwt.SigningMethodHS256, []byte{0}, hsClaims{
		RegisteredClaims: jwt.RegisteredClaims{Subject: "u", ExpiresAt: jwt.NewNumericDate(time.Now().Add(time.Hour))},
		Kind:             KindClient,
	})
	if _, err := NewHS256(nil).Verify(t.Context(), tok); !errors.Is(err, ErrInvalidToken) {
		t.Fatalf("Verify with empty secret: %v, want ErrInvalidToken", err)
	}
}

func TestExpiredIsInvalid(t *testing.T) {
	if !errors.Is(ErrExpired, ErrInvalidToken) {
		t.Fatal("ErrExpired does not match ErrInvalidToken")
	}
	if errors.Is(ErrNoToken, ErrInvalidToken) {
		t.Fatal("ErrNoToken matches ErrInvalidToken")
	}
}

// stubVerifier returns fixed results.
type stubVerifier struct {
	c   Claims
	err error
}

func (s stubVerifier) Verify(context.Context, string) (Claims, error) { return s.c, s.err }

func TestChain(t *testing.T) {
	errA := errors.New("a failed")
	errB := errors.New("b failed")
	ok := stubVerifier{c: Claims{Subject: "ok"}}
	tests := []struct {
		name    string
		vs      []Verifier
		token   string
		wantSub string
		wantIs  []error
	}{
		{"first wins", []Verifier{ok, stubVerifier{c: Claims{Subject: "second"}}}, "t", "ok", nil},
		{"second accepts", []Verifier{stubVerifier{err: errA}, ok}, "t", "ok", nil},
		{"all fail combined", []Verifier{stubVerifier{err: errA}, stubVerifier{err: errB}}, "t", "", []error{errA, errB}},
		{"same failure", []Verifier{stubVerifier{err: ErrNoToken}, stubVerifier{err: ErrNoToken}}, "", "", []error{ErrNoToken}},
		{"none", nil, "t", "", []error{ErrInvalidToken}},
		{"none empty token", nil, "", "", []error{ErrNoToken}},
		{"real verifiers", []Verifier{NewHS256([]byte("x")), NewHS256([]byte("y"))}, "a.b.c", "", []error{ErrInvalidToken}},
		{"allow all after", []Verifier{NewHS256(testSecret), AllowAll()}, "", "anonymous", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Chain(tt.vs...).Verify(t.Context(), tt.token)
			if c.Subject != tt.wantSub {
				t.Fatalf("Subject = %q, want %q (err %v)", c.Subject, tt.wantSub, err)
			}
			if (err != nil) != (len(tt.wantIs) > 0) {
				t.Fatalf("err = %v, want errors %v", err, tt.wantIs)
			}
			for _, want := range tt.wantIs {
				if !errors.Is(err, want) {
					t.Fatalf("err = %v, does not match %v", err, want)
				}
			}
		})
	}
}

func TestAllowAll(t *testing.T) {
	for _, tok := range []string{"", "garbage", "a.b.c"} {
		c, err := AllowAll().Verify(t.Context(), tok)
		if err != nil {
			t.Fatalf("AllowAll(%q): %v", tok, err)
		}
		if c.Subject != "anonymous" || !slices.Equal(c.Hosts, []string{"*"}) || c.HostID != "" || !c.Unrestricted {
			t.Fatalf("AllowAll(%q) = %+v", tok, c)
		}
		if !c.MayReach("org:x") || !c.MayRegister("org:x") {
			t.Fatalf("AllowAll(%q) claims refuse a host", tok)
		}
	}
}
