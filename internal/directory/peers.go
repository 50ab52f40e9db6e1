package directory

import (
	"context"
	"fmt"
	"maps"
	"net/url"
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

// Advertise implements Directory.
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

// ListPeers implements Directory.
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

// PeerURL implements Directory.
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
