package auth

import (
	"context"
	"testing"
	"time"
)

func TestMayReach(t *testing.T) {
	tests := []struct {
		name  string
		c     Claims
		host  string
		reach bool
	}{
		{"exact", Claims{Kind: KindClient, Hosts: []string{"a"}}, "a", true},
		{"exact other", Claims{Kind: KindClient, Hosts: []string{"a"}}, "b", false},
		{"exact is not prefix", Claims{Kind: KindClient, Hosts: []string{"a"}}, "ab", false},
		{"prefix", Claims{Kind: KindClient, Hosts: []string{"a*"}}, "abc", true},
		{"prefix equal", Claims{Kind: KindClient, Hosts: []string{"a*"}}, "a", true},
		{"prefix miss", Claims{Kind: KindClient, Hosts: []string{"a*"}}, "ba", false},
		{"star", Claims{Kind: KindClient, Hosts: []string{"*"}}, "anything:at/all", true},
		{"star empty id", Claims{Kind: KindClient, Hosts: []string{"*"}}, "", false},
		{"empty list", Claims{Kind: KindClient}, "a", false},
		{"empty entry", Claims{Kind: KindClient, Hosts: []string{""}}, "a", false},
		{"org colon exact", Claims{Kind: KindClient, Hosts: []string{"org1:m1"}}, "org1:m1", true},
		{"org colon prefix", Claims{Kind: KindClient, Hosts: []string{"org1:*"}}, "org1:m2", true},
		{"org colon prefix other org", Claims{Kind: KindClient, Hosts: []string{"org1:*"}}, "org10:m2", false},
		{"org colon prefix bare org", Claims{Kind: KindClient, Hosts: []string{"org1:*"}}, "org1", false},
		{"middle star literal", Claims{Kind: KindClient, Hosts: []string{"a*b"}}, "axb", false},
		{"middle star exact", Claims{Kind: KindClient, Hosts: []string{"a*b"}}, "a*b", true},
		{"double star", Claims{Kind: KindClient, Hosts: []string{"a**"}}, "a*x", true},
		{"double star miss", Claims{Kind: KindClient, Hosts: []string{"a**"}}, "ax", false},
		{"second entry", Claims{Kind: KindClient, Hosts: []string{"x", "y:*"}}, "y:1", true},
		{"kindless reaches nothing", Claims{Hosts: []string{"a"}}, "a", false},
		{"host kind reaches nothing", Claims{Kind: KindHost, HostID: "a", Hosts: []string{"*"}}, "a", false},
		{"allow all", allowAllClaims(), "x", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.c.MayReach(tt.host); got != tt.reach {
				t.Fatalf("MayReach(%q) = %v, want %v", tt.host, got, tt.reach)
			}
		})
	}
}

func TestMayRegister(t *testing.T) {
	tests := []struct {
		name string
		c    Claims
		host string
		ok   bool
	}{
		{"own id", Claims{Kind: KindHost, HostID: "org:a"}, "org:a", true},
		{"other id", Claims{Kind: KindHost, HostID: "org:a"}, "org:b", false},
		{"prefix of id", Claims{Kind: KindHost, HostID: "org:a"}, "org:", false},
		{"empty id", Claims{Kind: KindHost, HostID: ""}, "", false},
		{"kindless registers nothing", Claims{HostID: "a"}, "a", false},
		{"client kind", Claims{Kind: KindClient, HostID: "a", Hosts: []string{"*"}}, "a", false},
		{"no wildcard in host id", Claims{Kind: KindHost, HostID: "*"}, "a", false},
		{"allow all", allowAllClaims(), "any", true},
		{"allow all empty", allowAllClaims(), "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.c.MayRegister(tt.host); got != tt.ok {
				t.Fatalf("MayRegister(%q) = %v, want %v", tt.host, got, tt.ok)
			}
		})
	}
}

// allowAllClaims returns what AllowAll grants.
func allowAllClaims() Claims {
	c, err := AllowAll().Verify(context.Background(), "")
	if err != nil {
		panic(err)
	}
	return c
}

func TestServicesClaim(t *testing.T) {
	secret := []byte("0123456789abcdef0123456789abcdef")
	v := NewHS256(secret)
	all, err := MintClient(secret, "c", []string{"*"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	ssh, err := MintClientServices(secret, "c", []string{"*"}, []string{"ssh"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := v.Verify(context.Background(), all)
	if err != nil {
		t.Fatal(err)
	}
	cs, err := v.Verify(context.Background(), ssh)
	if err != nil {
		t.Fatal(err)
	}
	if !ca.MayUseService("pg") || !ca.MayUseHTTP() {
		t.Fatalf("token without services: %+v", ca)
	}
	if !cs.MayUseService("ssh") || cs.MayUseService("pg") || cs.MayUseHTTP() {
		t.Fatalf("token with services [ssh]: %+v", cs)
	}
	if _, err := MintClientServices(secret, "c", []string{"*"}, []string{}, time.Hour); err == nil {
		t.Fatal("an empty services list was minted")
	}
}
