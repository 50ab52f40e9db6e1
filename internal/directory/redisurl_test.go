package directory

import (
	"errors"
	"net"
	"slices"
	"strings"
	"testing"
)

func TestParseRedisURL(t *testing.T) {
	tests := []struct {
		in       string
		addrs    []string
		db       int
		user     string
		pass     string
		tls      bool
		wantFail bool
	}{
		{in: "redis://127.0.0.1:6380/2", addrs: []string{"127.0.0.1:6380"}, db: 2},
		{in: "redis://localhost", addrs: []string{"localhost:6379"}},
		{in: "redis://:secret@h:1/0", addrs: []string{"h:1"}, pass: "secret"},
		{in: "redis://u:p@h:1", addrs: []string{"h:1"}, user: "u", pass: "p"},
		{in: "rediss://h.example:6380", addrs: []string{"h.example:6380"}, tls: true},
		{in: "redis://[::1]:7000", addrs: []string{"[::1]:7000"}},
		{in: "10.0.0.1:7000, 10.0.0.2:7001,10.0.0.3", addrs: []string{"10.0.0.1:7000", "10.0.0.2:7001", "10.0.0.3:6379"}},
		{in: "redis://a:1/3,redis://b:2/3", addrs: []string{"a:1", "b:2"}, db: 3},
		{in: "redis://a:1/3,b:2", addrs: []string{"a:1", "b:2"}, db: 3},
		{in: "h:1", addrs: []string{"h:1"}},
		{in: "", wantFail: true},
		{in: "http://h:1", wantFail: true},
		{in: "redis://h:1/x", wantFail: true},
		{in: "redis://h:1/-1", wantFail: true},
		{in: "redis://h:99999", wantFail: true},
		{in: "redis://", wantFail: true},
		{in: "a:1,,b:2", wantFail: true},
		{in: "redis://a:1/1,redis://b:2/2", wantFail: true},
		{in: "redis://a:1,rediss://b:2", wantFail: true},
		{in: "h:port", wantFail: true},
	}
	for _, tt := range tests {
		cfg, err := ParseRedisURL(tt.in)
		if tt.wantFail {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("ParseRedisURL(%q) = %+v, %v; want ErrInvalid", tt.in, cfg, err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("ParseRedisURL(%q): %v", tt.in, err)
		}
		if !slices.Equal(cfg.Addrs, tt.addrs) || cfg.DB != tt.db || cfg.Username != tt.user ||
			cfg.Password != tt.pass || (cfg.TLS != nil) != tt.tls {
			t.Fatalf("ParseRedisURL(%q) = addrs %v db %d user %q pass %q tls %v; want %v %d %q %q %v", tt.in,
				cfg.Addrs, cfg.DB, cfg.Username, cfg.Password, cfg.TLS != nil, tt.addrs, tt.db, tt.user, tt.pass, tt.tls)
		}
	}
}

func FuzzParseRedisURL(f *testing.F) {
	for _, s := range []string{"redis://u:p@h:1/2", "rediss://h", "a:1,b:2", "[::1]:1", "redis://[::1]/0", ","} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		cfg, err := ParseRedisURL(s)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("ParseRedisURL(%q) error %v is not ErrInvalid", s, err)
			}
			return
		}
		if len(cfg.Addrs) == 0 || cfg.DB < 0 {
			t.Fatalf("ParseRedisURL(%q) = %+v", s, cfg)
		}
		for _, a := range cfg.Addrs {
			host, port, err := net.SplitHostPort(a)
			if err != nil || host == "" || port == "" || strings.ContainsAny(host, "/?#@ ") {
				t.Fatalf("ParseRedisURL(%q) gave address %q", s, a)
			}
		}
	})
}
