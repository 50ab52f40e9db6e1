package relay

import (
	"context"
	"errors"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/switchboard-relay/switchboard/internal/directory"
)

// Directory operation labels of switchboard_directory_op_seconds and switchboard_directory_errors_total.
const (
	opClaim     = "claim"
	opRelease   = "release"
	opLookup    = "lookup"
	opRecords   = "records"
	opAdvertise = "advertise"
	opPeerURL   = "peer_url"
	opReassert  = "reassert"
	opListPeers = "list_peers"
	opProbe     = "probe" // the health probe (dirhealth.go)
)

// timedDirectory measures every call the relay makes to its directory, and feeds the directory's health state
// (dirhealth.go) with each call that found it unreachable. ErrNotFound is an answer, not an error.
type timedDirectory struct {
	directory.Directory
	seconds *prometheus.HistogramVec // op
	errors  *prometheus.CounterVec   // op
	health  *dirHealth
}

func (d *timedDirectory) observe(ctx context.Context, op string, start time.Time, err error) {
	d.seconds.WithLabelValues(op).Observe(time.Since(start).Seconds())
	if err != nil && !errors.Is(err, directory.ErrNotFound) {
		d.errors.WithLabelValues(op).Inc()
	}
	d.health.observe(ctx, err)
}

func (d *timedDirectory) Claim(ctx context.Context, hostID, replica string, meta directory.Metadata) (directory.Entry, error) {
	start := time.Now()
	e, err := d.Directory.Claim(ctx, hostID, replica, meta)
	d.observe(ctx, opClaim, start, err)
	return e, err
}

func (d *timedDirectory) Release(ctx context.Context, hostID string, epoch uint64) (bool, error) {
	start := time.Now()
	ok, err := d.Directory.Release(ctx, hostID, epoch)
	d.observe(ctx, opRelease, start, err)
	return ok, err
}

func (d *timedDirectory) Lookup(ctx context.Context, hostID string) (directory.Entry, error) {
	start := time.Now()
	e, err := d.Directory.Lookup(ctx, hostID)
	d.observe(ctx, opLookup, start, err)
	return e, err
}

func (d *timedDirectory) Records(ctx context.Context, hostIDs []string) ([]directory.Record, error) {
	start := time.Now()
	r, err := d.Directory.Records(ctx, hostIDs)
	d.observe(ctx, opRecords, start, err)
	return r, err
}

// claimReplacing claims hostID for replica and returns the entry it replaced, if the directory can tell
// (directory.Replacer); otherwise prev is zero.
func (d *timedDirectory) claimReplacing(ctx context.Context, hostID, replica string, meta directory.Metadata) (e, prev directory.Entry, err error) {
	r, ok := d.Directory.(directory.Replacer)
	if !ok {
		e, err = d.Claim(ctx, hostID, replica, meta)
		return e, directory.Entry{}, err
	}
	start := time.Now()
	e, prev, err = r.ClaimReplacing(ctx, hostID, replica, meta)
	d.observe(ctx, opClaim, start, err)
	return e, prev, err
}

// claimPrior claims hostID for replica and returns the host's state before the claim, if the directory can tell
// (directory.Presence: ok true); otherwise it is claimReplacing, and p holds only the replaced owner.
func (d *timedDirectory) claimPrior(ctx context.Context, hostID, replica string, meta directory.Metadata) (e directory.Entry, p directory.Prior, ok bool, err error) {
	pd, isP := d.Directory.(directory.Presence)
	if !isP {
		e, prev, err := d.claimReplacing(ctx, hostID, replica, meta)
		return e, directory.Prior{Replica: prev.Replica, Epoch: prev.Epoch}, false, err
	}
	start := time.Now()
	e, p, err = pd.ClaimPrior(ctx, hostID, replica, meta)
	d.observe(ctx, opClaim, start, err)
	return e, p, err == nil, err
}

// peers returns the directory's Peers, or nil if it has none.
func (d *timedDirectory) peers() directory.Peers {
	p, _ := d.Directory.(directory.Peers)
	return p
}

// advertise records this replica's internal URL, if the directory keeps peers.
func (d *timedDirectory) advertise(ctx context.Context, replica, url string) error {
	p := d.peers()
	if p == nil {
		return nil
	}
	start := time.Now()
	err := p.Advertise(ctx, replica, url)
	d.observe(ctx, opAdvertise, start, err)
	return err
}

// peerURL returns replica's internal URL, or ErrNotFound when the directory keeps no peers.
func (d *timedDirectory) peerURL(ctx context.Context, replica string) (string, error) {
	p := d.peers()
	if p == nil {
		return "", directory.ErrNotFound
	}
	start := time.Now()
	u, err := p.PeerURL(ctx, replica)
	d.observe(ctx, opPeerURL, start, err)
	return u, err
}

// listPeers returns every advertised replica, or nil if the directory cannot list them.
func (d *timedDirectory) listPeers(ctx context.Context) (map[string]string, error) {
	l, ok := d.Directory.(directory.PeerLister)
	if !ok {
		return nil, nil
	}
	start := time.Now()
	m, err := l.ListPeers(ctx)
	d.observe(ctx, opListPeers, start, err)
	return m, err
}

// reasserter is implemented by directories that can write back entries they lost (directory.Redis).
type reasserter interface {
	ReassertEach(ctx context.Context, entries []directory.Entry) ([]bool, error)
}

// reassert writes entries back and reports which were written (none if the directory cannot write back).
func (d *timedDirectory) reassert(ctx context.Context, entries []directory.Entry) ([]bool, error) {
	r, ok := d.Directory.(reasserter)
	if !ok {
		return nil, nil
	}
	start := time.Now()
	written, err := r.ReassertEach(ctx, entries)
	d.observe(ctx, opReassert, start, err)
	return written, err
}

// runner is implemented by directories with background upkeep (directory.Redis: the replica lease).
type runner interface {
	Run(ctx context.Context) error
}
