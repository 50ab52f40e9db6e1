package auth

import (
	"strings"
	"time"
)

// Token kinds, the values of the "kind" claim.
const (
	// KindHost marks a token that lets an agent register one host id on the tunnel endpoint.
	KindHost = "host"
	// KindClient marks a token that lets a caller reach the hosts its "hosts" claim names.
	KindClient = "client"
)

// Claims is the meaning of a verified token. The zero value may reach and register nothing.
type Claims struct {
	// Subject is the "sub" claim.
	Subject string
	// Kind is KindHost, KindClient, or "" for tokens (from a JWKS issuer, or AllowAll) that carry no "kind".
	Kind string
	// HostID is the single host id a host token may register (the "host_id" claim); "" for client tokens.
	HostID string
	// Hosts lists the host ids a client token may reach (the "hosts" claim): exact ids, "prefix*" patterns, or "*"
	// for every host.
	Hosts []string
	// ExpiresAt is the "exp" claim; zero for AllowAll.
	ExpiresAt time.Time
	// Unrestricted is set only by AllowAll, never from a token: MayReach and MayRegister then hold for every
	// non-empty host id.
	Unrestricted bool
}

// MayReach reports whether the bearer may call hostID: an entry of Hosts equals hostID, is a "prefix*" pattern
// whose prefix starts hostID, or is "*". A host-kind token reaches nothing, and nothing reaches the empty id.
func (c Claims) MayReach(hostID string) bool {
	if hostID == "" {
		return false
	}
	if c.Unrestricted {
		return true
	}
	if c.Kind == KindHost {
		return false
	}
	for _, p := range c.Hosts {
		if matchHost(p, hostID) {
			return true
		}
	}
	return false
}

// MayRegister reports whether the bearer may register a tunnel for hostID: HostID equals hostID (or the claims
// come from AllowAll). A client-kind token registers nothing, and nothing registers the empty id.
func (c Claims) MayRegister(hostID string) bool {
	if hostID == "" {
		return false
	}
	if c.Unrestricted {
		return true
	}
	return c.Kind != KindClient && c.HostID == hostID
}

// matchHost reports whether the hosts-claim entry pattern admits hostID. Only a final "*" is special.
func matchHost(pattern, hostID string) bool {
	if prefix, ok := strings.CutSuffix(pattern, "*"); ok {
		return strings.HasPrefix(hostID, prefix)
	}
	return pattern == hostID
}
