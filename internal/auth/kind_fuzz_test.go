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
		`{"sub":"ops","role":"sb-admin"}`, `{"sub":"ops","role":["x","sb-admin"],"hosts":["*"]}`,
		`{"sub":"ops","kind":"admin"}`, `{"sub":"ops","kind":"client","role":"sb-admin"}`,
		`{"role":"sb-admin"}`, `{"sub":"ops","role":"sb-admin","host_id":"h"}`, `{"sub":"u","jti":"j1","hosts":"*"}`,
	} {
		f.Add([]byte(s))
	}
	j, err := NewJWKS(JWKSConfig{URL: "https://id.example/jwks", HostsClaim: "organizationIds", HostsSuffix: ":*",
		AdminClaim: "role", AdminValue: "sb-admin"})
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
		if c.Kind != KindAdmin && c.IsAdmin() {
			t.Fatalf("%s token passes the admin check: %+v", c.Kind, c)
		}
		switch c.Kind {
		case KindAdmin:
			if !c.IsAdmin() || c.HostID != "" || c.Hosts != nil || c.Services != nil {
				t.Fatalf("admin token %+v", c)
			}
			if !claimHolds(mc["role"], "sb-admin") {
				t.Fatalf("admin token without the admin claim: %s", payload)
			}
			for _, p := range probes {
				if c.MayReach(p) || c.MayRegister(p) {
					t.Fatalf("admin token %+v reaches or registers %q", c, p)
				}
			}
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
