package relay

import (
	"encoding/json"
	"net/http"
	"strconv"
)

// Stable error codes, returned as {"error":{"code":"...","message":"..."}}. docs/protocol.md lists them.
const (
	codeBadRequest       = "bad_request"
	codeInvalidHostID    = "invalid_host_id"
	codeUnauthorized     = "unauthorized"
	codeForbidden        = "forbidden"
	codeNotFound         = "not_found"
	codeHostOffline      = "host_offline"
	codeDraining         = "draining"
	codeTooManyTunnels   = "too_many_tunnels"
	codeTooManyStreams   = "too_many_streams"
	codeRateLimited      = "rate_limited"
	codeUpstreamFailed   = "upstream_failed"
	codeUpstreamTimeout  = "upstream_timeout"
	codeNotWebSocket     = "websocket_required"
	codeTooManyIDs       = "too_many_ids"
	codeMethodNotAllowed = "method_not_allowed"
	codeWrongReplica     = "wrong_replica"
	codeReplicaBusy      = "replica_busy"
	codeInvalidCursor    = "invalid_cursor"

	codeDirectoryUnavailable = "directory_unavailable" // an admin write the directory did not take
	codeConflict             = "conflict"              // an admin write the directory refused (a list is full)
	codeReplicaUnreachable   = "replica_unreachable"   // an admin call another replica did not answer

	codeCORSOriginNotAllowed = "cors_origin_not_allowed"
	codeCrossOriginRefused   = "cross_origin_refused"
)

// codeUpstreamHeaderTooLarge: the host's (or a peer's) response head was longer than Config.MaxResponseHeaderBytes.
const codeUpstreamHeaderTooLarge = "upstream_header_too_large"

// codeRelayBusy: the relay has Config.MaxExchanges client exchanges in flight.
const codeRelayBusy = "relay_busy"

// retryAfterSeconds is what a client is told to wait when a host is offline or the relay is busy.
const retryAfterSeconds = 2

type errorBody struct {
	Error struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

// writeError answers with the JSON error shape. Statuses that invite a retry carry Retry-After.
func writeError(w http.ResponseWriter, status int, code, message string) {
	var b errorBody
	b.Error.Code = code
	b.Error.Message = message
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	if status == http.StatusServiceUnavailable || status == http.StatusTooManyRequests {
		h.Set("Retry-After", strconv.Itoa(retryAfterSeconds))
	}
	noteAccessCode(w, code)
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(b)
}
