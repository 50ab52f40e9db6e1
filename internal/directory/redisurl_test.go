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
	for _, s := range []string{"redis://u:p@h:1/2", "rediss://h", "a:1,b:2", "[::1]:1", "redis://[::1]/0", ",",
		"redis-sentinel://u:p@s1:26380,[::1]/2?master=m&sentinel_username=su&sentinel_password=sp",
		"rediss-sentinel://s1?master=m", "redis-sentinel://@?master=m#x"} {
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
		sentinel := strings.HasPrefix(strings.TrimSpace(s), sentinelScheme+"://") ||
			strings.HasPrefix(strings.TrimSpace(s), sentinelTLSScheme+"://")
		if sentinel != (cfg.Sentinel.Master != "") {
			t.Fatalf("ParseRedisURL(%q): sentinel master %q", s, cfg.Sentinel.Master)
		}
		if sentinel && checkMasterName(cfg.Sentinel.Master) != nil {
			t.Fatalf("ParseRedisURL(%q) accepted primary name %q", s, cfg.Sentinel.Master)
		}
		if !sentinel && (cfg.Sentinel.Username != "" || cfg.Sentinel.Password != "") {
			t.Fatalf("ParseRedisURL(%q) gave sentinel credentials without a sentinel url", s)
		}
		for _, a := range cfg.Addrs {
			host, port, err := net.SplitHostPort(a)
			if err != nil || host == "" || port == "" || strings.ContainsAny(host, "/?#@ ") {
				t.Fatalf("ParseRedisURL(%q) gave address %q", s, a)
			}
		}
	})
}

func TestParseRedisSentinelURL(t *testing.T) {
	tests := []struct {
		in                 string
		addrs              []string
		db                 int
		user, pass         string
		master             string
		sentUser, sentPass string
		tls                bool
	}{
		{in: "redis-sentinel://s1:26380,s2,[::1]:26381/2?master=mymaster",
			addrs: []string{"s1:26380", "s2:26379", "[::1]:26381"}, db: 2, master: "mymaster"},
		{in: "redis-sentinel://u:p%40ss@s1?master=m&sentinel_username=su&sentinel_password=s%2Fp",
			addrs: []string{"s1:26379"}, user: "u", pass: "p@ss", master: "m", sentUser: "su", sentPass: "s/p"},
		{in: "redis-sentinel://:only@s1:1/0?master=m", addrs: []string{"s1:1"}, pass: "only", master: "m"},
		{in: "rediss-sentinel://s1:1?master=m", addrs: []string{"s1:1"}, master: "m", tls: true},
		{in: " redis-sentinel://s1, s2 ?master=m ", addrs: []string{"s1:26379", "s2:26379"}, master: "m"},
	}
	for _, tt := range tests {
		cfg, err := ParseRedisURL(tt.in)
		if err != nil {
			t.Fatalf("ParseRedisURL(%q): %v", tt.in, err)
		}
		if !slices.Equal(cfg.Addrs, tt.addrs) || cfg.DB != tt.db || cfg.Username != tt.user || cfg.Password != tt.pass ||
			cfg.Sentinel != (SentinelConfig{Master: tt.master, Username: tt.sentUser, Password: tt.sentPass}) ||
			(cfg.TLS != nil) != tt.tls {
			t.Fatalf("ParseRedisURL(%q) = addrs %v db %d user %q pass %q sentinel %+v tls %v", tt.in, cfg.Addrs, cfg.DB,
				cfg.Username, cfg.Password, cfg.Sentinel, cfg.TLS != nil)
		}
		if cfg.TLS != nil && cfg.TLS.ServerName != "" {
			t.Fatalf("ParseRedisURL(%q): TLS server name %q, want each connection's own", tt.in, cfg.TLS.ServerName)
		}
	}

	bad := []struct{ in, says string }{
		{"redis-sentinel://s1:26379", "?master=NAME"},
		{"redis-sentinel://s1?master=", "?master=NAME"},
		{"redis-sentinel://s1?master=a%20b", "only letters"},
		{"redis-sentinel://s1?master=m&master=n", "given 2 times"},
		{"redis-sentinel://s1?master=m&password=x", `unknown parameter "password"`},
		{"redis-sentinel://?master=m", "no sentinel address"},
		{"redis-sentinel://u:secret@?master=m", "no sentinel address"},
		{"redis-sentinel://s1,,s2?master=m", "bad host"},
		{"redis-sentinel://s1:0?master=m", "bad port"},
		{"redis-sentinel://s1/x?master=m", "database"},
		{"redis-sentinel://s1/1/2?master=m", "database"},
		{"redis-sentinel://s1?master=m#frag", "fragment"},
		{"redis-sentinel://s1?master=m&x=%zz", "query"},
		{"redis+sentinel://s1?master=m", "scheme"},
		{"redis-sentinel://s1?master=m,redis://h:1", "only letters"},
	}
	for _, tt := range bad {
		cfg, err := ParseRedisURL(tt.in)
		if !errors.Is(err, ErrInvalid) {
			t.Fatalf("ParseRedisURL(%q) = %+v, %v; want ErrInvalid", tt.in, cfg, err)
		}
		if !strings.Contains(err.Error(), tt.says) {
			t.Fatalf("ParseRedisURL(%q) error %q does not say %q", tt.in, err, tt.says)
		}
		if strings.Contains(err.Error(), "secret") {
			t.Fatalf("ParseRedisURL(%q) error %q shows the password", tt.in, err)
		}
	}
}
