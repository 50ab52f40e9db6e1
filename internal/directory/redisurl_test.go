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

// TestRedisURLErrorsHideSecrets: no error quotes the URL or a part of it, whatever part a password ends up in.
func TestRedisURLErrorsHideSecrets(t *testing.T) {
	tests := []struct{ in, says string }{
		{"redis-sentinel://:s3cr/et@s1?master=m", "host 1 of the Sentinel list is not host[:port] (an '@' follows"},
		{"redis-sentinel://:s3cr?et@s1?master=m", "host 1 of the Sentinel list is not host[:port]"},
		{"redis-sentinel://s1?master=m&sentinel_password=a&s3cret", "query parameter 3 is none of"},
		{"redis-sentinel://s1?master=m&sentinel_password=a&master=s3cr(et", "given more than once"},
		{"redis-sentinel://s1?master=s3cr(et", "primary name, byte 5: only letters"},
		{"redis-sentinel://s1?master=m&sentinel_password=s3cr%zzet", "query parameter 2 has a '%'"},
		{"redis-sentinel://s1?master=m&sentinel_password=s3cr;et", "query parameter 2 has a ';'"},
		{"redis-sentinel://u:s3cr%zz@s1?master=m", "the user information is not valid"},
		{"redis-sentinel://u:s3cret@s1/x@y?master=m", "the path is not /N"},
		{"redis://:s3cr/et@h:1", "the host is not host[:port] (an '@' follows the host"},
		{"redis://:s3cret@h:1/x", "the path is not /N"},
		{"redis://:s3cr%zzet@h:1", "the user information is not valid"},
		{"redis://:s3cret@h:99999", "the host has a port that is not"},
		{"redis://:s3cret@", "no host"},
		{"redis://:s3cr,et@h:1", "element 1 of the seed list: directory: invalid argument: the host is not"},
		{"redis://:s3cret@h:1,,b", "element 2 of the seed list: empty"},
		{"redis://h:1,u:s3cret@b", "element 2 of the seed list: directory: invalid argument: host has a port that is not a number from 1 to 65535 (user information needs"},
		{"redis://h:1,s3cret://b", "element 2 of the seed list: directory: invalid argument: the scheme is not redis"},
		{"s3cret://u@b", "the scheme is not redis or rediss"},
		{"redis://u:s3cret@h\x01:1", "the host is not host[:port]"},
	}
	for _, tt := range tests {
		_, err := ParseRedisURL(tt.in)
		if !errors.Is(err, ErrInvalid) {
			t.Fatalf("ParseRedisURL(%q) = %v, want ErrInvalid", tt.in, err)
		}
		if strings.Contains(err.Error(), "s3cr") || strings.Contains(err.Error(), "et@") {
			t.Errorf("ParseRedisURL(%q) error quotes the secret: %v", tt.in, err)
		}
		if !strings.Contains(err.Error(), tt.says) {
			t.Errorf("ParseRedisURL(%q) error %q does not say %q", tt.in, err, tt.says)
		}
	}
}

// TestReviewSentinelParseErrorLeaks is the reviewer's reproduction: a '/' in a Sentinel URL's password cut the
// authority short, and the error quoted what was left of it.
func TestReviewSentinelParseErrorLeaks(t *testing.T) {
	if _, err := ParseRedisURL("redis-sentinel://:s3cr/et@s1?master=m"); err != nil && strings.Contains(err.Error(), "s3cr") {
		t.Errorf("error quotes the password: %v", err)
	}
}

func TestRedactRedisURL(t *testing.T) {
	tests := []struct{ in, want string }{
		{"redis://:pw@h:1/0", "redis://REDACTED@h:1/0"},
		{"redis://u:pw@a:1,redis://u:pw@b:2", "redis://REDACTED@a:1,redis://REDACTED@b:2"},
		{" a:1, b:2 ", "a:1,b:2"},
		{"redis://h:1/0?x=a@b", "redis://h:1/0?x=a@b"},
		{"redis://u:p@w@h:1", "redis://REDACTED@h:1"},
		{"redis://h:1/0?Password=pw&x=1#y", "redis://h:1/0?Password=REDACTED&x=1#y"},
		{"redis://h:1/0?x=1#&password=pw", "redis://h:1/0?x=1#&password=REDACTED"},
		{"redis://h:1/0?pass%zzword=pw", "redis://h:1/0?REDACTED"},
		{"redis-sentinel://u:pw@s1,s2:26380/1?master=m&sentinel_password=pw&sentinel_username=su",
			"redis-sentinel://REDACTED@s1,s2:26380/1?master=m&sentinel_password=REDACTED&sentinel_username=su"},
		{"redis-sentinel://:pw,pw@s1:26379,s2:26379/0?master=m", "redis-sentinel://REDACTED@s1:26379,s2:26379/0?master=m"},
		{"redis-sentinel://u:p@w@s1?master=m", "redis-sentinel://REDACTED@s1?master=m"},
		{"rediss-sentinel://s1?sentinel%5Fpassword=pw&master=m", "rediss-sentinel://s1?sentinel%5Fpassword=REDACTED&master=m"},
		{"rediss-sentinel://s1?sentinel+PASSWORD=pw&master=m", "rediss-sentinel://REDACTED"},
		{"rediss-sentinel://s1?sentinel_passwor%64=pw&master=m", "rediss-sentinel://s1?sentinel_passwor%64=REDACTED&master=m"},
		{"redis-sentinel://:pw/pw@s1?master=m", "redis-sentinel://REDACTED"},
		{"redis://:pw,pw@h:1", "redis://REDACTED"},
		{"u:pw@h", "REDACTED"},
		{"pw://h", "pw://REDACTED"},
	}
	for _, tt := range tests {
		got := RedactRedisURL(tt.in)
		if got != tt.want {
			t.Errorf("RedactRedisURL(%q) = %q, want %q", tt.in, got, tt.want)
		}
		if strings.Contains(got, "pw") && !strings.HasPrefix(got, "pw://") {
			t.Errorf("RedactRedisURL(%q) = %q shows a password", tt.in, got)
		}
	}
}

// The marker passwords FuzzParseRedisURL puts into URLs: in the user information, and as sentinel_password.
const (
	fuzzUserPassword  = "Qv7userpwZ"
	fuzzParamPassword = "Qv7parampwZ"
)

// markedURL builds a URL from fuzzed pieces around the marker passwords, or returns "" if a piece holds a marker
// itself (then a marker in the output need not come from the password).
func markedURL(scheme, user, before, after, hosts, tail, pBefore, pAfter, rest string) string {
	for _, piece := range []string{scheme, user, before, after, hosts, tail, pBefore, pAfter, rest} {
		if strings.Contains(piece, "Qv7") {
			return ""
		}
	}
	return scheme + "://" + user + ":" + before + fuzzUserPassword + after + "@" + hosts + tail +
		"sentinel_password=" + pBefore + fuzzParamPassword + pAfter + rest
}

// FuzzRedactRedisURL: whether ParseRedisURL accepts a URL or not, neither its errors nor RedactRedisURL show a
// password put in the place of one, wherever its unencoded characters make the parser see it.
func FuzzRedactRedisURL(f *testing.F) {
	f.Add("redis-sentinel", "u", "", "", "s1:1,s2", "/0?master=m&", "", "", "")
	f.Add("redis-sentinel", "", "a,", "", "s1", "?", "", "", "&master=m")
	f.Add("redis-sentinel", "", "s3cr/", "", "s1", "?master=m&", "", "", "")
	f.Add("redis-sentinel", "", "s3cr?", "", "s1", "?master=m&", "a&", "", "")
	f.Add("rediss-sentinel", "", "", "&", "s1", "?master=m&", "", "#", "")
	f.Add("redis", "", "", "", "h:1", "/0?", "", "", "")
	f.Add("redis", "", "a,", "://", "h:1", "", "", "", "")
	f.Add("redis", "", "", "", "h:1,redis://u:p@h2", "/0?", "", "", "")
	f.Fuzz(func(t *testing.T, scheme, user, before, after, hosts, tail, pBefore, pAfter, rest string) {
		s := markedURL(scheme, user, before, after, hosts, tail, pBefore, pAfter, rest)
		if s == "" {
			return
		}
		showsMarker := func(s string) bool {
			return strings.Contains(s, fuzzUserPassword) || strings.Contains(s, fuzzParamPassword)
		}
		cfg, err := ParseRedisURL(s)
		got := RedactRedisURL(s)
		if err != nil {
			// Refused: neither the error nor the redaction may quote any piece of the URL that holds a marker.
			if showsMarker(err.Error()) {
				t.Fatalf("ParseRedisURL(%q) error shows a password: %v", s, err)
			}
			if showsMarker(got) {
				t.Fatalf("RedactRedisURL(%q) = %q shows a refused URL's password", s, got)
			}
			return
		}
		// Accepted: whatever the parser took for a password (a marker may also have landed in a host name, a path
		// or a parameter's name, where it is no secret) is hidden.
		for _, secret := range []string{cfg.Password, cfg.Sentinel.Password} {
			for _, marker := range []string{fuzzUserPassword, fuzzParamPassword} {
				if strings.Contains(secret, marker) && strings.Contains(got, marker) {
					t.Fatalf("RedactRedisURL(%q) = %q shows the password %q", s, got, secret)
				}
			}
		}
	})
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
		{"redis-sentinel://s1?master=m&master=n", `"master" given more than once`},
		{"redis-sentinel://s1?master=m&password=x", "query parameter 2 is none of master"},
		{"redis-sentinel://?master=m", "no sentinel address"},
		{"redis-sentinel://u:secret@?master=m", "no sentinel address"},
		{"redis-sentinel://s1,,s2?master=m", "host 2 of the Sentinel list is not host[:port]"},
		{"redis-sentinel://s1:0?master=m", "host 1 of the Sentinel list has a port that is not"},
		{"redis-sentinel://s1/x?master=m", "database"},
		{"redis-sentinel://s1/1/2?master=m", "database"},
		{"redis-sentinel://s1?master=m#frag", "fragment"},
		{"redis-sentinel://s1?master=m&x=%zz", "query parameter 2 has a '%'"},
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
