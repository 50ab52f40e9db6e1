package auth

import (
	"fmt"
	"strings"
	"time"
)

// Token kinds, the values of the "kind" claim.
const (
	// KindHost marks a token that lets an agent register one host id on the tunnel endpoint.
	KindHost = "host"
	// KindClient marks a token that lets a caller reach the hosts its "hosts" claim names.
	KindClient = "client"
	// KindAdmin marks a token that lets an operator call the admin API (/v1/admin/). It reaches no host and
	// registers no tunnel.
	KindAdmin = "admin"
)

// Claims is the meaning of a verified token. The zero value may reach and register nothing.
type Claims struct {
	// Subject is the "sub" claim.
	Subject string
	// Kind is KindHost, KindClient or KindAdmin for every verified token (see settleKind for tokens without a
	// "kind" claim); "" only from AllowAll and in the zero value.
	Kind string
	// ID is the "jti" claim ("" if the token has none): what POST /v1/admin/revoke names one token by.
	ID string
	// HostID is the single host id a host token may register (the "host_id" claim); "" for client tokens.
	HostID string
	// Hosts lists the host ids a client token may reach (the "hosts" claim): exact ids, "prefix*" patterns, or "*"
	// for every host.
	Hosts []string
	// Services, if not nil, limits a client token to the named TCP services of the hosts it reaches (the
	// "services" claim; "*" for every service): such a token opens those services only, no HTTP and no other
	// service. Nil (the claim absent) means every service and HTTP.
	Services []string
	// ExpiresAt is the "exp" claim; zero for AllowAll.
	ExpiresAt time.Time
	// Unrestricted is set only by AllowAll, never from a token: MayReach and MayRegister then hold for every
	// non-empty host id.
	Unrestricted bool
}

// MayReach reports whether the bearer may call hostID: the claims are of KindClient and an entry of Hosts equals
// hostID, is a "prefix*" pattern whose prefix starts hostID, or is "*". Any other kind reaches nothing, and nothing
// reaches the empty id.
func (c Claims) MayReach(hostID string) bool {
	if hostID == "" {
		return false
	}
	if c.Unrestricted {
		return true
	}
	if c.Kind != KindClient {
		return false
	}
	for _, p := range c.Hosts {
		if matchHost(p, hostID) {
			return true
		}
	}
	return false
}

// MayUseService reports whether the bearer may open the TCP service named service on a host it may reach: Services
// is nil, or lists service or "*".
func (c Claims) MayUseService(service string) bool {
	if c.Services == nil {
		return true
	}
	for _, s := range c.Services {
		if s == service || s == "*" {
			return true
		}
	}
	return false
}

// MayUseHTTP reports whether the bearer may make HTTP (and WebSocket) exchanges with a host it may reach: a token
// limited to TCP services (Services not nil) may not.
func (c Claims) MayUseHTTP() bool { return c.Services == nil }

// MayRegister reports whether the bearer may register a tunnel for hostID: the claims are of KindHost and HostID
// equals hostID (or the claims come from AllowAll). Any other kind registers nothing, and nothing registers the
// empty id.
func (c Claims) MayRegister(hostID string) bool {
	if hostID == "" {
		return false
	}
	if c.Unrestricted {
		return true
	}
	return c.Kind == KindHost && c.HostID == hostID
}

// IsAdmin reports whether the bearer may call the admin API: the claims are of KindAdmin. AllowAll's claims are
// not admin: running without authentication leaves the admin API closed.
func (c Claims) IsAdmin() bool { return c.Kind == KindAdmin && c.Subject != "" }

// settleKind applies the one-kind rule to the claims of an authentic token, so that a token is a host token, a
// client token or an admin token, never two of them:
//
//   - "kind": "host" needs a host id and no hosts claim;
//   - "kind": "client" needs a subject and no host id;
//   - "kind": "admin" needs a subject and carries no host id, hosts or services claim;
//   - no "kind" (JWKS tokens only): a host id without a hosts claim makes a host token; a hosts claim (even an empty
//     one) without a host id, or neither, makes a client token, which then needs a subject; a host id and a hosts
//     claim together are refused, since the token would qualify as both.
//
// hostsPresent says whether the token carried the hosts claim at all. Refusals match ErrInvalidToken.
func settleKind(c Claims, hostsPresent bool) (Claims, error) {
	if c.Kind == "" {
		switch {
		case c.HostID != "" && hostsPresent:
			return Claims{}, fmt.Errorf("%w: token has a host id and a hosts claim but no kind: it would be both a host and a client token", ErrInvalidToken)
		case c.HostID != "":
			c.Kind = KindHost
		default:
			c.Kind = KindClient
		}
	}
	switch {
	case c.Kind == KindHost && c.HostID == "":
		return Claims{}, fmt.Errorf("%w: host token without host id", ErrInvalidToken)
	case c.Kind == KindHost && hostsPresent:
		return Claims{}, fmt.Errorf("%w: host token with hosts", ErrInvalidToken)
	case c.Kind == KindClient && c.Subject == "":
		return Claims{}, fmt.Errorf("%w: client token without sub", ErrInvalidToken)
	case c.Kind == KindClient && c.HostID != "":
		return Claims{}, fmt.Errorf("%w: client token with host id", ErrInvalidToken)
	case c.Kind == KindHost && c.Services != nil:
		return Claims{}, fmt.Errorf("%w: host token with services", ErrInvalidToken)
	case c.Kind == KindAdmin && (c.Subject == "" || c.HostID != "" || hostsPresent || c.Services != nil):
		return Claims{}, fmt.Errorf("%w: admin token needs a sub and no host_id, hosts or services", ErrInvalidToken)
	case c.Kind != KindHost && c.Kind != KindClient && c.Kind != KindAdmin:
		return Claims{}, fmt.Errorf("%w: unknown kind %q", ErrInvalidToken, truncate(c.Kind))
	}
	return c, nil
}

// matchHost reports whether the hosts-claim entry pattern admits hostID. Only a final "*" is special.
func matchHost(pattern, hostID string) bool {
	if prefix, ok := strings.CutSuffix(pattern, "*"); ok {
		return strings.HasPrefix(hostID, prefix)
	}
	return pattern == hostID
}
