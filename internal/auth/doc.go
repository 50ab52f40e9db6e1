// Package auth verifies the JSON Web Tokens that hosts present on the tunnel upgrade and that clients present on
// every proxied call, and mints the relay's own HS256 tokens.
//
// # Token kinds and claims
//
// Switchboard's own tokens (MintHost, MintClient, MintAdmin, verified by NewHS256) are HS256 JWTs with these claims:
//
//	claim    | type              | host token          | client token        | admin token    | meaning
//	---------+-------------------+---------------------+---------------------+----------------+------------------------------
//	sub      | string            | "host:<host id>"    | caller's choice     | operator's     | who the token speaks for
//	kind     | string            | "host"              | "client"            | "admin"        | which side of the relay may use it
//	host_id  | string            | required            | absent              | absent         | the one host id it may register
//	hosts    | array of strings  | absent              | optional            | absent         | host ids the bearer may reach
//	jti      | string            | set (random)        | set (random)        | set (random)   | token id, for revocation
//	iat      | NumericDate       | set                 | set                 | set            | issued at
//	exp      | NumericDate       | required            | required            | required       | expiry; 30 s leeway
//
// An admin token (Claims.IsAdmin) calls the admin API under /v1/admin/ and nothing else: it reaches no host and
// registers no tunnel, and host and client tokens never pass the admin check.
//
// A "hosts" entry is an exact host id ("org1:laptop"), a prefix pattern ending in one "*" ("org1:*" reaches every
// id starting with "org1:"), or "*" alone (every host). A "*" anywhere but the end is an ordinary character. An
// absent or empty list reaches nothing. A host token reaches nothing, and a client token registers nothing.
//
// Tokens from an external identity provider are verified against its JWKS document (NewJWKS, RS256 and EdDSA
// with Ed25519 keys, selected by the "kid" header). Their "kind" claim is optional: without it, a token with a host id
// and no hosts claim is a host token, and any other a client token; a token with both claims is refused, so no
// token is ever both kinds (the rule is settleKind's; Claims.Kind is always set). Every client token needs a
// non-empty "sub". A JWKS token is an admin token only through JWKSConfig.AdminClaim and AdminValue (a claim the
// operator names, such as "role": "switchboard-admin"); its own "kind": "admin" without that claim is refused. The
// names of the reachable-hosts and host-id claims are configurable (JWKSConfig.HostsClaim, default "hosts";
// JWKSConfig.HostIDClaim, default "host_id"), and the hosts claim may be a JSON array of strings or one string.
// JWKSConfig.HostsSuffix turns an issuer's organization ids into patterns (suffix ":*": "org1" reaches "org1:*").
// RSA keys must have 2048 to 8192 bits; keys without a "kid", with "use" other than "sig", or of other types are
// skipped.
//
// # Where tokens come from
//
// FromRequest reads "Authorization: Bearer <token>" or, for browser WebSockets that cannot set headers, the
// "access_token" query parameter (RFC 6750). The relay removes a query token with StripQueryToken before the
// request reaches a host, and logs URLs only through RedactURL.
//
// # Errors
//
// Verifiers fail with errors that match ErrNoToken (nothing presented) or ErrInvalidToken (anything else);
// ErrExpired, for an authentic token past its expiry, also matches ErrInvalidToken. Messages never contain the
// token.
//
// # Without authentication
//
// AllowAll accepts every request, token or not, as Claims{Subject: "anonymous", Hosts: ["*"], Unrestricted: true}.
// Unrestricted is never set from a token; only AllowAll sets it, and it makes MayRegister true for every host id.
package auth
