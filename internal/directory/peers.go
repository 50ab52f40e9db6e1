package directory

import (
	"context"
	"fmt"
	"maps"
	"net/url"
)

// Peers lets relay replicas find each other's internal listeners, so that a replica can forward a request to the
// replica that holds the host's tunnel. Memory and Redis implement it.
type Peers interface {
	// Advertise records url as the internal address of replica. Replicas call it at start and then periodically,
	// so that the address comes back after the directory lost its data.
	Advertise(ctx context.Context, replica, url string) error

	// PeerURL returns the internal address advertised by replica, or ErrNotFound.
	PeerURL(ctx context.Context, replica string) (string, error)
}

// PeerLister is implemented by directories that can list every advertised replica, so that a replica can still
// ask its peers for a host while the directory's host entries are unreachable (it lists while the directory
// answers and keeps the last list).
type PeerLister interface {
	// ListPeers returns replica id → internal URL for every replica that advertised itself, including replicas that
	// may have died since.
	ListPeers(ctx context.Context) (map[string]string, error)
}

var (
	_ Peers      = (*Memory)(nil)
	_ Peers      = (*Redis)(nil)
	_ PeerLister = (*Memory)(nil)
	_ PeerLister = (*Redis)(nil)
)

// checkPeer validates the arguments of Advertise.
func checkPeer(replica, u string) error {
	if replica == "" {
		return fmt.Errorf("%w: empty replica id", ErrInvalid)
	}
	p, err := url.Parse(u)
	if err != nil || (p.Scheme != "http" && p.Scheme != "https") || p.Host == "" {
		return fmt.Errorf("%w: internal url %q is not an absolute http(s) URL", ErrInvalid, u)
	}
	return nil
}

// Advertise implements Peers.
func (m *Memory) Advertise(ctx context.Context, replica, u string) error {
	if err := checkPeer(replica, u); err != nil {
		return fmt.Errorf("advertise %s: %w", replica, err)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("advertise %s: %w", replica, err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return fmt.Errorf("advertise %s: %w", replica, ErrClosed)
	}
	if m.peers == nil {
		m.peers = make(map[string]string)
	}
	m.peers[replica] = u
	return nil
}

// ListPeers implements PeerLister.
func (m *Memory) ListPeers(ctx context.Context) (map[string]string, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("list peers: %w", err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil, fmt.Errorf("list peers: %w", ErrClosed)
	}
	return maps.Clone(m.peers), nil
}

// PeerURL implements Peers.
func (m *Memory) PeerURL(ctx context.Context, replica string) (string, error) {
	if err := ctx.Err(); err != nil {
		return "", fmt.Errorf("peer url %s: %w", replica, err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return "", fmt.Errorf("peer url %s: %w", replica, ErrClosed)
	}
	u, ok := m.peers[replica]
	if !ok {
		return "", ErrNotFound
	}
	return u, nil
}
