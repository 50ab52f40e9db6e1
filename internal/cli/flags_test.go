package cli_test

import (
	"net"
	"regexp"
	"strings"
	"testing"
)

// TestBadFlags: a wrong command line exits 2 at once with one message that names the problem, and prints nothing
// on stdout.
func TestBadFlags(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	host := []string{"host", "--relay", "http://127.0.0.1:1", "--id", "h1", "--upstream", "http://127.0.0.1:2"}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, `expected one of "serve", "host", "token"`},
		{[]string{"nosuch"}, "unexpected argument nosuch"},
		{[]string{"serve", "--no-such-flag"}, "unknown flag --no-such-flag"},
		{[]string{"serve", "--auth", "maybe"}, `--auth must be one of "token","none" but got "maybe"`},
		{[]string{"serve", "--drain-timeout", "soon"}, `--drain-timeout: expected duration but got "soon"`},
		{[]string{"serve", "--drain-timeout=-1s"}, "--drain-timeout -1s must not be negative"},
		{[]string{"serve", "--max-tunnels=-1"}, "--max-tunnels -1 must not be negative"},
		{[]string{"serve", "--jwks-url", "https://id.example/jwks"}, "--jwks-url needs --jwks-audience"},
		{[]string{"serve", "--stall-timeout=-1s"}, "--stall-timeout -1s must not be negative"},
		{[]string{"serve", "--max-response-header-bytes=-1"}, "--max-response-header-bytes -1 must not be negative"},
		{[]string{"serve", "--stream-window=1024"}, "--stream-window 1024 must be between 262144 and"},
		{[]string{"serve", "--listen", busy.Addr().String(), "--metrics-listen", ""}, "listen: listen tcp " + busy.Addr().String()},
		{[]string{"serve", "--log-level", "loud"}, "--log-level must be one of"},
		{[]string{"serve", "--tls-cert", "c.pem"}, "--tls-cert and --tls-key go together"},
		{[]string{"serve", "--tls-cert", "/nonexistent/c.pem", "--tls-key", "/nonexistent/k.pem"}, "--tls-cert/--tls-key: tls certificate: stat /nonexistent/c.pem"},
		{[]string{"serve", "--acme-domain", "relay.example"}, "--acme-domain needs --acme-cache DIR"},
		{[]string{"serve", "--acme-domain", "*.hosts.example", "--acme-cache", "/tmp/x"}, `--acme-domain "*.hosts.example": want a plain DNS name`},
		{[]string{"serve", "--acme-email", "ops@example.com"}, "--acme-email needs --acme-domain"},
		{[]string{"serve", "--proxy-protocol"}, "--proxy-protocol needs --proxy-protocol-from CIDR"},
		{[]string{"serve", "--proxy-protocol-from", "10.0.0.0/8"}, "--proxy-protocol-from needs --proxy-protocol"},
		{[]string{"serve", "--proxy-protocol", "--proxy-protocol-from", "10.0.0.0/33"}, `--proxy-protocol-from "10.0.0.0/33": want a CIDR`},
		{[]string{"host", "--relay", "http://127.0.0.1:1", "--id", "h1"}, "nothing to serve: give --upstream (HTTP), --tcp NAME=HOST:PORT, or both"},
		{host, "a host token is required: --token, SWITCHBOARD_TOKEN or --token-command"},
		{append(host, "--token", "t", "--upstream-header", "no colon"), `--upstream-header "no colon": want 'Name: value'`},
		{append(host, "--token", "t", "--upstream-header", "Host: example.com"), `--upstream-header "Host: example.com": Host cannot be fixed`},
		{append(host, "--token", "t", "--label", "novalue"), `--label: expected "<key>=<value>"`},
		{append(host, "--token", "t", "--relay", "ftp://x"), `relay URL "ftp://x": scheme must be http, https, ws or wss`},
		{append(host, "--token", "t", "--upstream", "127.0.0.1:2"), `upstream "127.0.0.1:2" must be an http:// or https:// URL`},
		{append(host, "--token", "t", "--id", "a/b"), `--id "a/b": invalid host id: '/' at byte 1`},
		{append(host, "--token", "t", "--id", "a\u202eb"), `--id "a\u202eb": invalid host id: U+202E at byte 1 is not a visible character`},
		{append(host, "--token", "t", "--id", strings.Repeat("x", 129)), "invalid host id: 129 bytes, more than 128"},
		{append(host, "--token", "t", "--min-backoff", "5s", "--max-backoff", "1s"), "--min-backoff 5s is above --max-backoff 1s"},
		{append(host, "--token", "t", "--transport", "carrier-pigeon"), "--transport must be one of"},
		{[]string{"token"}, `expected one of "host", "client"`},
		{[]string{"token", "host"}, "missing flags: --id"},
		{[]string{"token", "host", "--id", ""}, `--id "": invalid host id: empty`},
		{append(host, "--token", "t", "--id", ""), `--id "": invalid host id: empty`},
		{[]string{"token", "host", "--id", "h1", "--ttl=0s"}, "--ttl 0s: a token lifetime must be positive"},
		{[]string{"token", "host", "--id", "a b"}, `--id "a b": invalid host id: U+0020 at byte 1 is not a visible character`},
		{[]string{"token", "client", "--hosts", ","}, "--hosts needs at least one host id or pattern"},
		{[]string{"token", "client", "--hosts", ""}, "--hosts needs at least one host id or pattern"},
		{[]string{"token", "client"}, "missing flags: --hosts"},
		{[]string{"token", "client", "--hosts", "a", "--sub", ""}, "--sub must not be empty"},
		{[]string{"token", "client", "--hosts", "a", "--ttl", "forever"}, `--ttl: expected duration but got "forever"`},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			r := run(t, withSecret, tc.args...)
			if r.code != 2 || r.stdout != "" || !strings.Contains(r.stderr, tc.want) {
				t.Fatalf("exit %d, stdout %q, stderr %q; want exit 2 and %q", r.code, r.stdout, r.stderr, tc.want)
			}
			if lines := strings.Count(strings.TrimSpace(r.stderr), "\n") + 1; lines != 1 {
				t.Fatalf("%d lines on stderr, want one:\n%s", lines, r.stderr)
			}
		})
	}
}

// TestHelp: --help, on the program and on each command, prints usage to stdout and exits 0.
func TestHelp(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want []string
	}{
		{[]string{"--help"}, []string{"serve", "host", "token", "bench", "version"}},
		{[]string{"serve", "--help"}, []string{"--listen", "--metrics-listen", "--auth", "--drain-timeout", "SWITCHBOARD_SECRET"}},
		{[]string{"host", "--help"}, []string{"--relay", "--token-command", "--upstream-header", "--label", "SWITCHBOARD_TOKEN"}},
		{[]string{"token", "client", "--help"}, []string{"--hosts", "--sub", "--ttl"}},
		{[]string{"token", "host", "-h"}, []string{"--id", "--ttl"}},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			r := run(t, nil, tc.args...)
			if r.code != 0 {
				t.Fatalf("exit %d, stderr %q", r.code, r.stderr)
			}
			for _, w := range tc.want {
				if !strings.Contains(r.stdout, w) {
					t.Fatalf("help does not mention %q:\n%s", w, r.stdout)
				}
			}
		})
	}
}

// cleanVersion is what `switchboard version` may print: a release tag, or devel with the revision when the build
// recorded one.
var cleanVersion = regexp.MustCompile(`^(v[0-9]+\.[0-9]+\.[0-9]+[-.0-9A-Za-z]*|devel(\+[0-9a-f]{12}(-dirty)?)?)\n$`)

// TestVersion: `version`, `--version` and `serve --version` print the same single clean version and exit 0.
func TestVersion(t *testing.T) {
	var first string
	for _, args := range [][]string{{"version"}, {"--version"}, {"serve", "--version"}} {
		r := run(t, nil, args...)
		if r.code != 0 || !cleanVersion.MatchString(r.stdout) || r.stderr != "" {
			t.Fatalf("%v: exit %d, stdout %q, stderr %q", args, r.code, r.stdout, r.stderr)
		}
		if first == "" {
			first = r.stdout
		} else if r.stdout != first {
			t.Fatalf("%v printed %q, version printed %q", args, r.stdout, first)
		}
	}
}
