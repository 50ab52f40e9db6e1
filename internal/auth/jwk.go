package auth

import (
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"strings"
)

// Limits on what a JWKS document may hold.
const (
	maxJWKSBytes  = 1 << 20
	minRSABits    = 2048
	maxRSABits    = 8192
	maxJWKSKeys   = 256
	jwksMediaType = "application/jwk-set+json, application/json"
)

// jwk is one usable verification key.
type jwk struct {
	pub crypto.PublicKey // *rsa.PublicKey or ed25519.PublicKey
	alg string           // the JWS alg this key verifies: "RS256" or "EdDSA"
}

// allows reports whether the key may verify a token signed with alg.
func (k jwk) allows(alg string) bool { return alg == k.alg }

// rawJWK is one entry of a JWKS document (RFC 7517), limited to the fields read here.
type rawJWK struct {
	Kty string `json:"kty"`
	Kid string `json:"kid"`
	Use string `json:"use"`
	Alg string `json:"alg"`
	N   string `json:"n"`
	E   string `json:"e"`
	Crv string `json:"crv"`
	X   string `json:"x"`
}

// download fetches and parses the document.
func (j *JWKS) download(ctx context.Context) (map[string]jwk, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, j.url, nil)
	if err != nil {
		return nil, fmt.Errorf("fetch jwks: %w", err)
	}
	req.Header.Set("Accept", jwksMediaType)
	resp, err := j.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("fetch jwks: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("fetch jwks: status %s", resp.Status)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxJWKSBytes+1))
	if err != nil {
		return nil, fmt.Errorf("fetch jwks: read body: %w", err)
	}
	if len(body) > maxJWKSBytes {
		return nil, fmt.Errorf("fetch jwks: document larger than %d bytes", maxJWKSBytes)
	}
	keys, skipped, err := parseJWKS(body)
	for _, s := range skipped {
		j.log.Debug("jwks key skipped", "err", s)
	}
	if err != nil {
		return nil, fmt.Errorf("fetch jwks: %w", err)
	}
	return keys, nil
}

// parseJWKS reads a JWKS document. Keys that are not usable signature keys of a supported type (or lack a kid) are
// skipped, with the reason in skipped; a document with no usable key is an error. The first key with a given kid
// wins.
func parseJWKS(body []byte) (keys map[string]jwk, skipped []error, err error) {
	var doc struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(body, &doc); err != nil {
		return nil, nil, fmt.Errorf("parse jwks: %w", err)
	}
	if len(doc.Keys) > maxJWKSKeys {
		return nil, nil, fmt.Errorf("parse jwks: %d keys, at most %d", len(doc.Keys), maxJWKSKeys)
	}
	keys = make(map[string]jwk, len(doc.Keys))
	for i, raw := range doc.Keys {
		var r rawJWK
		if err := json.Unmarshal(raw, &r); err != nil {
			skipped = append(skipped, fmt.Errorf("key %d: %w", i, err))
			continue
		}
		k, err := r.key()
		if err != nil {
			skipped = append(skipped, fmt.Errorf("key %d (kid %q): %w", i, truncate(r.Kid), err))
			continue
		}
		if _, dup := keys[r.Kid]; dup {
			skipped = append(skipped, fmt.Errorf("key %d: duplicate kid %q", i, truncate(r.Kid)))
			continue
		}
		keys[r.Kid] = k
	}
	if len(keys) == 0 {
		return nil, skipped, errors.New("parse jwks: no usable key")
	}
	return keys, skipped, nil
}

// key converts one JWK into a verification key.
func (r rawJWK) key() (jwk, error) {
	if r.Kid == "" {
		return jwk{}, errors.New("no kid")
	}
	if r.Use != "" && r.Use != "sig" {
		return jwk{}, fmt.Errorf("use %q", truncate(r.Use))
	}
	switch r.Kty {
	case "RSA":
		if r.Alg != "" && r.Alg != "RS256" {
			return jwk{}, fmt.Errorf("rsa alg %q not supported", truncate(r.Alg))
		}
		pub, err := rsaKey(r.N, r.E)
		if err != nil {
			return jwk{}, err
		}
		return jwk{pub: pub, alg: "RS256"}, nil
	case "OKP":
		if r.Crv != "Ed25519" {
			return jwk{}, fmt.Errorf("okp curve %q not supported", truncate(r.Crv))
		}
		if r.Alg != "" && r.Alg != "EdDSA" && r.Alg != "Ed25519" {
			return jwk{}, fmt.Errorf("okp alg %q not supported", truncate(r.Alg))
		}
		x, err := b64url(r.X)
		if err != nil {
			return jwk{}, fmt.Errorf("ed25519 x: %w", err)
		}
		if len(x) != ed25519.PublicKeySize {
			return jwk{}, fmt.Errorf("ed25519 x: %d bytes, want %d", len(x), ed25519.PublicKeySize)
		}
		return jwk{pub: ed25519.PublicKey(x), alg: "EdDSA"}, nil
	default:
		return jwk{}, fmt.Errorf("kty %q not supported", truncate(r.Kty))
	}
}

// rsaKey decodes an RSA public key from its base64url modulus and exponent.
func rsaKey(n64, e64 string) (*rsa.PublicKey, error) {
	nb, err := b64url(n64)
	if err != nil {
		return nil, fmt.Errorf("rsa n: %w", err)
	}
	eb, err := b64url(e64)
	if err != nil {
		return nil, fmt.Errorf("rsa e: %w", err)
	}
	n := new(big.Int).SetBytes(nb)
	if bits := n.BitLen(); bits < minRSABits || bits > maxRSABits {
		return nil, fmt.Errorf("rsa n: %d bits, want %d to %d", bits, minRSABits, maxRSABits)
	}
	if len(eb) == 0 || len(eb) > 4 {
		return nil, fmt.Errorf("rsa e: %d bytes", len(eb))
	}
	e := 0
	for _, b := range eb {
		e = e<<8 | int(b)
	}
	if e < 3 || e%2 == 0 || e > 1<<31-1 {
		return nil, fmt.Errorf("rsa e: %d", e)
	}
	return &rsa.PublicKey{N: n, E: e}, nil
}

// b64url decodes base64url, tolerating the padding RFC 7518 says to omit.
func b64url(s string) ([]byte, error) {
	return base64.RawURLEncoding.DecodeString(strings.TrimRight(s, "="))
}
