package tunnel

import (
	"errors"
	"testing"
)

func TestTCPService(t *testing.T) {
	for _, tc := range []struct {
		rest    string
		service string
		ok      bool
		bad     bool
	}{
		{"/", "", false, false},
		{"/api/x", "", false, false},
		{"/.switchboard/tcp/ssh", "ssh", true, false},
		{"/.switchboard/tcp/pg_1-a", "pg_1-a", true, false},
		{"/.switchboard/tcp/", "", true, true},
		{"/.switchboard/tcp/SSH", "", true, true},
		{"/.switchboard/tcp/ssh/x", "", true, true},
		{"/.switchboard/tcp/-x", "", true, true},
		{"/.switchboard/tcp/%2e%2e", "", true, true},
		{"/.switchboard/tcp/" + string(make([]byte, 64)), "", true, true},
	} {
		svc, ok, err := TCPService(tc.rest)
		if svc != tc.service || ok != tc.ok || (err != nil) != tc.bad {
			t.Errorf("TCPService(%q) = %q, %v, %v; want %q, %v, bad=%v", tc.rest, svc, ok, err, tc.service, tc.ok, tc.bad)
		}
		if err != nil && !errors.Is(err, ErrInvalidServiceName) {
			t.Errorf("TCPService(%q): %v is not ErrInvalidServiceName", tc.rest, err)
		}
	}
}

func FuzzTCPService(f *testing.F) {
	f.Add("/.switchboard/tcp/ssh")
	f.Add("/x")
	f.Fuzz(func(t *testing.T, rest string) {
		svc, ok, err := TCPService(rest)
		if err == nil && ok && CheckServiceName(svc) != nil {
			t.Fatalf("accepted invalid name %q", svc)
		}
		if err == nil && ok && "/.switchboard/tcp/"+svc != rest {
			t.Fatalf("service %q does not round-trip %q", svc, rest)
		}
	})
}
