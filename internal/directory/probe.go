package directory

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/redis/rueidis"
)

// ProbePeer implements Directory: it reads replica's advertised internal URL from Redis itself, never from the
// client-side cache: one GET. It tells both whether Redis answers now (an error if it does not) and whether Redis
// still holds the advertisement ("" if the key is gone: Redis lost its data, or replica never advertised). The
// relay calls it a few times a second as its directory health probe.
func (r *Redis) ProbePeer(ctx context.Context, replica string) (string, error) {
	if r.closed.Load() {
		return "", fmt.Errorf("probe: %w", ErrClosed)
	}
	ctx, cancel := context.WithTimeout(ctx, r.cfg.Timeout)
	defer cancel()
	u, err := r.client.Do(ctx, r.client.B().Get().Key(r.peerKey(replica)).Build()).ToString()
	if rueidis.IsRedisNil(err) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("probe: %w", err)
	}
	return u, nil
}

// Unreachable reports whether err, returned by a directory method, means that the directory did not answer or
// cannot serve now (a network error, a timeout, Redis loading its data or a cluster without quorum) rather than
// an answer: not found, an invalid argument, a closed directory and Redis's refusal of a command are answers.
func Unreachable(err error) bool {
	if err == nil || errors.Is(err, ErrNotFound) || errors.Is(err, ErrInvalid) || errors.Is(err, ErrClosed) {
		return false
	}
	var re *rueidis.RedisError
	if errors.As(err, &re) {
		return re.IsLoading() || re.IsClusterDown() || re.IsTryAgain() || strings.HasPrefix(re.Error(), "MASTERDOWN")
	}
	return true
}
