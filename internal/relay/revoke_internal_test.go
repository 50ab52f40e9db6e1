package relay

import (
	"testing"
	"time"

	"github.com/switchboard-relay/switchboard/internal/directory"
)

// TestRevocationReadBackNotMissing: a revocation taken here (its end to the nanosecond, from "for") and read back
// from the directory (to the millisecond) is the same revocation: the poll finds nothing to write back, so a replica
// does not rewrite its list every 2 s. One the directory lacks, or holds with an earlier end, is written back.
func TestRevocationReadBackNotMissing(t *testing.T) {
	now := time.Date(2030, 1, 2, 3, 4, 5, 123456789, time.UTC)
	rv, err := parseRevoke([]byte(`{"sub":"x","for":"1h"}`), now)
	if err != nil {
		t.Fatal(err)
	}
	var list revocations
	list.add(rv)
	stored := directory.Revocation{Subject: "x", Until: time.UnixMilli(rv.Until.UnixMilli())}
	for poll := range 3 {
		if missing := list.replace([]directory.Revocation{stored}, now); len(missing) != 0 {
			t.Fatalf("poll %d: read back %v, reported missing %v", poll, stored, missing)
		}
	}
	lost := directory.Revocation{TokenID: "j", Until: now.Add(time.Hour + time.Millisecond/2)}
	list.add(lost)
	if missing := list.replace([]directory.Revocation{stored}, now); len(missing) != 1 || missing[0].TokenID != "j" {
		t.Fatalf("a revocation the directory lost: missing %v", missing)
	}
	earlier := directory.Revocation{TokenID: "j", Until: now.Add(time.Minute)}
	if missing := list.replace([]directory.Revocation{stored, earlier}, now); len(missing) != 1 || missing[0].TokenID != "j" {
		t.Fatalf("a revocation the directory holds with an earlier end: missing %v", missing)
	}
}
