package auth

import (
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

func BenchmarkHS256Verify(b *testing.B) {
	tok, err := MintClient(testSecret, "user", []string{"org:*"}, time.Hour)
	if err != nil {
		b.Fatal(err)
	}
	v := NewHS256(testSecret)
	ctx := b.Context()
	for b.Loop() {
		if _, err := v.Verify(ctx, tok); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkJWKSVerifyEd25519(b *testing.B) {
	ed := newEd25519(b, "k1")
	srv := startJWKS(b, ed)
	j, err := NewJWKS(JWKSConfig{URL: srv.URL, HTTPClient: srv.Client()})
	if err != nil {
		b.Fatal(err)
	}
	tok := ed.sign(b, jwt.MapClaims{"sub": "u", "hosts": []string{"org:*"}})
	ctx := b.Context()
	for b.Loop() {
		if _, err := j.Verify(ctx, tok); err != nil {
			b.Fatal(err)
		}
	}
}
