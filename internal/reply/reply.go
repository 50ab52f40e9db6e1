// Package reply writes the relay's own JSON answers: errors with a stable code, as
// {"error":{"code":"...","message":"..."}}, and JSON values. The relay (internal/relay) and the hosts API
// (internal/hostsapi) answer through it, so an error has one shape whichever package refused the request.
// docs/protocol.md lists the codes.
package reply

import (
	"encoding/json"
	"net/http"
	"strconv"
)

// Stable error codes. docs/protocol.md lists them.
const (
	CodeBadRequest       = "bad_request"
	CodeInvalidHostID    = "invalid_host_id"
	CodeUnauthorized     = "unauthorized"
	CodeForbidden        = "forbidden"
	CodeNotFound         = "not_found"
	CodeHostOffline      = "host_offline"
	CodeDraining         = "draining"
	CodeTooManyTunnels   = "too_many_tunnels"
	CodeTooManyStreams   = "too_many_streams"
	CodeRateLimited      = "rate_limited"
	CodeUpstreamFailed   = "upstream_failed"
	CodeUpstreamTimeout  = "upstream_timeout"
	CodeNotWebSocket     = "websocket_required"
	CodeTooManyIDs       = "too_many_ids"
	CodeMethodNotAllowed = "method_not_allowed"
	CodeWrongReplica     = "wrong_replica"
	CodeReplicaBusy      = "replica_busy"
	CodeInvalidCursor    = "invalid_cursor"

	CodeDirectoryUnavailable = "directory_unavailable" // an admin write the directory did not take
	CodeConflict             = "conflict"              // an admin write the directory refused (a list is full)
	CodeReplicaUnreachable   = "replica_unreachable"   // an admin call another replica did not answer

	CodeCORSOriginNotAllowed = "cors_origin_not_allowed"
	CodeCrossOriginRefused   = "cross_origin_refused"
)

// CodeUpstreamHeaderTooLarge: the host's (or a peer's) response head was longer than the relay's
// MaxResponseHeaderBytes.
const CodeUpstreamHeaderTooLarge = "upstream_header_too_large"

// CodeRelayBusy: the relay has its MaxExchanges client exchanges in flight.
const CodeRelayBusy = "relay_busy"

// RetryAfterSeconds is what a client is told to wait when a host is offline or the relay is busy.
const RetryAfterSeconds = 2

type errorBody struct {
	Error struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

// CodeNoter is implemented by a ResponseWriter that wants to know the error code of the answer written through
// it (the relay's access log). Error finds it in the chain of wrappers (Unwrap() http.ResponseWriter).
type CodeNoter interface {
	NoteCode(code string)
}

// Error answers with the JSON error shape. Statuses that invite a retry carry Retry-After.
func Error(w http.ResponseWriter, status int, code, message string) {
	var b errorBody
	b.Error.Code = code
	b.Error.Message = message
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	if status == http.StatusServiceUnavailable || status == http.StatusTooManyRequests {
		h.Set("Retry-After", strconv.Itoa(RetryAfterSeconds))
	}
	Note(w, code)
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(b)
}

// Note tells the first CodeNoter in w's chain of wrappers, if any, that the answer's error code is code.
func Note(w http.ResponseWriter, code string) {
	for {
		switch t := w.(type) {
		case CodeNoter:
			t.NoteCode(code)
			return
		case interface{ Unwrap() http.ResponseWriter }:
			w = t.Unwrap()
		default:
			return
		}
	}
}

// JSON answers 200 with v as JSON, never cached.
func JSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_ = json.NewEncoder(w).Encode(v)
}
