package directory

import (
	"context"
	"testing"

	"github.com/switchboard-relay/switchboard/internal/redistest"
)

// runReplacingContract checks that ClaimReplacing reports the owner it replaced, and nothing after a release.
func runReplacingContract(t *testing.T, newDir func(t *testing.T) Directory) {
	d := newDir(t)
	rp := d.(Replacer)
	ctx := context.Background()
	e1, prev, err := rp.ClaimReplacing(ctx, "host-r", "r0", Metadata{Name: "a"})
	if err != nil || prev.Replica != "" {
		t.Fatalf("first claim: prev %+v, %v; want none", prev, err)
	}
	e2, prev, err := rp.ClaimReplacing(ctx, "host-r", "r1", Metadata{})
	if err != nil {
		t.Fatalf("second claim: %v", err)
	}
	if prev.Replica != "r0" || prev.Epoch != e1.Epoch || e2.Epoch <= e1.Epoch {
		t.Fatalf("second claim: %+v replacing %+v; want r0 epoch %d replaced by a newer epoch", e2, prev, e1.Epoch)
	}
	got, err := d.Lookup(ctx, "host-r")
	if err != nil || got.Replica != "r1" || got.Epoch != e2.Epoch {
		t.Fatalf("lookup after ClaimReplacing: %+v, %v", got, err)
	}
	if ok, err := d.Release(ctx, "host-r", e2.Epoch); !ok || err != nil {
		t.Fatalf("release: %v, %v", ok, err)
	}
	e3, prev, err := rp.ClaimReplacing(ctx, "host-r", "r1", Metadata{})
	if err != nil || prev.Replica != "" || e3.Epoch <= e2.Epoch {
		t.Fatalf("claim after release: %+v replacing %+v, %v; want none replaced", e3, prev, err)
	}
}

func TestMemoryClaimReplacing(t *testing.T) {
	runReplacingContract(t, func(t *testing.T) Directory {
		m := NewMemory()
		t.Cleanup(func() { m.Close() })
		return m
	})
}

func TestRedisClaimReplacing(t *testing.T) {
	addr, _ := redistest.Start(t)
	runReplacingContract(t, redisContractDir([]string{addr}))
}
