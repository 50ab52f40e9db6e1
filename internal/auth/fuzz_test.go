package auth

import (
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// FuzzVerify checks that no token string panics the HS256 verifier and that none verifies without the secret:
// the seeds are tokens signed with other keys and algorithms, and their mutations.
func FuzzVerify(f *testing.F) {
	other := []byte("not the secret, but 32 bytes....")
	exp := time.Now().Add(24 * time.Hour).Unix()
	for _, c := range []jwt.MapClaims{
		{"sub": "host:a", "kind": "host", "host_id": "a", "exp": exp},
		{"sub": "u", "kind": "client", "hosts": []string{"*"}, "exp": exp},
	} {
		for _, m := range []jwt.SigningMethod{jwt.SigningMethodHS256, jwt.SigningMethodHS384} {
			s, err := jwt.NewWithClaims(m, c).SignedString(other)
			if err != nil {
				f.Fatal(err)
			}
			f.Add(s)
		}
		s, err := jwt.NewWithClaims(jwt.SigningMethodNone, c).SignedString(jwt.UnsafeAllowNoneSignatureType)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(s)
	}
	f.Add("")
	f.Add("a.b.c")
	f.Add("eyJhbGciOiJIUzI1NiJ9.e30.")
	f.Add(strings.Repeat(".", 100))

	v := NewHS256(testSecret)
	f.Fuzz(func(t *testing.T, token string) {
		c, err := v.Verify(t.Context(), token)
		if err == nil {
			t.Fatalf("token %q verified without the secret: %+v", token, c)
		}
		if c.Subject != "" || c.HostID != "" || c.Hosts != nil || c.Unrestricted {
			t.Fatalf("rejected token returned claims %+v", c)
		}
	})
}

// FuzzStripQueryToken checks that stripping leaves no token a request could carry, keeps every other segment in
// order, is idempotent, and that RedactURL never shows a token value.
func FuzzStripQueryToken(f *testing.F) {
	for _, s := range []string{
		"", "a=1", "access_token=x", "a=1&access_token=x&b=2", "access%5Ftoken=x", "access_token",
		"&&access_token=x&&", "a=%zz&access_token=%zz", "access_token=a&access_token=b", "x=access_token=y",
		"a=1;access_token=x&b=2", "access_token=x;a=1", ";access_token=x;",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		u, err := url.Parse("/p?" + raw)
		if err != nil {
			return
		}
		raw = u.RawQuery // what a request can actually carry: no '#', no spaces
		// The segments, at '&' and ';' alike: what is left must be the non-token ones, in order.
		segments := func(q string) []string {
			return strings.FieldsFunc(q, func(r rune) bool { return r == '&' || r == ';' })
		}
		var want []string
		for _, part := range segments(raw) {
			if _, tok := tokenParam(part); !tok {
				want = append(want, part)
			}
		}

		logged := RedactURL(u)
		StripQueryToken(u)
		if got := segments(u.RawQuery); !slices.Equal(got, want) {
			t.Fatalf("StripQueryToken(%q) = %q: segments %q, want %q", raw, u.RawQuery, got, want)
		}
		if tok, q := FromRequest(&http.Request{URL: u, Header: http.Header{}}); q || tok != "" {
			t.Fatalf("token %q still readable after stripping %q", tok, raw)
		}
		again := *u
		StripQueryToken(&again)
		if again.RawQuery != u.RawQuery {
			t.Fatalf("StripQueryToken not idempotent on %q: %q then %q", raw, u.RawQuery, again.RawQuery)
		}

		ru, err := url.Parse(logged)
		if err != nil {
			return // RedactURL of an unparsable query is for eyes only
		}
		for _, part := range segments(ru.RawQuery) {
			if val, tok := tokenParam(part); tok && val != redacted {
				t.Fatalf("RedactURL(%q) = %q shows token value %q", raw, ru.String(), val)
			}
		}
	})
}

// FuzzParseJWKS checks that no JWKS document panics the parser and that every key it returns is usable.
func FuzzParseJWKS(f *testing.F) {
	f.Add([]byte(`{"keys":[{"kty":"OKP","crv":"Ed25519","kid":"k","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]}`))
	f.Add([]byte(`{"keys":[{"kty":"RSA","kid":"r","n":"AQAB","e":"AQAB"}]}`))
	f.Add([]byte(`{"keys":[{"kty":"RSA","kid":"r","e":"AQABAQAB"}],"x":1}`))
	f.Add([]byte(`{"keys":null}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		keys, _, err := parseJWKS(body)
		if err != nil {
			return
		}
		for kid, k := range keys {
			if kid == "" || k.pub == nil || (k.alg != "RS256" && k.alg != "EdDSA") {
				t.Fatalf("unusable key %q: %+v", kid, k)
			}
		}
	})
}
