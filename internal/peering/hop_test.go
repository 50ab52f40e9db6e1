package peering

import (
	"errors"
	"testing"
)

func TestNoncesReplayExpiryAndCap(t *testing.T) {
	c := nonces{max: 2}
	n1, n2, n3 := [16]byte{1}, [16]byte{2}, [16]byte{3}
	if err := c.admit(n1, 130, 100); err != nil {
		t.Fatal(err)
	}
	if err := c.admit(n1, 130, 101); !errors.Is(err, ErrHopReplayed) {
		t.Fatalf("replay: %v, want ErrHopReplayed", err)
	}
	if err := c.admit(n2, 131, 101); err != nil {
		t.Fatal(err)
	}
	if err := c.admit(n3, 132, 102); !errors.Is(err, ErrHopCacheFull) {
		t.Fatalf("past the cap: %v, want ErrHopCacheFull", err)
	}
	// Once n1's hop has left the window it is forgotten, which makes room.
	if err := c.admit(n3, 162, 131); err != nil {
		t.Fatalf("after n1 expired: %v", err)
	}
	if c.len() != 2 {
		t.Fatalf("held %d nonces, want 2", c.len())
	}
	if err := c.admit(n2, 131, 131); !errors.Is(err, ErrHopReplayed) {
		t.Fatalf("n2 within its window: %v, want ErrHopReplayed", err)
	}
}
