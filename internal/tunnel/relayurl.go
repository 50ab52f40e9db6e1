package tunnel

import (
	"fmt"
	"net/url"
)

// WebSocketBase parses a relay base URL (http, https, ws or wss) and returns it with the WebSocket scheme that
// matches (ws for http, wss for https), for the endpoints the agent and the TCP client dial.
func WebSocketBase(relay string) (*url.URL, error) {
	u, err := url.Parse(relay)
	if err != nil {
		return nil, fmt.Errorf("relay URL %q: %w", relay, err)
	}
	switch u.Scheme {
	case "http", "ws":
		u.Scheme = "ws"
	case "https", "wss":
		u.Scheme = "wss"
	default:
		return nil, fmt.Errorf("relay URL %q: scheme must be http, https, ws or wss", relay)
	}
	if u.Host == "" {
		return nil, fmt.Errorf("relay URL %q has no host", relay)
	}
	return u, nil
}
