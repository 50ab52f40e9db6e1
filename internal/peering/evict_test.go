package peering

import (
	"testing"
	"testing/synctest"
	"time"
)

const ttl = 15 * time.Second

// TestEvictionNoteExpires: an eviction notice supersedes older epochs for its ttl, then is forgotten.
func TestEvictionNoteExpires(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ev := NewEvictions(ttl)
		ev.Note("h", "B", 7)
		if !ev.Supersedes("h", 6) || ev.Supersedes("h", 7) {
			t.Fatal("a fresh notice for epoch 7 must supersede 6 and not 7")
		}
		if r, ok := ev.NewOwner("h", 6); !ok || r != "B" {
			t.Fatalf("NewOwner: %q %v", r, ok)
		}
		time.Sleep(ttl - time.Millisecond)
		if !ev.Supersedes("h", 6) {
			t.Fatal("the notice was forgotten before ttl")
		}
		time.Sleep(2 * time.Millisecond)
		if ev.Supersedes("h", 6) {
			t.Fatal("the notice still counts after ttl")
		}
		if _, ok := ev.NewOwner("h", 6); ok {
			t.Fatal("NewOwner still answers after ttl")
		}
	})
}
