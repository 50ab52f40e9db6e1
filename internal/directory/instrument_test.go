package directory

import (
	"context"
	"errors"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func newOpMetrics() OpMetrics {
	return OpMetrics{
		Seconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "op_seconds"}, []string{"op"}),
		Errors:  prometheus.NewCounterVec(prometheus.CounterOpts{Name: "errors_total"}, []string{"op"}),
	}
}

// TestInstrumentCounts checks that every call through an Instrumented directory is timed under its op, that only
// failures other than ErrNotFound count as errors, and that the hook sees every result.
func TestInstrumentCounts(t *testing.T) {
	ctx := context.Background()
	m := newOpMetrics()
	var seen []error
	mem := NewMemory()
	defer mem.Close()
	d := Instrument(mem, m, func(_ context.Context, err error) { seen = append(seen, err) })

	if _, _, known, err := d.ClaimPrior(ctx, "h1", "r1", Metadata{}); err != nil || !known {
		t.Fatalf("ClaimPrior = known %v, %v; want known, nil (Memory keeps presence)", known, err)
	}
	if _, err := d.Lookup(ctx, "h1"); err != nil {
		t.Fatalf("Lookup h1: %v", err)
	}
	if _, err := d.Lookup(ctx, "absent"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Lookup absent = %v, want ErrNotFound", err)
	}
	if _, err := d.Claim(ctx, "", "r1", Metadata{}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("Claim with an empty id = %v, want ErrInvalid", err)
	}
	if err := d.Advertise(ctx, "r1", "https://r1.internal:9000"); err != nil {
		t.Fatalf("Advertise: %v", err)
	}
	if u, err := d.PeerURL(ctx, "r1"); err != nil || u != "https://r1.internal:9000" {
		t.Fatalf("PeerURL = %q, %v", u, err)
	}
	if l, err := d.ListPeers(ctx); err != nil || len(l) != 1 {
		t.Fatalf("ListPeers = %v, %v; want one peer", l, err)
	}

	for op, want := range map[string]uint64{OpClaim: 2, OpLookup: 2, OpAdvertise: 1, OpPeerURL: 1, OpListPeers: 1, OpRelease: 0} {
		if got := histogramCount(t, m.Seconds, op); got != want {
			t.Errorf("op_seconds{op=%q} count = %d, want %d", op, got, want)
		}
	}
	if got := testutil.ToFloat64(m.Errors.WithLabelValues(OpLookup)); got != 0 {
		t.Errorf("errors{op=lookup} = %v, want 0: not found is an answer", got)
	}
	if got := testutil.ToFloat64(m.Errors.WithLabelValues(OpClaim)); got != 1 {
		t.Errorf("errors{op=claim} = %v, want 1", got)
	}
	if len(seen) != 7 {
		t.Errorf("hook saw %d results, want 7", len(seen))
	}
}

// bare is a Directory with none of the optional capabilities.
type bare struct{ Directory }

// TestInstrumentFallbacks checks the capability methods on a directory that lacks the capabilities: they fall back
// without a call to measure.
func TestInstrumentFallbacks(t *testing.T) {
	ctx := context.Background()
	m := newOpMetrics()
	mem := NewMemory()
	defer mem.Close()
	d := Instrument(bare{mem}, m, nil)
	e, p, known, err := d.ClaimPrior(ctx, "h1", "r1", Metadata{})
	if err != nil || known || e.Replica != "r1" || (p.Replica != "" || p.Epoch != 0) {
		t.Fatalf("ClaimPrior = %+v, %+v, known %v, %v; want a plain claim with no prior", e, p, known, err)
	}
	if err := d.Advertise(ctx, "r1", "https://r1"); err != nil {
		t.Fatalf("Advertise without Peers = %v, want nil", err)
	}
	if _, err := d.PeerURL(ctx, "r1"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("PeerURL without Peers = %v, want ErrNotFound", err)
	}
	if l, err := d.ListPeers(ctx); l != nil || err != nil {
		t.Fatalf("ListPeers without PeerLister = %v, %v; want nil, nil", l, err)
	}
	if w, err := d.ReassertEach(ctx, []Entry{e}); w != nil || err != nil {
		t.Fatalf("ReassertEach without the capability = %v, %v; want nil, nil", w, err)
	}
	if got := histogramCount(t, m.Seconds, OpClaim); got != 1 {
		t.Errorf("claims measured = %d, want 1", got)
	}
	for _, op := range []string{OpAdvertise, OpPeerURL, OpListPeers, OpReassert} {
		if got := histogramCount(t, m.Seconds, op); got != 0 {
			t.Errorf("op_seconds{op=%q} count = %d, want 0: nothing was called", op, got)
		}
	}
}

func histogramCount(t *testing.T, v *prometheus.HistogramVec, op string) uint64 {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(v)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		for _, mt := range mf.GetMetric() {
			for _, l := range mt.GetLabel() {
				if l.GetName() == "op" && l.GetValue() == op {
					return mt.GetHistogram().GetSampleCount()
				}
			}
		}
	}
	return 0
}
