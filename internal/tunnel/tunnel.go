package tunnel

import (
	"encoding/json"
	"fmt"
	"io"
	"time"

	"github.com/coder/websocket"
	"github.com/hashicorp/yamux"
)

// Path is where the relay accepts tunnels.
const Path = "/v1/tunnel"

// Subprotocol is the WebSocket subprotocol both ends must agree on.
const Subprotocol = "switchboard.v1"

// Handshake request and response headers.
const (
	HeaderHostID       = "Switchboard-Host-Id"
	HeaderHostName     = "Switchboard-Host-Name"
	HeaderHostOS       = "Switchboard-Host-Os"
	HeaderAgentVersion = "Switchboard-Agent-Version"
	HeaderHostLabel    = "Switchboard-Host-Label"
	HeaderEpoch        = "Switchboard-Epoch" // on the 101 of older relays only; the epoch now comes with "ready"
)

// HeaderUpstreamError marks an answer the agent made itself because it could not reach its upstream service (an
// HTTP upstream or a published TCP service): a 502 whose value names the failure, UpstreamUnreachable. The relay
// counts such an exchange as outcome upstream_unreachable rather than as the host's own answer, and passes the
// header on to the client. An answer of the service itself never carries it unless the service sets it.
const HeaderUpstreamError = "Switchboard-Upstream-Error"

// UpstreamUnreachable is the value of HeaderUpstreamError: the agent could not connect to (or lost) its service.
const UpstreamUnreachable = "unreachable"

// MaxHostIDLen bounds a host id in bytes.
const MaxHostIDLen = 128

// Bounds of a host's labels (HeaderHostLabel), in bytes: longer ones are dropped at registration, and a listing's
// label filter beyond them is refused.
const (
	MaxLabelKeyLen   = 128
	MaxLabelValueLen = 1024
)

// WebSocket close codes of the tunnel. Codes 4000–4999 are for applications (RFC 6455 §7.4.2).
const (
	// CloseNormal: the agent is shutting down; the relay forgets the tunnel.
	CloseNormal = websocket.StatusNormalClosure // 1000
	// CloseGoingAway: the relay is exiting and drained what it could.
	CloseGoingAway = websocket.StatusGoingAway // 1001
	// CloseProtocol: the peer sent bytes that are not a valid yamux session or control stream.
	CloseProtocol = websocket.StatusProtocolError // 1002
	// CloseInternal: an unexpected relay-side failure.
	CloseInternal = websocket.StatusInternalError // 1011
	// CloseDrain: the relay asks the agent to reconnect at once (it is draining). The agent resets its backoff.
	CloseDrain websocket.StatusCode = 4001
	// CloseTokenExpired: the host token expired while the tunnel was up; reconnect with a fresh token.
	CloseTokenExpired websocket.StatusCode = 4401
	// CloseReplaced: a newer tunnel registered the same host id; this one is superseded. The agent that gets it
	// reconnects with backoff only if it has no other tunnel up (a duplicate agent must not flap forever).
	CloseReplaced websocket.StatusCode = 4409
	// CloseKicked: an operator removed the host (POST /v1/admin/hosts/{id}/kick), or refused its registration
	// because the host is banned; the reason says which, and until when. The agent waits before it reconnects.
	CloseKicked websocket.StatusCode = 4410
	// CloseAgentTooOld: the agent's version is older than the relay's --min-agent-version; the reason names both.
	// The agent waits long before it tries again: only an upgrade helps.
	CloseAgentTooOld websocket.StatusCode = 4426
)

// Control is one message on the control stream, relay → agent, as one JSON object per line.
type Control struct {
	// Type is "ready" (the first message: the tunnel is registered and routable) or "drain" (open a new tunnel
	// after DelayMillis, then let this one finish its in-flight streams; the relay closes it). Unknown types are
	// ignored, so new messages can be added without breaking old agents.
	Type string `json:"type"`
	// DelayMillis spreads reconnects of many agents over a jitter window.
	DelayMillis int64 `json:"delay_ms,omitempty"`
	// Code and Reason come with "close" on the raw transport, which has no close frames: the tunnel's close code
	// (the same codes as the WebSocket close codes below), sent just before the relay closes the connection.
	Code   int    `json:"code,omitempty"`
	Reason string `json:"reason,omitempty"`
	// Epoch comes with "ready": the fencing epoch of this registration. The relay claims the host only once the
	// tunnel works (its control stream is open), so the epoch is not known when the 101 is sent.
	Epoch uint64 `json:"epoch,omitempty"`
}

// Control types.
const (
	// ControlReady is the relay's first message: the tunnel is registered, and requests may arrive.
	ControlReady = "ready"
	// ControlDrain asks the agent to move to a new tunnel.
	ControlDrain = "drain"
	// ControlClose carries the close code on the raw transport.
	ControlClose = "close"
)

// RawUpgrade is the Upgrade token of the raw transport: an HTTP/1.1 upgrade after which yamux runs directly on
// the connection, without WebSocket framing (no masking, no per-message headers, large writes). Agents try it
// first and fall back to WebSocket where a proxy on the path does not pass it.
const RawUpgrade = "switchboard.v1"

// MaxControlLine bounds one control message.
const MaxControlLine = 4096

// WriteControl writes one control message.
func WriteControl(w io.Writer, c Control) error {
	b, err := json.Marshal(c)
	if err != nil {
		return err
	}
	b = append(b, '\n')
	_, err = w.Write(b)
	return err
}

// ParseControl decodes one control line (without its newline).
func ParseControl(line []byte) (Control, error) {
	var c Control
	if len(line) > MaxControlLine {
		return c, fmt.Errorf("control message of %d bytes exceeds %d", len(line), MaxControlLine)
	}
	if err := json.Unmarshal(line, &c); err != nil {
		return c, fmt.Errorf("parse control message: %w", err)
	}
	return c, nil
}

// Options are the multiplexer settings shared by both ends.
type Options struct {
	// PingInterval is the keepalive cadence. Zero means 10 s.
	PingInterval time.Duration
	// StreamWindow is the per-stream receive window. Zero means 4 MiB: large windows let one stream fill a fast
	// link; memory is only used while data is actually buffered.
	StreamWindow uint32
	// AcceptBacklog bounds streams opened by the peer and not yet accepted. Zero means 256. The relay accepts only
	// the control stream and sets it small: each slot costs memory on every idle tunnel.
	AcceptBacklog int
	// Logger for yamux's internal messages; nil discards them.
	LogOutput io.Writer
}

// DefaultPingInterval is the keepalive cadence used when Options.PingInterval is zero.
const DefaultPingInterval = 10 * time.Second

// YamuxConfig builds the yamux configuration both ends use.
func (o Options) YamuxConfig() *yamux.Config {
	c := yamux.DefaultConfig()
	c.EnableKeepAlive = true
	c.KeepAliveInterval = o.PingInterval
	if c.KeepAliveInterval <= 0 {
		c.KeepAliveInterval = DefaultPingInterval
	}
	// yamux's Ping waits ConnectionWriteTimeout for the pong: two intervals, so a dead peer is found within three.
	c.ConnectionWriteTimeout = 2 * c.KeepAliveInterval
	c.StreamOpenTimeout = 30 * time.Second
	c.StreamCloseTimeout = 5 * time.Minute
	c.MaxStreamWindowSize = o.StreamWindow
	if c.MaxStreamWindowSize == 0 {
		c.MaxStreamWindowSize = 4 << 20
	}
	c.AcceptBacklog = o.AcceptBacklog
	if c.AcceptBacklog <= 0 {
		c.AcceptBacklog = 256
	}
	if o.LogOutput != nil {
		c.LogOutput = o.LogOutput
	} else {
		c.LogOutput = io.Discard
	}
	return c
}
