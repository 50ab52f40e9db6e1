package directory

import (
	"context"
	"errors"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Operation labels of the metrics an Instrumented directory feeds (the relay's switchboard_directory_op_seconds and
// switchboard_directory_errors_total).
const (
	OpClaim     = "claim"
	OpRelease   = "release"
	OpLookup    = "lookup"
	OpRecords   = "records"
	OpAdvertise = "advertise"
	OpPeerURL   = "peer_url"
	OpReassert  = "reassert"
	OpListPeers = "list_peers"
	OpProbe     = "probe" // the caller's own health probe; Instrumented does not probe
)

// Ops returns every operation label, for metrics that start each series at zero.
func Ops() []string {
	return []string{OpClaim, OpRelease, OpLookup, OpRecords, OpAdvertise, OpPeerURL, OpReassert, OpListPeers, OpProbe}
}

// OpMetrics are the families an Instrumented directory feeds, each labelled by op alone.
type OpMetrics struct {
	Seconds *prometheus.HistogramVec // latency of every call
	Errors  *prometheus.CounterVec   // calls that failed; ErrNotFound is an answer, not a failure
}

// Instrumented wraps a Directory and measures the calls made through it: Claim, Release, Lookup, Records,
// Advertise, PeerURL, ListPeers and ReassertEach, one operation label each. Every other method is the wrapped
// directory's, unmeasured: the relay measures its own health probe (OpProbe), and the rest run rarely or only
// locally.
type Instrumented struct {
	Directory
	m     OpMetrics
	after func(ctx context.Context, err error)
}

var _ Directory = (*Instrumented)(nil)

// Instrument wraps d. after, if not nil, is called with the context and result of every call once it is measured
// (the relay feeds its directory health state with it).
func Instrument(d Directory, m OpMetrics, after func(ctx context.Context, err error)) *Instrumented {
	return &Instrumented{Directory: d, m: m, after: after}
}

func (d *Instrumented) observe(ctx context.Context, op string, start time.Time, err error) {
	d.m.Seconds.WithLabelValues(op).Observe(time.Since(start).Seconds())
	if err != nil && !errors.Is(err, ErrNotFound) {
		d.m.Errors.WithLabelValues(op).Inc()
	}
	if d.after != nil {
		d.after(ctx, err)
	}
}

func (d *Instrumented) Claim(ctx context.Context, hostID, replica string, meta Metadata) (Entry, Prior, error) {
	start := time.Now()
	e, p, err := d.Directory.Claim(ctx, hostID, replica, meta)
	d.observe(ctx, OpClaim, start, err)
	return e, p, err
}

func (d *Instrumented) Release(ctx context.Context, hostID string, epoch uint64) (bool, error) {
	start := time.Now()
	ok, err := d.Directory.Release(ctx, hostID, epoch)
	d.observe(ctx, OpRelease, start, err)
	return ok, err
}

func (d *Instrumented) Lookup(ctx context.Context, hostID string) (Entry, error) {
	start := time.Now()
	e, err := d.Directory.Lookup(ctx, hostID)
	d.observe(ctx, OpLookup, start, err)
	return e, err
}

func (d *Instrumented) Records(ctx context.Context, hostIDs []string) ([]Record, error) {
	start := time.Now()
	r, err := d.Directory.Records(ctx, hostIDs)
	d.observe(ctx, OpRecords, start, err)
	return r, err
}

func (d *Instrumented) Advertise(ctx context.Context, replica, url string) error {
	start := time.Now()
	err := d.Directory.Advertise(ctx, replica, url)
	d.observe(ctx, OpAdvertise, start, err)
	return err
}

func (d *Instrumented) PeerURL(ctx context.Context, replica string) (string, error) {
	start := time.Now()
	u, err := d.Directory.PeerURL(ctx, replica)
	d.observe(ctx, OpPeerURL, start, err)
	return u, err
}

func (d *Instrumented) ListPeers(ctx context.Context) (map[string]string, error) {
	start := time.Now()
	m, err := d.Directory.ListPeers(ctx)
	d.observe(ctx, OpListPeers, start, err)
	return m, err
}

func (d *Instrumented) ReassertEach(ctx context.Context, entries []Entry) ([]bool, error) {
	start := time.Now()
	written, err := d.Directory.ReassertEach(ctx, entries)
	d.observe(ctx, OpReassert, start, err)
	return written, err
}
