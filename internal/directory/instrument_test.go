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

	if _, _, err := d.Claim(ctx, "h1", "r1", Metadata{}); err != nil {
		t.Fatalf("Claim = %v", err)
	}
	if _, err := d.Lookup(ctx, "h1"); err != nil {
		t.Fatalf("Lookup h1: %v", err)
	}
	if _, err := d.Lookup(ctx, "absent"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Lookup absent = %v, want ErrNotFound", err)
	}
	if _, _, err := d.Claim(ctx, "", "r1", Metadata{}); !errors.Is(err, ErrInvalid) {
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
	w, err := d.ReassertEach(ctx, []Entry{{HostID: "h2", Replica: "r1", Epoch: 7}})
	if err != nil || len(w) != 1 || !w[0] {
		t.Fatalf("ReassertEach = %v, %v; want the entry written", w, err)
	}
	if _, err := d.Reap(ctx); err != nil { // the wrapped directory's, unmeasured
		t.Fatalf("Reap: %v", err)
	}

	for op, want := range map[string]uint64{OpClaim: 2, OpLookup: 2, OpAdvertise: 1, OpPeerURL: 1, OpListPeers: 1,
		OpReassert: 1, OpRelease: 0} {
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
	if len(seen) != 8 {
		t.Errorf("hook saw %d results, want 8", len(seen))
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
