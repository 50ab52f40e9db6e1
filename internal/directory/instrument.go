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

// Instrumented wraps a Directory and measures every call made through it: Claim, Release, Lookup and Records, and
// the optional capabilities reached through its own methods (ClaimPrior, Advertise, PeerURL, ListPeers,
// ReassertEach), each of which falls back when the wrapped directory lacks the capability. Type assertions for
// capabilities belong on the embedded Directory, which is the wrapped one.
type Instrumented struct {
	Directory
	m     OpMetrics
	after func(ctx context.Context, err error)
}

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

func (d *Instrumented) Claim(ctx context.Context, hostID, replica string, meta Metadata) (Entry, error) {
	start := time.Now()
	e, err := d.Directory.Claim(ctx, hostID, replica, meta)
	d.observe(ctx, OpClaim, start, err)
	return e, err
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

// claimReplacing claims hostID for replica and returns the entry it replaced, if the directory can tell
// (Replacer); otherwise prev is zero.
func (d *Instrumented) claimReplacing(ctx context.Context, hostID, replica string, meta Metadata) (e, prev Entry, err error) {
	r, ok := d.Directory.(Replacer)
	if !ok {
		e, err = d.Claim(ctx, hostID, replica, meta)
		return e, Entry{}, err
	}
	start := time.Now()
	e, prev, err = r.ClaimReplacing(ctx, hostID, replica, meta)
	d.observe(ctx, OpClaim, start, err)
	return e, prev, err
}

// ClaimPrior claims hostID for replica and returns the host's state before the claim, if the directory can tell
// (Presence: known true); otherwise it claims through Replacer if it can, or Claim, and p holds only the replaced
// owner, if any.
func (d *Instrumented) ClaimPrior(ctx context.Context, hostID, replica string, meta Metadata) (e Entry, p Prior, known bool, err error) {
	pd, isP := d.Directory.(Presence)
	if !isP {
		e, prev, err := d.claimReplacing(ctx, hostID, replica, meta)
		return e, Prior{Replica: prev.Replica, Epoch: prev.Epoch}, false, err
	}
	start := time.Now()
	e, p, err = pd.ClaimPrior(ctx, hostID, replica, meta)
	d.observe(ctx, OpClaim, start, err)
	return e, p, err == nil, err
}

// Advertise records replica's internal URL, if the directory keeps peers (Peers); otherwise it does nothing.
func (d *Instrumented) Advertise(ctx context.Context, replica, url string) error {
	p, ok := d.Directory.(Peers)
	if !ok {
		return nil
	}
	start := time.Now()
	err := p.Advertise(ctx, replica, url)
	d.observe(ctx, OpAdvertise, start, err)
	return err
}

// PeerURL returns replica's internal URL, or ErrNotFound when the directory keeps no peers.
func (d *Instrumented) PeerURL(ctx context.Context, replica string) (string, error) {
	p, ok := d.Directory.(Peers)
	if !ok {
		return "", ErrNotFound
	}
	start := time.Now()
	u, err := p.PeerURL(ctx, replica)
	d.observe(ctx, OpPeerURL, start, err)
	return u, err
}

// ListPeers returns every advertised replica, or nil if the directory cannot list them (PeerLister).
func (d *Instrumented) ListPeers(ctx context.Context) (map[string]string, error) {
	l, ok := d.Directory.(PeerLister)
	if !ok {
		return nil, nil
	}
	start := time.Now()
	m, err := l.ListPeers(ctx)
	d.observe(ctx, OpListPeers, start, err)
	return m, err
}

// reassertEacher is implemented by directories that can write back entries they lost (Redis).
type reassertEacher interface {
	ReassertEach(ctx context.Context, entries []Entry) ([]bool, error)
}

// ReassertEach writes entries back and reports which were written (none if the directory cannot write back).
func (d *Instrumented) ReassertEach(ctx context.Context, entries []Entry) ([]bool, error) {
	r, ok := d.Directory.(reassertEacher)
	if !ok {
		return nil, nil
	}
	start := time.Now()
	written, err := r.ReassertEach(ctx, entries)
	d.observe(ctx, OpReassert, start, err)
	return written, err
}
