package relay

import (
	"context"

	"github.com/switchboard-relay/switchboard/internal/directory"
)

// The relay reaches its directory through directory.Instrument (server.go), which measures every call into
// switchboard_directory_op_seconds and switchboard_directory_errors_total and hands each result to the directory's
// health state (dirhealth.go), so that a call finding the directory unreachable turns it down at once.

// reasserter is implemented by directories that can write back entries they lost (directory.Redis).
type reasserter interface {
	ReassertEach(ctx context.Context, entries []directory.Entry) ([]bool, error)
}

// runner is implemented by directories with background upkeep (directory.Redis: the replica lease).
type runner interface {
	Run(ctx context.Context) error
}
