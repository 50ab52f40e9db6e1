package auth

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// MinFetchInterval is the least time between two JWKS fetches triggered by Verify: a token with an unknown "kid"
// (or a refresh that is due) fetches at most once per interval, so a flood of bogus kids cannot hammer the URL.
const MinFetchInterval = 30 * time.Second

// JWKSConfig configures NewJWKS. Only URL is required.
type JWKSConfig struct {
	// URL is the JWKS document's address (http or https).
	URL string
	// HostsClaim names the claim listing the hosts a token may reach: a JSON array of strings or one string, with
	// the same patterns as "hosts". If empty, "hosts".
	HostsClaim string
	// HostsSuffix, if not empty, is appended to every HostsClaim value. An issuer that lists organization ids
	// ("organizationIds": ["org1"]) for host ids of the form "org1:machine" uses HostsClaim "organizationIds" and
	// HostsSuffix ":*".
	HostsSuffix string
	// HostIDClaim names the claim holding the one host id a token may register. If empty, "host_id".
	HostIDClaim string
	// AdminClaim and AdminValue make admin tokens of the issuer's: a token whose claim AdminClaim is the string
	// AdminValue, or an array holding it, is of kind "admin" (it needs a "sub", and no host id, hosts or services
	// claim). If AdminClaim is empty, no JWKS token is an admin token, whatever its "kind" says: an issuer's
	// "kind" claim alone never grants the admin API.
	AdminClaim, AdminValue string
	// Issuer, if not empty, must equal the token's "iss".
	Issuer string
	// Audience, if not empty, must be one of the token's "aud" values.
	Audience string
	// RefreshInterval is how long fetched keys are used before Verify fetches the document again; values below
	// MinFetchInterval act as MinFetchInterval. If zero, one hour.
	RefreshInterval time.Duration
	// HTTPClient fetches the document. If nil, a client with a 10 s timeout over http.DefaultTransport.
	HTTPClient *http.Client
	// Logger receives fetch failures and skipped keys. If nil, logs are discarded.
	Logger *slog.Logger
}

// JWKS verifies RS256 and EdDSA (Ed25519) tokens against the keys of a JWKS document, chosen by the token's "kid".
// It starts no goroutines: keys are fetched on the first Verify (or Refresh), again when RefreshInterval has
// passed, and when a token names an unknown kid, at most once per MinFetchInterval; a failed fetch keeps the keys
// it had. Fetches are serialised and every caller waits for one only as long as its context allows. Safe for
// concurrent use.
type JWKS struct {
	// Immutable after NewJWKS.
	url         string
	hostsClaim  string
	hostsSuffix string
	hostIDClaim string
	adminClaim  string
	adminValue  string
	refresh     time.Duration
	client      *http.Client
	log         *slog.Logger
	parser      *jwt.Parser
	now         func() time.Time // replaced by tests

	// fetching holds one token while a fetch runs; it serialises fetches without blocking past a caller's context.
	fetching chan struct{}

	// Guarded by mu.
	mu          sync.Mutex
	keys        map[string]jwk
	fetchedAt   time.Time // last successful fetch
	attemptedAt time.Time // last fetch started by Verify, successful or not
	attempts    uint64    // fetches started, to notice one that ran while a caller waited
}

// NewJWKS validates cfg and applies its defaults. It does not fetch; call Refresh to fail fast on a bad URL.
func NewJWKS(cfg JWKSConfig) (*JWKS, error) {
	u, err := url.Parse(cfg.URL)
	if err != nil {
		return nil, fmt.Errorf("jwks url: %w", err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("jwks url %q: want an absolute http or https url", cfg.URL)
	}
	j := &JWKS{
		url:         cfg.URL,
		hostsClaim:  cfg.HostsClaim,
		hostsSuffix: cfg.HostsSuffix,
		hostIDClaim: cfg.HostIDClaim,
		adminClaim:  cfg.AdminClaim,
		adminValue:  cfg.AdminValue,
		refresh:     cfg.RefreshInterval,
		client:      cfg.HTTPClient,
		log:         cfg.Logger,
		now:         time.Now,
		fetching:    make(chan struct{}, 1),
	}
	if j.hostsClaim == "" {
		j.hostsClaim = "hosts"
	}
	if j.hostIDClaim == "" {
		j.hostIDClaim = "host_id"
	}
	if (cfg.AdminClaim == "") != (cfg.AdminValue == "") {
		return nil, errors.New("jwks admin claim: give both a claim name and a value, or neither")
	}
	if j.refresh == 0 {
		j.refresh = time.Hour
	}
	if j.refresh < 0 {
		return nil, fmt.Errorf("jwks refresh interval %v is negative", j.refresh)
	}
	if j.client == nil {
		j.client = &http.Client{Timeout: 10 * time.Second}
	}
	if j.log == nil {
		j.log = slog.New(slog.DiscardHandler)
	}
	j.log = j.log.With("jwks_url", cfg.URL)
	opts := []jwt.ParserOption{
		jwt.WithValidMethods([]string{jwt.SigningMethodRS256.Alg(), jwt.SigningMethodEdDSA.Alg()}),
		jwt.WithExpirationRequired(),
		jwt.WithLeeway(Leeway),
		jwt.WithTimeFunc(func() time.Time { return j.now() }),
	}
	if cfg.Issuer != "" {
		opts = append(opts, jwt.WithIssuer(cfg.Issuer))
	}
	if cfg.Audience != "" {
		opts = append(opts, jwt.WithAudience(cfg.Audience))
	}
	j.parser = jwt.NewParser(opts...)
	return j, nil
}

// Verify implements Verifier.
func (j *JWKS) Verify(ctx context.Context, token string) (Claims, error) {
	if err := precheck(token); err != nil {
		return Claims{}, err
	}
	mc := jwt.MapClaims{}
	_, err := j.parser.ParseWithClaims(token, mc, func(t *jwt.Token) (any, error) {
		kid, ok := t.Header["kid"].(string)
		if !ok || kid == "" {
			return nil, errors.New("no kid in header")
		}
		k, err := j.key(ctx, kid)
		if err != nil {
			return nil, err
		}
		if !k.allows(t.Method.Alg()) {
			return nil, fmt.Errorf("key %q does not allow alg %v", truncate(kid), t.Method.Alg())
		}
		return k.pub, nil
	})
	if err != nil {
		return Claims{}, jwtError(err)
	}
	return j.claims(mc)
}

// claims reads the configured claims out of a verified token.
func (j *JWKS) claims(mc jwt.MapClaims) (Claims, error) {
	var c Claims
	var err error
	if c.Subject, err = stringClaim(mc, "sub"); err != nil {
		return Claims{}, err
	}
	if c.Kind, err = stringClaim(mc, "kind"); err != nil {
		return Claims{}, err
	}
	if c.HostID, err = stringClaim(mc, j.hostIDClaim); err != nil {
		return Claims{}, err
	}
	if c.ID, err = stringClaim(mc, "jti"); err != nil {
		return Claims{}, err
	}
	switch admin := j.adminClaim != "" && claimHolds(mc[j.adminClaim], j.adminValue); {
	case admin && c.Kind != "" && c.Kind != KindAdmin:
		return Claims{}, fmt.Errorf("%w: token has the admin claim and kind %q", ErrInvalidToken, truncate(c.Kind))
	case admin:
		c.Kind = KindAdmin
	case c.Kind == KindAdmin:
		return Claims{}, fmt.Errorf("%w: kind \"admin\" without the configured admin claim", ErrInvalidToken)
	}
	switch v := mc[j.hostsClaim].(type) {
	case nil:
	case string:
		c.Hosts = []string{v + j.hostsSuffix}
	case []any:
		c.Hosts = make([]string, 0, len(v))
		for _, e := range v {
			s, ok := e.(string)
			if !ok {
				return Claims{}, fmt.Errorf("%w: claim %q: want strings, got %T", ErrInvalidToken, j.hostsClaim, e)
			}
			c.Hosts = append(c.Hosts, s+j.hostsSuffix)
		}
	default:
		return Claims{}, fmt.Errorf("%w: claim %q: want a string or an array of strings, got %T",
			ErrInvalidToken, j.hostsClaim, v)
	}
	switch v := mc["services"].(type) {
	case nil:
	case []any:
		c.Services = make([]string, 0, len(v))
		for _, e := range v {
			s, ok := e.(string)
			if !ok {
				return Claims{}, fmt.Errorf("%w: claim \"services\": want strings, got %T", ErrInvalidToken, e)
			}
			c.Services = append(c.Services, s)
		}
	default:
		return Claims{}, fmt.Errorf("%w: claim \"services\": want an array of strings, got %T", ErrInvalidToken, v)
	}
	exp, err := mc.GetExpirationTime()
	if err != nil || exp == nil {
		return Claims{}, fmt.Errorf("%w: bad exp", ErrInvalidToken) // unreachable after WithExpirationRequired
	}
	c.ExpiresAt = exp.Time
	_, hostsPresent := mc[j.hostsClaim]
	return settleKind(c, hostsPresent)
}

// claimHolds reports whether a claim's value is want, or an array with want among its strings.
func claimHolds(v any, want string) bool {
	switch v := v.(type) {
	case string:
		return v == want
	case []any:
		for _, e := range v {
			if s, ok := e.(string); ok && s == want {
				return true
			}
		}
	}
	return false
}

// stringClaim returns claim name as a string, "" when absent.
func stringClaim(mc jwt.MapClaims, name string) (string, error) {
	switch v := mc[name].(type) {
	case nil:
		return "", nil
	case string:
		return v, nil
	default:
		return "", fmt.Errorf("%w: claim %q: want a string, got %T", ErrInvalidToken, name, v)
	}
}

// Refresh fetches the JWKS document now, whatever the rate limit, and replaces the keys when it holds at least
// one usable key. Use it at startup to fail fast.
func (j *JWKS) Refresh(ctx context.Context) error {
	if err := j.acquire(ctx); err != nil {
		return err
	}
	defer j.release()
	j.mu.Lock()
	j.attemptedAt = j.now()
	j.attempts++
	j.mu.Unlock()
	return j.fetch(ctx)
}

// key returns the key named kid, fetching the document if the keys are due for a refresh or kid is unknown, within
// the rate limit. A stale key is used when no fetch may run or the fetch fails.
func (j *JWKS) key(ctx context.Context, kid string) (jwk, error) {
	for range 3 { // a round either returns or follows a fetch; a third round only after a concurrent fetch
		j.mu.Lock()
		k, ok := j.keys[kid]
		now := j.now()
		fresh := !j.fetchedAt.IsZero() && now.Sub(j.fetchedAt) < j.refresh
		mayFetch := j.attemptedAt.IsZero() || now.Sub(j.attemptedAt) >= MinFetchInterval
		seen := j.attempts
		j.mu.Unlock()
		if ok && fresh {
			return k, nil
		}
		if !mayFetch {
			if ok {
				return k, nil
			}
			return jwk{}, fmt.Errorf("unknown kid %q", truncate(kid))
		}

		if err := j.acquire(ctx); err != nil {
			return jwk{}, err
		}
		j.mu.Lock()
		if j.attempts != seen { // another caller fetched while this one waited: look again
			j.mu.Unlock()
			j.release()
			continue
		}
		prevAttempt := j.attemptedAt
		j.attemptedAt = j.now()
		j.attempts++
		j.mu.Unlock()

		err := j.fetch(ctx)
		if err != nil && ctx.Err() != nil {
			// This caller gave up; that says nothing about the URL, so do not hold back the next caller.
			j.mu.Lock()
			j.attemptedAt = prevAttempt
			j.mu.Unlock()
		}
		j.release()
		if err != nil {
			if ok {
				return k, nil // fetch already logged the failure
			}
			return jwk{}, fmt.Errorf("key %q unavailable: %w", truncate(kid), err)
		}
	}
	return jwk{}, fmt.Errorf("unknown kid %q", truncate(kid))
}

func (j *JWKS) acquire(ctx context.Context) error {
	select {
	case j.fetching <- struct{}{}:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("wait for jwks fetch: %w", context.Cause(ctx))
	}
}

func (j *JWKS) release() { <-j.fetching }

// fetch downloads and installs the document. The caller holds the fetching token.
func (j *JWKS) fetch(ctx context.Context) error {
	keys, err := j.download(ctx)
	if err != nil {
		if ctx.Err() == nil {
			j.log.Warn("jwks fetch failed", "err", err)
		}
		return err
	}
	j.mu.Lock()
	j.keys = keys
	j.fetchedAt = j.now()
	j.mu.Unlock()
	j.log.Debug("jwks fetched", "keys", len(keys))
	return nil
}
