// Package tunnel defines Switchboard's wire protocol between the relay and a host agent: the upgrade handshake, the
// multiplexer settings, the control messages and the WebSocket close codes. Both ends import it, so the two sides
// cannot drift apart. docs/protocol.md is the prose version of this file.
//
// # Handshake
//
// The agent dials GET /v1/tunnel as a WebSocket with subprotocol "switchboard.v1" and these request headers:
//
//	Authorization: Bearer <host token>      bound to one host id
//	Switchboard-Host-Id: <id>               the id to register (printable, 1..128 bytes)
//	Switchboard-Host-Name: <name>           optional metadata
//	Switchboard-Host-Os: <os>               set by the agent (runtime.GOOS)
//	Switchboard-Agent-Version: <version>    set by the agent
//	Switchboard-Host-Label: k=v             repeatable
//
// Before the upgrade the relay answers errors as JSON with an HTTP status (see docs/protocol.md). On success it
// answers 101; it claims the host id only once the control stream is open, so the fencing epoch of the
// registration comes with "ready" (older relays sent it as header Switchboard-Epoch on the 101).
//
// # Multiplexing
//
// After the upgrade the WebSocket carries binary messages only; their payloads concatenated form one byte stream on
// which yamux runs. The relay is the yamux client, the agent the yamux server. The relay opens one stream per client
// exchange (streams are pooled and reused for keep-alive HTTP/1.1); each stream carries plain HTTP/1.1.
//
// The agent opens exactly one stream of its own right after the session starts: the control stream. The relay writes
// control messages on it as JSON lines (see Control), the first always "ready". The agent never writes on it.
//
// # Liveness
//
// Both ends run yamux keepalive pings (default every 10 s); a ping unanswered for twice the interval kills the session,
// so a blackholed peer is detected within three intervals.
package tunnel
