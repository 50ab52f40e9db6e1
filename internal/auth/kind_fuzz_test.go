package auth

import (
	"encoding/json"
	"testing"
)

// FuzzJWKSClaims feeds arbitrary payloads (what an issuer signs) to the JWKS claims reader and checks the one-kind
// rule on every accepted token: it is a host token or a client token, a host token reaches nothing and registers
// only its host id, a client token registers nothing and has a subject.
func FuzzJWKSClaims(f *testing.F) {
	for _, s := range []string{
		`{"sub":"u","hosts":["a","b*"]}`, `{"host_id":"h"}`, `{"sub":"u","host_id":"h","hosts":[]}`,
		`{"kind":"host","host_id":"h","hosts":"*"}`, `{"kind":"client","host_id":"h","sub":"u"}`,
		`{"sub":"u","host_id":"org1:m","organizationIds":["org1"]}`, `{"kind":"client","hosts":["*"]}`, `{}`,
		`{"sub":"","hosts":"*"}`, `{"kind":"","host_id":"*"}`, `{"sub":7}`,
	} {
		f.Add([]byte(s))
	}
	j, err := NewJWKS(JWKSConfig{URL: "https://id.example/jwks", HostsClaim: "organizationIds", HostsSuffix: ":*"})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, payload []byte) {
		var mc map[string]any
		if json.Unmarshal(payload, &mc) != nil || mc == nil {
			return
		}
		mc["exp"] = float64(4102444800) // the parser requires exp before claims runs
		c, err := j.claims(mc)
		if err != nil {
			return
		}
		probes := append([]string{"x", "org1:m", "*", c.HostID}, c.Hosts...)
		switch c.Kind {
		case KindHost:
			if c.HostID == "" || c.Hosts != nil {
				t.Fatalf("host token with host id %q and hosts %q", c.HostID, c.Hosts)
			}
			for _, p := range probes {
				if c.MayReach(p) {
					t.Fatalf("host token %+v reaches %q", c, p)
				}
			}
		case KindClient:
			if c.Subject == "" || c.HostID != "" {
				t.Fatalf("client token with sub %q and host id %q", c.Subject, c.HostID)
			}
			for _, p := range probes {
				if c.MayRegister(p) {
					t.Fatalf("client token %+v registers %q", c, p)
				}
			}
		default:
			t.Fatalf("accepted token of kind %q: %+v", c.Kind, c)
		}
	})
}
