package relay

import (
	"net/http"

	"github.com/switchboard-relay/switchboard/internal/reply"
)

// The relay's error answers are written by package reply, which the hosts API shares; these are the relay's short
// names for its codes (docs/protocol.md lists them).
const (
	codeBadRequest       = reply.CodeBadRequest
	codeInvalidHostID    = reply.CodeInvalidHostID
	codeUnauthorized     = reply.CodeUnauthorized
	codeForbidden        = reply.CodeForbidden
	codeNotFound         = reply.CodeNotFound
	codeHostOffline      = reply.CodeHostOffline
	codeDraining         = reply.CodeDraining
	codeTooManyTunnels   = reply.CodeTooManyTunnels
	codeTooManyStreams   = reply.CodeTooManyStreams
	codeRateLimited      = reply.CodeRateLimited
	codeUpstreamFailed   = reply.CodeUpstreamFailed
	codeUpstreamTimeout  = reply.CodeUpstreamTimeout
	codeNotWebSocket     = reply.CodeNotWebSocket
	codeMethodNotAllowed = reply.CodeMethodNotAllowed
	codeWrongReplica     = reply.CodeWrongReplica
	codeReplicaBusy      = reply.CodeReplicaBusy

	codeDirectoryUnavailable = reply.CodeDirectoryUnavailable
	codeConflict             = reply.CodeConflict
	codeReplicaUnreachable   = reply.CodeReplicaUnreachable

	codeCORSOriginNotAllowed   = reply.CodeCORSOriginNotAllowed
	codeCrossOriginRefused     = reply.CodeCrossOriginRefused
	codeUpstreamHeaderTooLarge = reply.CodeUpstreamHeaderTooLarge
	codeRelayBusy              = reply.CodeRelayBusy
)

// writeError answers with the JSON error shape (reply.Error).
func writeError(w http.ResponseWriter, status int, code, message string) {
	reply.Error(w, status, code, message)
}

// writeJSON answers with v as JSON (reply.JSON).
func writeJSON(w http.ResponseWriter, v any) { reply.JSON(w, v) }
