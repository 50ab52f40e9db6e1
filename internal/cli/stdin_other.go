//go:build !unix

package cli

import (
	"io"
	"os"
)

// pollableStdin returns stdin; on this platform a pending Read ends with the process.
func pollableStdin() io.ReadCloser { return os.Stdin }
