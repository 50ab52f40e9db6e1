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

// TestEvictionMovedTo: MovedTo names the replica of any recent notice for the host, and nothing for another host
// or once the notice is forgotten.
func TestEvictionMovedTo(t *testing.T) {
	for _, tc := range []struct {
		name   string
		notes  []string // replicas, noted in order with epochs 1, 2, ... for host "h"
		after  time.Duration
		host   string
		want   string
		wantOK bool
	}{
		{name: "no notice", host: "h"},
		{name: "first epoch", notes: []string{"B"}, host: "h", want: "B", wantOK: true},
		{name: "newest notice", notes: []string{"B", "C"}, host: "h", want: "C", wantOK: true},
		{name: "other host", notes: []string{"B"}, host: "g"},
		{name: "within ttl", notes: []string{"B"}, after: ttl - time.Millisecond, host: "h", want: "B", wantOK: true},
		{name: "after ttl", notes: []string{"B"}, after: ttl, host: "h"},
	} {
		synctest.Test(t, func(t *testing.T) {
			ev := NewEvictions(ttl)
			for i, r := range tc.notes {
				ev.Note("h", r, uint64(i+1))
			}
			time.Sleep(tc.after)
			if got, ok := ev.MovedTo(tc.host); got != tc.want || ok != tc.wantOK {
				t.Fatalf("%s: MovedTo(%q) = %q, %v; want %q, %v", tc.name, tc.host, got, ok, tc.want, tc.wantOK)
			}
		})
	}
}
