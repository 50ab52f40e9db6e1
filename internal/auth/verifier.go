package auth

import (
	"context"
	"errors"
	"fmt"
	"strings"
)

// Errors returned by verifiers. The relay answers all of them with 401.
var (
	// ErrNoToken means the request carried no token.
	ErrNoToken = errors.New("no token")
	// ErrInvalidToken means the token was presented but not accepted: malformed, wrong algorithm, bad signature,
	// unknown key, wrong issuer or audience, missing or ill-typed claims, or expired.
	ErrInvalidToken = errors.New("invalid token")
	// ErrExpired means an authentically signed token is past its "exp" (beyond the leeway). It matches
	// ErrInvalidToken too.
	ErrExpired = fmt.Errorf("%w: expired", ErrInvalidToken)
)

// maxTokenLen bounds the token a verifier will look at, so an oversized header costs no decoding work.
const maxTokenLen = 16 << 10

// A Verifier turns a bearer token into Claims. Implementations are safe for concurrent use.
type Verifier interface {
	// Verify checks token and returns its claims. An empty token fails with ErrNoToken (except AllowAll); any
	// other rejection matches ErrInvalidToken.
	Verify(ctx context.Context, token string) (Claims, error)
}

// precheck rejects tokens no verifier should decode.
func precheck(token string) error {
	if token == "" {
		return ErrNoToken
	}
	if len(token) > maxTokenLen {
		return fmt.Errorf("%w: longer than %d bytes", ErrInvalidToken, maxTokenLen)
	}
	return nil
}

// Chain returns a Verifier that asks each of vs in order and returns the first success. When all fail it returns
// their errors combined (matching each of them with errors.Is), or the single error when they all failed the same
// way. With no verifiers it rejects every token.
func Chain(vs ...Verifier) Verifier {
	return chain(append([]Verifier(nil), vs...))
}

type chain []Verifier

// Verify implements Verifier.
func (c chain) Verify(ctx context.Context, token string) (Claims, error) {
	if len(c) == 0 {
		if err := precheck(token); err != nil {
			return Claims{}, err
		}
		return Claims{}, fmt.Errorf("%w: no verifier configured", ErrInvalidToken)
	}
	var errs []error
	for _, v := range c {
		claims, err := v.Verify(ctx, token)
		if err == nil {
			return claims, nil
		}
		errs = append(errs, err)
	}
	same := true
	for _, err := range errs[1:] {
		if err != errs[0] {
			same = false
			break
		}
	}
	if same {
		return Claims{}, errs[0]
	}
	return Claims{}, chainError(errs)
}

// chainError is every verifier's rejection of one token, joined on one line.
type chainError []error

func (e chainError) Error() string {
	msgs := make([]string, len(e))
	for i, err := range e {
		msgs[i] = err.Error()
	}
	return "all verifiers rejected the token: " + strings.Join(msgs, "; ")
}

func (e chainError) Unwrap() []error { return e }

// AnonymousSubject is the Subject of AllowAll's claims: it names no one, so it must not be used to tell callers apart.
const AnonymousSubject = "anonymous"

// AllowAll returns the Verifier for running without authentication ("--auth none"). Every call succeeds, with or
// without a token, and returns Claims{Subject: "anonymous", Hosts: ["*"], Unrestricted: true}: the bearer may
// reach and register every host id. The token, if any, is ignored.
func AllowAll() Verifier { return allowAll{} }

type allowAll struct{}

// Verify implements Verifier.
func (allowAll) Verify(context.Context, string) (Claims, error) {
	return Claims{Subject: AnonymousSubject, Hosts: []string{"*"}, Unrestricted: true}, nil
}
