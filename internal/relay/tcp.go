package relay

import (
	"net/http"

	"github.com/switchboard-relay/switchboard/internal/auth"
	"github.com/switchboard-relay/switchboard/internal/tunnel"
)

// kindTCP is the exchange kind of a raw TCP stream: a WebSocket upgrade of /hosts/{id}/.switchboard/tcp/{service}
// (tunnel.TCPPathPrefix), which the host's agent answers with a bridge to the named service. The relay carries it
// exactly like any WebSocket (upgrade.go), so per-host and per-client stream limits, the stall timeout, the forward
// hop, hold-on-miss and drain all apply; only the token's "services" claim is checked here in addition.
const kindTCP = "tcp"

// Error codes of TCP streams.
const (
	codeInvalidService   = "invalid_service"
	codeServiceForbidden = "service_forbidden"
)

// exchangeKind is "tcp" for a request on the reserved TCP path, else "websocket" or "http".
func exchangeKind(r *http.Request, tg target) string {
	if _, isTCP, _ := tunnel.TCPService(tg.rest); isTCP {
		return kindTCP
	}
	if websocketRequested(r) {
		return "websocket"
	}
	return "http"
}

// checkTCP applies the TCP rules to an authenticated client exchange and returns its kind. It writes the refusal
// and returns false when the exchange may not go on: a TCP path that is not a WebSocket upgrade, an invalid
// service name, a service the token's "services" claim leaves out, a session cookie as the credential (TCP
// streams take a bearer token or access_token only, so a page cannot open one with the browser's cookie), or an
// HTTP exchange with a token limited to services.
func (s *Server) checkTCP(w http.ResponseWriter, r *http.Request, tg target, claims auth.Claims, cred credential) (string, bool) {
	kind := exchangeKind(r, tg)
	if kind != kindTCP {
		if !claims.MayUseHTTP() {
			s.countExchange(kind, "forbidden", http.StatusForbidden)
			writeError(w, http.StatusForbidden, codeServiceForbidden, "this token may open TCP services only")
			return kind, false
		}
		return kind, true
	}
	service, _, err := tunnel.TCPService(tg.rest)
	switch {
	case err != nil:
		s.countExchange(kind, "bad_request", http.StatusBadRequest)
		writeError(w, http.StatusBadRequest, codeInvalidService, "a TCP service name is 1-63 bytes of a-z, 0-9, '-' and '_'")
	case !websocketRequested(r) || r.Method != http.MethodGet:
		s.countExchange(kind, "bad_request", http.StatusBadRequest)
		writeError(w, http.StatusBadRequest, codeNotWebSocket, "a TCP service is opened with a WebSocket upgrade (docs/tcp.md)")
	case cred == credCookie:
		s.countExchange(kind, "forbidden", http.StatusForbidden)
		writeError(w, http.StatusForbidden, codeServiceForbidden, "a TCP service needs a bearer token, not a session cookie")
	case !claims.MayUseService(service):
		s.countExchange(kind, "forbidden", http.StatusForbidden)
		writeError(w, http.StatusForbidden, codeServiceForbidden, "this token may not open that TCP service")
	default:
		return kind, true
	}
	return kind, false
}
