package relay_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"testing"

	"github.com/switchboard-relay/switchboard/internal/relay"
	"github.com/switchboard-relay/switchboard/internal/relaytest"
	"github.com/switchboard-relay/switchboard/internal/tunnel"
)

// upgradeFrom sends a raw tunnel upgrade for id from the local address src and returns the status; a 101 is
// closed at once (the relay then waits in vain for a control stream, as with a broken agent).
func upgradeFrom(t *testing.T, relayURL, src, id, token string) int {
	t.Helper()
	return rawUpgrade(t, relayURL, src, fmt.Sprintf("%s: %s\r\nAuthorization: Bearer %s\r\n", tunnel.HeaderHostID, id, token))
}

// rawUpgrade sends a raw tunnel upgrade with the header lines headers from src and returns the status. The
// connection is closed on return.
func rawUpgrade(t *testing.T, relayURL, src, headers string) int {
	t.Helper()
	u, _ := url.Parse(relayURL)
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
	c, err := d.Dial("tcp", u.Host)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	req := fmt.Sprintf("GET %s HTTP/1.1\r\nHost: %s\r\nConnection: Upgrade\r\nUpgrade: %s\r\n%s\r\n",
		tunnel.Path, u.Host, tunnel.RawUpgrade, headers)
	if _, err := io.WriteString(c, req); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	return resp.StatusCode
}

// TestJunkUpgradesDoNotLockOutAgents: junk tunnel upgrades (bad tokens, a token for another id, malformed ids)
// from an address are refused 429 once their own bucket is empty, while agents with valid tokens from the same
// address still register, under the separate bucket of valid upgrades; another address's junk has its own bucket.
func TestJunkUpgradesDoNotLockOutAgents(t *testing.T) {
	const failBurst, upgradeBurst = 3, 4
	r := relaytest.StartRelay(t, func(c *relay.Config) {
		c.AuthFailRate, c.AuthFailBurst = 0.001, failBurst
		c.UpgradeRate, c.UpgradeBurst = 0.001, upgradeBurst
	})
	var got []int
	for i := range 8 {
		got = append(got, upgradeFrom(t, r.URL, "127.0.0.1", fmt.Sprint("h", i), "junk"))
	}
	got = append(got, upgradeFrom(t, r.URL, "127.0.0.1", "victim", relaytest.HostToken(t, "other")))
	got = append(got, upgradeFrom(t, r.URL, "127.0.0.1", "a/b", relaytest.HostToken(t, "a/b")))
	if want := "[401 401 401 429 429 429 429 429 429 429]"; fmt.Sprint(got) != want {
		t.Fatalf("junk from one address: %v, want %s", got, want)
	}
	// A real agent from the same address registers and serves.
	relaytest.StartHost(t, r.URL, "real", echoPath, nil)
	if code, body := getText(t, r.URL+"/hosts/real/x", relaytest.ClientToken(t, "c", "real")); code != 200 || body != "echoPath /x" {
		t.Fatalf("the real agent: %d %q", code, body)
	}
	// Valid upgrades have a bucket of their own (the agent took one place).
	var valid []int
	for i := range upgradeBurst {
		id := fmt.Sprint("v", i)
		valid = append(valid, upgradeFrom(t, r.URL, "127.0.0.1", id, relaytest.HostToken(t, id)))
	}
	if want := fmt.Sprint([]int{101, 101, 101, 429}); fmt.Sprint(valid) != want {
		t.Fatalf("valid upgrades: %v, want %s", valid, want)
	}
	// Another address's failures are its own.
	if code := upgradeFrom(t, r.URL, "127.0.0.2", "h", "junk"); code != 401 {
		t.Fatalf("junk from another address: %d, want 401", code)
	}
	if n := metricValue(t, r, "switchboard_tunnel_upgrades_rate_limited_total", "bucket", "auth_failed"); n != 7 {
		t.Fatalf("auth_failed refusals counted %v, want 7", n)
	}
	if n := metricValue(t, r, "switchboard_tunnel_upgrades_rate_limited_total", "bucket", "upgrades"); n != 1 {
		t.Fatalf("upgrades refusals counted %v, want 1", n)
	}
}
