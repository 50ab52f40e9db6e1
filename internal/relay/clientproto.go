package relay

import (
	"context"
	"net/http"
	"strings"
)

// clientTLSKey marks a connection context whose client spoke TLS to a front that terminated it.
type clientTLSKey struct{}

// ContextWithClientTLS marks ctx, a connection's context (http.Server.ConnContext), as one whose client's side was
// TLS though the relay saw plain bytes: a load balancer terminated TLS and said so in its PROXY v2 header. Requests
// on it are forwarded to hosts with X-Forwarded-Proto: https.
func ContextWithClientTLS(ctx context.Context) context.Context {
	return context.WithValue(ctx, clientTLSKey{}, true)
}

// clientProto is the scheme the client used, for X-Forwarded-Proto: "https" when the connection was TLS at this
// relay, when a trusted PROXY v2 header said the client's side was TLS, or, with TrustForwardedProto, when the
// front's own X-Forwarded-Proto says https; "http" otherwise.
func (s *Server) clientProto(r *http.Request) string {
	if r.TLS != nil {
		return "https"
	}
	if tls, _ := r.Context().Value(clientTLSKey{}).(bool); tls {
		return "https"
	}
	if s.cfg.TrustForwardedProto {
		// A front appends nothing here: the first value is the client's side. Anything but https counts as http.
		if v, _, _ := strings.Cut(r.Header.Get("X-Forwarded-Proto"), ","); strings.EqualFold(strings.TrimSpace(v), "https") {
			return "https"
		}
	}
	return "http"
}
