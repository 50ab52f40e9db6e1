package agent

import (
	"encoding/base64"
	"strings"
	"testing"
	"time"
)

func jwtWithPayload(payload string) string {
	return "eyJhbGciOiJIUzI1NiJ9." + base64.RawURLEncoding.EncodeToString([]byte(payload)) + ".sig"
}

func TestTokenExpiry(t *testing.T) {
	for _, tc := range []struct {
		name string
		tok  string
		want time.Time
		ok   bool
	}{
		{"seconds", jwtWithPayload(`{"exp":1700000000}`), time.Unix(1700000000, 0), true},
		{"fraction", jwtWithPayload(`{"exp":1700000000.5}`), time.Unix(1700000000, 5e8), true},
		{"padded", strings.Replace(jwtWithPayload(`{"exp":1700000000}`), ".sig", "", 1) + "==.sig", time.Unix(1700000000, 0), true},
		{"no exp", jwtWithPayload(`{"sub":"x"}`), time.Time{}, false},
		{"string exp", jwtWithPayload(`{"exp":"1700000000"}`), time.Time{}, false},
		{"negative", jwtWithPayload(`{"exp":-1}`), time.Time{}, false},
		{"huge", jwtWithPayload(`{"exp":1e300}`), time.Time{}, false},
		{"two parts", "a.b", time.Time{}, false},
		{"not base64", "a.!!!.c", time.Time{}, false},
		{"opaque", "an-opaque-token", time.Time{}, false},
		{"oversized", jwtWithPayload(`{"exp":1700000000,"pad":"` + strings.Repeat("x", 20<<10) + `"}`), time.Time{}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := tokenExpiry(tc.tok)
			if ok != tc.ok || !got.Equal(tc.want) {
				t.Fatalf("tokenExpiry = %v, %v; want %v, %v", got, ok, tc.want, tc.ok)
			}
		})
	}
}

func TestRenewAt(t *testing.T) {
	got := time.Unix(1_000_000, 0)
	for _, tc := range []struct {
		name string
		life time.Duration
		want time.Duration // after got
		ok   bool
	}{
		{"hour: a minute before exp", time.Hour, 59 * time.Minute, true},
		{"ten minutes: a minute before exp", 10 * time.Minute, 9 * time.Minute, true},
		{"five minutes: at 90%", 5 * time.Minute, 270 * time.Second, true},
		{"six seconds: at 90%", 6 * time.Second, 5400 * time.Millisecond, true},
		{"expired", -time.Second, 0, false},
		{"no lifetime", 0, 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			at, ok := renewAt(got, got.Add(tc.life))
			if ok != tc.ok || (ok && at.Sub(got) != tc.want) {
				t.Fatalf("renewAt = +%v, %v; want +%v, %v", at.Sub(got), ok, tc.want, tc.ok)
			}
		})
	}
}

// FuzzTokenExpiry: whatever a token command prints, reading its expiry neither panics nor yields a time before
// the epoch, and a token accepted once reads the same again.
func FuzzTokenExpiry(f *testing.F) {
	f.Add(jwtWithPayload(`{"exp":1700000000}`))
	f.Add(jwtWithPayload(`{"exp":1.5e9,"sub":"x"}`))
	f.Add(jwtWithPayload(`{"exp":null}`))
	f.Add("a.b.c")
	f.Add("..")
	f.Add("")
	f.Fuzz(func(t *testing.T, tok string) {
		exp, ok := tokenExpiry(tok)
		if !ok {
			if !exp.IsZero() {
				t.Fatalf("rejected token gave expiry %v", exp)
			}
			return
		}
		if exp.Unix() <= 0 {
			t.Fatalf("expiry %v before the epoch", exp)
		}
		if again, ok2 := tokenExpiry(tok); !ok2 || !again.Equal(exp) {
			t.Fatalf("second read %v %v, first %v", again, ok2, exp)
		}
		if at, ok := renewAt(exp.Add(-time.Hour), exp); !ok || !at.Before(exp) {
			t.Fatalf("renewAt for a one-hour token expiring %v: %v %v", exp, at, ok)
		}
	})
}
