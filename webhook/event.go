package webhook

import "github.com/switchboard-relay/switchboard/presence"

// The request headers of a delivery, besides Content-Type (application/json) and SignatureHeader.
const (
	// EventIDHeader carries the event's ID in the presence log: the same on every attempt of one event, so a
	// receiver can drop the duplicates that at-least-once delivery implies.
	EventIDHeader = "Switchboard-Event-Id"
	// EventTypeHeader carries the event's type (online, offline, moved, updated), for routing without parsing.
	EventTypeHeader = "Switchboard-Event-Type"
	// AttemptHeader is the attempt number of this delivery to this URL, from 1.
	AttemptHeader = "Switchboard-Delivery-Attempt"
)

// Event is the JSON body of a delivery: one presence event, the same type the presence event stream carries. Its
// Type is never presence.Reset in a webhook.
type Event = presence.Event

// EventType names what happened to a host.
type EventType = presence.EventType

// The event types a webhook carries.
const (
	Online  = presence.Online
	Offline = presence.Offline
	Moved   = presence.Moved
	Updated = presence.Updated
)
