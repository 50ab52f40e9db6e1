package relay

import (
	"strings"
	"testing"
)

// FuzzSealedPosition: a cursor or Last-Event-ID from the network opens only if this relay's key sealed it for
// that purpose; whatever else arrives is refused without panicking, and a sealed position round-trips, on another
// sealer with the same cluster secret too.
func FuzzSealedPosition(f *testing.F) {
	f.Add("a:1", "", byte(0))
	f.Add("1795358119074-0", "AAAA", byte(3))
	f.Add("", "!!", byte(200))
	a, err := newSealer([]byte("secret"))
	if err != nil {
		f.Fatal(err)
	}
	b, _ := newSealer([]byte("secret"))
	other, _ := newSealer([]byte("another secret"))
	f.Fuzz(func(t *testing.T, position, junk string, flip byte) {
		if _, err := a.open(sealCursor, junk); err == nil {
			t.Fatalf("opened %q, which nobody sealed", junk)
		}
		v := a.seal(sealCursor, position)
		if got, err := b.open(sealCursor, v); (err != nil || got != position) && len(v) <= maxSealed {
			t.Fatalf("open(seal(%q)) = %q, %v", position, got, err)
		}
		if r := a.sealRandom(sealCursor, position); len(r) <= maxSealed {
			if got, err := b.open(sealCursor, r); err != nil || got != position {
				t.Fatalf("open(sealRandom(%q)) = %q, %v", position, got, err)
			}
		}
		if a.seal(sealCursor, position) != v {
			t.Fatal("seal is not deterministic")
		}
		if _, err := b.open(sealEvent, v); err == nil {
			t.Fatal("a cursor opened as an event id")
		}
		if _, err := other.open(sealCursor, v); err == nil {
			t.Fatal("a cursor opened under another secret")
		}
		if strings.Contains(v, position) && len(position) > 3 {
			t.Fatalf("sealed %q shows %q", v, position)
		}
		bs := []byte(v)
		i := int(flip) % len(bs)
		bs[i] ^= 1 + flip%7
		if got, err := a.open(sealCursor, string(bs)); err == nil && string(bs) != v {
			// base64 may map a changed final character to the same bytes; anything else is a forgery.
			if got != position {
				t.Fatalf("tampered %q opened to %q", bs, got)
			}
		}
	})
}
