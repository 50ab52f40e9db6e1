package presence

import (
	"errors"
	"testing"
)

// FuzzMemoryReadAfter: a client's Last-Event-ID reaches Memory.Read as after. Whatever it is, Read returns events
// that follow a real position, or ErrGap, and never panics.
func FuzzMemoryReadAfter(f *testing.F) {
	l := NewMemory(MemoryConfig{MaxEvents: 4})
	for range 6 {
		if _, err := l.Append(f.Context(), Event{Kind: Online, HostID: "h"}); err != nil {
			f.Fatal(err)
		}
	}
	newest, _ := l.Newest(f.Context())
	for _, s := range []string{"", newest, l.gen + "-1", l.gen + "-3", l.gen + "-0", "1-2", "x", "-", l.gen + "-18446744073709551615"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, after string) {
		evs, err := l.Read(t.Context(), after, 10, 0)
		if err != nil && !errors.Is(err, ErrGap) {
			t.Fatalf("read after %q: %v", after, err)
		}
		if len(evs) > 4 {
			t.Fatalf("read after %q: %d events from a log of 4", after, len(evs))
		}
	})
}

// FuzzParseStreamID: a client's Last-Event-ID reaches parseStreamID for the Redis log; what it accepts prints back
// as a canonical stream ID that parses to the same position.
func FuzzParseStreamID(f *testing.F) {
	for _, s := range []string{"0-0", "1700000000000-5", "18446744073709551615-18446744073709551615", "1-", "-1", "+1-2", "1-2-3"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		id, ok := parseStreamID(s)
		if !ok {
			return
		}
		again, ok := parseStreamID(id.String())
		if !ok || again != id {
			t.Fatalf("%q parsed to %v, which prints as %q and parses to %v, %v", s, id, id.String(), again, ok)
		}
	})
}
