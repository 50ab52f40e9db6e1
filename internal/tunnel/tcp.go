package tunnel

import (
	"errors"
	"fmt"
	"strings"
)

// TCPPathPrefix is the reserved path under /hosts/{id} where a client asks for a host's named TCP service: a
// WebSocket upgrade of GET /hosts/{id}/.switchboard/tcp/{service}. The relay routes it like any WebSocket; the
// agent answers it itself and bridges the WebSocket's binary messages to the service (docs/protocol.md, "Raw TCP").
const TCPPathPrefix = "/.switchboard/tcp/"

// TCPLabel is the metadata label under which an agent lists the TCP services it publishes, comma-separated and
// sorted. The relay shows it in /v1/hosts/{id} like any label; an agent sets it from its configured services only.
const TCPLabel = "switchboard.tcp"

// TCPEOF is the text message that announces the end of one direction of a TCP stream (a half-close, TCP's FIN).
// Bytes travel as binary messages; a close with 1000 ends the stream once both directions sent TCPEOF; any other
// close aborts it.
const TCPEOF = "eof"

// MaxServiceNameLen bounds a TCP service name in bytes.
const MaxServiceNameLen = 63

// ErrInvalidServiceName reports a TCP service name outside [a-z0-9][a-z0-9_-]{0,62}.
var ErrInvalidServiceName = errors.New("invalid service name")

// CheckServiceName accepts 1 to MaxServiceNameLen bytes of lower-case letters, digits, '-' and '_', starting with
// a letter or digit: a name that is safe in a path, a label and a log line.
func CheckServiceName(name string) error {
	if name == "" || len(name) > MaxServiceNameLen {
		return fmt.Errorf("%w: %q: want 1 to %d bytes", ErrInvalidServiceName, name, MaxServiceNameLen)
	}
	for i := range len(name) {
		c := name[i]
		switch {
		case 'a' <= c && c <= 'z', '0' <= c && c <= '9':
		case (c == '-' || c == '_') && i > 0:
		default:
			return fmt.Errorf("%w: %q: want lower-case letters, digits, '-' and '_', starting with a letter or digit",
				ErrInvalidServiceName, name)
		}
	}
	return nil
}

// TCPService returns the service named by an escaped path under a host (the rest after /hosts/{id}), and whether
// the path is under TCPPathPrefix at all. A path under the prefix with an invalid name returns ok and an error.
func TCPService(rest string) (service string, ok bool, err error) {
	name, found := strings.CutPrefix(rest, TCPPathPrefix)
	if !found {
		return "", false, nil
	}
	if err := CheckServiceName(name); err != nil {
		return "", true, err
	}
	return name, true, nil
}
