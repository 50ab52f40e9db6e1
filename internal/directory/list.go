package directory

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"
)

// ListHosts implements Directory. The sorted id list is rebuilt after new hosts appeared, once per listing.
func (m *Memory) ListHosts(ctx context.Context, prefix, after string, limit int) ([]string, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("list hosts: %w", err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil, fmt.Errorf("list hosts: %w", ErrClosed)
	}
	if len(m.sorted) != len(m.hosts) {
		m.sorted = m.sorted[:0]
		for id := range m.hosts {
			m.sorted = append(m.sorted, id)
		}
		slices.Sort(m.sorted)
	}
	start := max(after, prefix)
	i := sort.SearchStrings(m.sorted, start)
	if i < len(m.sorted) && m.sorted[i] == after {
		i++
	}
	var out []string
	for ; i < len(m.sorted) && len(out) < limit; i++ {
		if !strings.HasPrefix(m.sorted[i], prefix) {
			break
		}
		out = append(out, m.sorted[i])
	}
	return out, nil
}

// ListHosts implements Directory with one ZRANGE BYLEX on the host list (a single key, so one slot on a cluster).
func (r *Redis) ListHosts(ctx context.Context, prefix, after string, limit int) ([]string, error) {
	if r.closed.Load() {
		return nil, fmt.Errorf("list hosts: %w", ErrClosed)
	}
	if limit <= 0 {
		return nil, nil
	}
	lo := "[" + prefix
	if after >= prefix {
		lo = "(" + after
	}
	hi := "+"
	if prefix != "" {
		hi = "[" + prefix + "\xff" // no byte of a UTF-8 or printable id is 0xff
	}
	ctx, cancel := context.WithTimeout(ctx, r.cfg.Timeout)
	defer cancel()
	ids, err := r.client.Do(ctx, r.client.B().Zrange().Key(r.hostsKey()).Min(lo).Max(hi).Bylex().Limit(0, int64(limit)).Build()).AsStrSlice()
	if err != nil {
		return nil, fmt.Errorf("list hosts: %w", err)
	}
	return ids, nil
}
