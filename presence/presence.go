// Package presence is a client for the presence API of a Switchboard relay: list the hosts a client token may reach
// (GET /v1/hosts) and watch them come and go (GET /v1/presence/events, Server-Sent Events).
//
// Watch keeps the event stream open across relay restarts and drains: it reconnects with backoff and resumes after
// the last event it delivered (Last-Event-ID). When the relay lost events after that position it delivers a Reset
// event: re-read the state with List, then go on applying events. Events of one host may repeat after a reconnect;
// drop any whose Seq is not above the last one applied for that host (see Event.Seq).
//
//	c := &presence.Client{Relay: "https://relay.example.com", Token: clientToken}
//	err := c.Watch(ctx, "", func(e presence.Event) error {
//		fmt.Println(e.Type, e.HostID)
//		return nil
//	})
//
// The wire format is described in the repository's docs/presence.md.
package presence

import (
	"time"
)

// Metadata is what a host registered with its tunnel.
type Metadata struct {
	// Name is the host's display name; empty if it set none.
	Name string `json:"name"`
	// OS is the host's operating system as Go names it (linux, darwin, windows, ...).
	OS string `json:"os"`
	// AgentVersion is the version of the agent that registered the host.
	AgentVersion string `json:"agent_version"`
	// Labels are the host's labels; empty if it set none.
	Labels map[string]string `json:"labels"`
}

// Host is one host's presence record, as GET /v1/hosts answers it.
type Host struct {
	// ID is the host id.
	ID string `json:"id"`
	// Online reports whether the host has a live tunnel.
	Online bool `json:"online"`
	// ConnectedAt is when its newest tunnel registered; nil if never.
	ConnectedAt *time.Time `json:"connected_at"`
	// DisconnectedAt is when its last tunnel ended; nil if never.
	DisconnectedAt *time.Time `json:"disconnected_at"`
	// Metadata is what the host registered with its newest tunnel.
	Metadata Metadata `json:"metadata"`
	// URL is the host's base URL on the relay (its own origin in host mode, else the path-mode URL).
	URL string `json:"url"`
	// PathURL is the host's path-mode base URL: <relay>/hosts/<id>/.
	PathURL string `json:"path_url"`
}

// EventType names what happened to a host, or Reset.
type EventType string

// The types of Event.
const (
	// Online: the host connected and was offline before (or never seen).
	Online EventType = "online"
	// Offline: the host's tunnel is gone and it did not come back within the relay's flap window.
	Offline EventType = "offline"
	// Moved: the host's tunnel moved (a relay drain, a takeover) without the host being offline in between.
	Moved EventType = "moved"
	// Updated: the host reconnected within the flap window with different metadata.
	Updated EventType = "updated"
	// Reset is not about a host: the relay lost events after the position Watch resumed from (they fell out of its
	// retention window, or it lost its log). Re-read the state with List; events after the Reset are current.
	Reset EventType = "reset"
)

// Event is one change in a host's presence (or a Reset), as the event stream and webhooks carry it.
type Event struct {
	// ID is the event's position in the relay's log: opaque, the same on every replica; resume after it with
	// Watch(ctx, id, ...).
	ID string `json:"id"`
	// Type is what happened.
	Type EventType `json:"type"`
	// HostID is the host it happened to; empty for Reset.
	HostID string `json:"host_id"`
	// Seq only grows per host: drop any event whose Seq is not above the last one applied for that host, and
	// replays, retries and reorderings are harmless. Zero for Reset.
	Seq uint64 `json:"seq"`
	// Epoch is the tunnel epoch the event is about.
	Epoch uint64 `json:"epoch"`
	// Replica is the relay replica holding the tunnel (for Offline: the one that last held it); may be empty.
	Replica string `json:"replica,omitempty"`
	// At is when it happened, by the clock of the replica that saw it; zero for Reset.
	At time.Time `json:"at"`
	// Metadata is the host's metadata as registered with the tunnel; nil for Offline and Reset.
	Metadata *Metadata `json:"metadata,omitempty"`
}
