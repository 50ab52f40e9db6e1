package auth

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Leeway is the clock skew tolerated on "exp", "nbf" and "iat".
const Leeway = 30 * time.Second

// MinSecretLen is the shortest secret `switchboard` accepts for signing (HS256 tokens, the cluster hop HMAC,
// webhook signatures): 32 bytes, as much as the HMAC-SHA256 output, so a secret is no easier to guess than a
// signature is to forge.
const MinSecretLen = 32

// hsClaims is the JSON shape of Switchboard's own tokens.
type hsClaims struct {
	jwt.RegisteredClaims
	Kind   string   `json:"kind,omitempty"`
	HostID string   `json:"host_id,omitempty"`
	Hosts  []string `json:"hosts,omitempty"`
	// Services limits a client token to named TCP services (Claims.Services); absent means all and HTTP.
	Services []string `json:"services,omitempty"`
}

// MintHost returns an HS256 token that lets an agent register hostID for ttl: "sub" is "host:<hostID>", "kind" is
// "host", "host_id" is hostID.
func MintHost(secret []byte, hostID string, ttl time.Duration) (string, error) {
	if hostID == "" {
		return "", errors.New("mint host token: empty host id")
	}
	return mint(secret, ttl, hsClaims{
		RegisteredClaims: jwt.RegisteredClaims{Subject: "host:" + hostID},
		Kind:             KindHost,
		HostID:           hostID,
	})
}

// MintClient returns an HS256 token that lets subject reach the hosts listed (exact ids, "prefix*" patterns, or
// "*") for ttl. An empty list mints a token that reaches nothing.
func MintClient(secret []byte, subject string, hosts []string, ttl time.Duration) (string, error) {
	return MintClientServices(secret, subject, hosts, nil, ttl)
}

// MintClientServices is MintClient with a "services" claim: a non-nil services limits the token to those TCP
// services ("*" for all of them), without HTTP; nil leaves the claim out (every service and HTTP).
func MintClientServices(secret []byte, subject string, hosts, services []string, ttl time.Duration) (string, error) {
	if subject == "" {
		return "", errors.New("mint client token: empty subject")
	}
	for _, h := range hosts {
		if h == "" {
			return "", errors.New("mint client token: empty hosts entry")
		}
	}
	if services != nil && len(services) == 0 {
		return "", errors.New("mint client token: empty services list (leave it out for all services)")
	}
	return mint(secret, ttl, hsClaims{
		RegisteredClaims: jwt.RegisteredClaims{Subject: subject},
		Kind:             KindClient,
		Hosts:            hosts,
		Services:         services,
	})
}

// MintAdmin returns an HS256 token that lets subject call the admin API for ttl: "kind" is "admin", and it reaches
// no host and registers nothing.
func MintAdmin(secret []byte, subject string, ttl time.Duration) (string, error) {
	if subject == "" {
		return "", errors.New("mint admin token: empty subject")
	}
	return mint(secret, ttl, hsClaims{RegisteredClaims: jwt.RegisteredClaims{Subject: subject}, Kind: KindAdmin})
}

// newJTI returns a random token id: 16 bytes, hex. Every minted token carries one, so that it can be revoked alone.
func newJTI() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // never fails (crypto/rand)
	return hex.EncodeToString(b[:])
}

func mint(secret []byte, ttl time.Duration, c hsClaims) (string, error) {
	if len(secret) == 0 {
		return "", fmt.Errorf("mint %s token: empty secret", c.Kind)
	}
	if ttl <= 0 {
		return "", fmt.Errorf("mint %s token: ttl %v is not positive", c.Kind, ttl)
	}
	now := time.Now()
	c.IssuedAt = jwt.NewNumericDate(now)
	c.ExpiresAt = jwt.NewNumericDate(now.Add(ttl))
	c.ID = newJTI()
	s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, c).SignedString(secret)
	if err != nil {
		return "", fmt.Errorf("mint %s token: %w", c.Kind, err)
	}
	return s, nil
}

// NewHS256 returns a Verifier for tokens minted by MintHost and MintClient with secret. Only HS256 is accepted
// (never "none" or an asymmetric algorithm), "exp" is required, "exp", "nbf" and "iat" get Leeway, and "kind" must
// be "host" (with a "host_id"), "client" (with a "sub") or "admin" (with a "sub"). The secret should be at least MinSecretLen random bytes; an empty
// secret rejects every token. The secret is copied.
func NewHS256(secret []byte) Verifier {
	return &hs256{
		secret: append([]byte(nil), secret...),
		parser: jwt.NewParser(
			jwt.WithValidMethods([]string{jwt.SigningMethodHS256.Alg()}),
			jwt.WithExpirationRequired(),
			jwt.WithIssuedAt(),
			jwt.WithLeeway(Leeway),
		),
	}
}

type hs256 struct {
	// Immutable after NewHS256.
	secret []byte
	parser *jwt.Parser
}

// Verify implements Verifier.
func (v *hs256) Verify(_ context.Context, token string) (Claims, error) {
	if err := precheck(token); err != nil {
		return Claims{}, err
	}
	if len(v.secret) == 0 {
		return Claims{}, fmt.Errorf("%w: no hs256 secret configured", ErrInvalidToken)
	}
	var c hsClaims
	_, err := v.parser.ParseWithClaims(token, &c, func(t *jwt.Token) (any, error) {
		if t.Method != jwt.SigningMethodHS256 {
			return nil, fmt.Errorf("unexpected signing method %v", t.Header["alg"])
		}
		return v.secret, nil
	})
	if err != nil {
		return Claims{}, jwtError(err)
	}
	if c.Kind == "" {
		return Claims{}, fmt.Errorf("%w: no kind", ErrInvalidToken) // Switchboard's own tokens always say
	}
	return settleKind(Claims{Subject: c.Subject, Kind: c.Kind, ID: c.ID, HostID: c.HostID, Hosts: c.Hosts, Services: c.Services,
		ExpiresAt: c.ExpiresAt.Time},
		c.Hosts != nil)
}

// jwtError maps a jwt parse error onto this package's sentinels, keeping the cause.
func jwtError(err error) error {
	if errors.Is(err, jwt.ErrTokenExpired) {
		return fmt.Errorf("%w: %w", ErrExpired, err)
	}
	return fmt.Errorf("%w: %w", ErrInvalidToken, err)
}

// truncate shortens a claim value quoted in an error, so a hostile token cannot bloat logs.
func truncate(s string) string {
	const max = 64
	if len(s) > max {
		return s[:max] + "…"
	}
	return s
}
