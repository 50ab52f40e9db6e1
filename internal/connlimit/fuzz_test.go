package connlimit

import (
	"net"
	"strings"
	"testing"
)

// stringAddr is a net.Addr of any text, as a listener of another network might give.
type stringAddr string

func (a stringAddr) Network() string { return "tcp" }
func (a stringAddr) String() string  { return string(a) }

// FuzzClientKey: every remote address maps to a key without panicking; IPv4 addresses (also IPv4-mapped IPv6)
// key as themselves, IPv6 ones as their /64.
func FuzzClientKey(f *testing.F) {
	f.Add("192.0.2.1:80")
	f.Add("[2001:db8:1:2:3:4:5:6]:443")
	f.Add("[::ffff:192.0.2.1]:1")
	f.Add("garbage")
	f.Fuzz(func(t *testing.T, s string) {
		k := clientKey(stringAddr(s))
		host, _, err := net.SplitHostPort(s)
		if err != nil {
			return
		}
		ip := net.ParseIP(host)
		switch {
		case ip == nil:
		case ip.To4() != nil:
			if k != ip.To4().String() {
				t.Fatalf("clientKey(%q) = %q, want %q", s, k, ip.To4())
			}
		default:
			if !strings.HasSuffix(k, "/64") {
				t.Fatalf("clientKey(%q) = %q, want a /64", s, k)
			}
			if k2 := clientKey(&net.TCPAddr{IP: ip}); k2 != k {
				t.Fatalf("clientKey(%q) = %q as text, %q as TCPAddr", s, k, k2)
			}
		}
	})
}
