package auth

import (
	"context"
	"errors"
	"testing"
	"time"
)

type countingVerifier struct {
	calls  int
	claims Claims
	err    error
}

func (v *countingVerifier) Verify(context.Context, string) (Claims, error) {
	v.calls++
	return v.claims, v.err
}

func TestCachedVerifiesOncePerToken(t *testing.T) {
	now := time.Unix(1_000_000, 0)
	inner := &countingVerifier{claims: Claims{Subject: "a", ExpiresAt: now.Add(time.Hour)}}
	c := Cached(inner, 2).(*cache)
	c.now = func() time.Time { return now }
	for range 3 {
		got, err := c.Verify(context.Background(), "t1")
		if err != nil || got.Subject != "a" {
			t.Fatalf("Verify = %+v, %v", got, err)
		}
	}
	if inner.calls != 1 {
		t.Fatalf("inner verifier called %d times, want 1", inner.calls)
	}
	now = now.Add(cacheTTL + time.Second)
	if _, err := c.Verify(context.Background(), "t1"); err != nil {
		t.Fatal(err)
	}
	if inner.calls != 2 {
		t.Fatalf("after the cache TTL: %d calls, want 2", inner.calls)
	}
}

func TestCachedHonoursExpiry(t *testing.T) {
	now := time.Unix(1_000_000, 0)
	inner := &countingVerifier{claims: Claims{Subject: "a", ExpiresAt: now.Add(10 * time.Second)}}
	c := Cached(inner, 8).(*cache)
	c.now = func() time.Time { return now }
	_, _ = c.Verify(context.Background(), "t")
	now = now.Add(11 * time.Second)
	inner.err = ErrExpired
	if _, err := c.Verify(context.Background(), "t"); !errors.Is(err, ErrExpired) {
		t.Fatalf("expired token served from cache: err = %v", err)
	}
}

func TestCachedDoesNotCacheFailuresAndStaysBounded(t *testing.T) {
	inner := &countingVerifier{err: ErrInvalidToken}
	c := Cached(inner, 2).(*cache)
	for range 2 {
		if _, err := c.Verify(context.Background(), "bad"); err == nil {
			t.Fatal("bad token accepted")
		}
	}
	if inner.calls != 2 {
		t.Fatalf("failures cached: %d calls, want 2", inner.calls)
	}
	inner.err = nil
	for _, tok := range []string{"a", "b", "c", "d"} {
		_, _ = c.Verify(context.Background(), tok)
	}
	if n := len(c.entries); n > 2 {
		t.Fatalf("cache holds %d entries, bound is 2", n)
	}
}
