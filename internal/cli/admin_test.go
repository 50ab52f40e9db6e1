package cli_test

import (
	"encoding/json"
	"net"
	"net/http"
	"strings"
	"testing"
)

// TestAdminCLI runs `switchboard admin` against a real relay with a real host: tables by default, --json, the
// token from SWITCHBOARD_TOKEN, kick with a ban, revoke, drain of the replica itself, and clear errors for a
// refused token and an unreachable relay.
func TestAdminCLI(t *testing.T) {
	// The test binary's version is a pre-release of 0.0.0: it passes a minimum of another pre-release of 0.0.0.
	p, addr, _ := startRelay(t, withSecret, "--min-agent-version", "0.0.0-rc")
	relay := "http://" + addr
	up := upstream(t, func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write([]byte("ok")) })
	start(t, nil, "host", "--relay", relay, "--id", "laptop", "--token", mint(t, "host", "--id", "laptop"),
		"--upstream", up, "--label", "team=x")
	client := mint(t, "client", "--hosts", "*")
	waitStatus(t, relay+"/hosts/laptop/", client, 200)
	admin := mint(t, "admin", "--sub", "ops")
	env := []string{"SWITCHBOARD_TOKEN=" + admin}

	r := run(t, env, "admin", "replicas", "--relay", relay)
	if r.code != 0 || !strings.Contains(r.stdout, "REPLICA") || !strings.Contains(r.stdout, "serving") {
		t.Fatalf("admin replicas: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	r = run(t, env, "admin", "tunnels", "--relay", relay)
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	if r.code != 0 || len(lines) != 2 || !strings.HasPrefix(lines[0], "HOST") || !strings.HasPrefix(lines[1], "laptop") ||
		!strings.Contains(lines[1], testVersion) {
		t.Fatalf("admin tunnels: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	r = run(t, nil, "admin", "tunnels", "--relay", relay, "--token", admin, "--json", "--label", "team=x")
	var page struct {
		Tunnels []struct {
			HostID    string `json:"host_id"`
			Transport string `json:"transport"`
			BytesIn   int64  `json:"bytes_in"`
		} `json:"tunnels"`
	}
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &page) != nil || len(page.Tunnels) != 1 ||
		page.Tunnels[0].HostID != "laptop" || page.Tunnels[0].BytesIn == 0 {
		t.Fatalf("admin tunnels --json: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}

	r = run(t, env, "admin", "kick", "--relay", relay, "laptop", "--ban", "1h")
	if r.code != 0 || !strings.Contains(r.stdout, "host laptop kicked from") || !strings.Contains(r.stdout, "banned until") {
		t.Fatalf("admin kick: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	waitStatus(t, relay+"/hosts/laptop/", client, 503)
	r = run(t, env, "admin", "tunnels", "--relay", relay, "--json")
	if r.code != 0 || !strings.Contains(r.stdout, `"tunnels":[]`) {
		t.Fatalf("tunnels after a kick with a ban: %s%s", r.stdout, r.stderr)
	}

	r = run(t, env, "admin", "revoke", "--relay", relay, "--sub", "client", "--for", "1h")
	if r.code != 0 || !strings.Contains(r.stdout, "revoked sub client until") {
		t.Fatalf("admin revoke: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if code, _ := get(relay+"/hosts/laptop/", client); code != 401 {
		t.Fatalf("revoked client token: %d, want 401", code)
	}
	if r = run(t, env, "admin", "revoke", "--relay", relay, "--sub", "x"); r.code != 2 || !strings.Contains(r.stderr, "--until or --for") {
		t.Fatalf("revoke without a time: exit %d %s", r.code, r.stderr)
	}

	// Refusals carry the relay's code and message; an unreachable relay says so.
	r = run(t, nil, "admin", "replicas", "--relay", relay, "--token", mint(t, "client", "--sub", "c2", "--hosts", "*"))
	if r.code != 1 || !strings.Contains(r.stderr, "403 admin_required") || !strings.Contains(r.stderr, "admin token") {
		t.Fatalf("client token: exit %d %s", r.code, r.stderr)
	}
	r = run(t, nil, "admin", "replicas", "--relay", relay, "--token", "junk")
	if r.code != 1 || !strings.Contains(r.stderr, "401 unauthorized") {
		t.Fatalf("junk token: exit %d %s", r.code, r.stderr)
	}
	if r = run(t, withSecret, "serve", "--min-agent-version", "one"); r.code != 2 || !strings.Contains(r.stderr, "--min-agent-version") {
		t.Fatalf("serve with a bad --min-agent-version: exit %d %s", r.code, r.stderr)
	}
	if r = run(t, nil, "admin", "replicas", "--relay", relay); r.code != 2 || !strings.Contains(r.stderr, "SWITCHBOARD_TOKEN") {
		t.Fatalf("no token: exit %d %s", r.code, r.stderr)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0") // held, never served: connections are refused once closed below
	if err != nil {
		t.Fatal(err)
	}
	dead := "http://" + ln.Addr().String()
	_ = ln.Close()
	if r = run(t, env, "admin", "replicas", "--relay", dead); r.code != 1 || !strings.Contains(r.stderr, "relay unreachable at") {
		t.Fatalf("unreachable relay: exit %d %s", r.code, r.stderr)
	}

	r = run(t, env, "admin", "drain", "--relay", relay, "self")
	if r.code != 0 || !strings.Contains(r.stdout, "is draining (it stays up)") {
		t.Fatalf("admin drain: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	waitStatus(t, relay+"/readyz", "", 503)
	p.waitOutput(t, "drained on an admin's request; staying up")
	if code, _ := get(relay+"/healthz", ""); code != 200 {
		t.Fatalf("drained relay stopped serving /healthz: %d", code)
	}
	for _, action := range []string{`"action":"kick"`, `"action":"revoke"`, `"action":"drain"`, `"admin_subject":"ops"`} {
		if !strings.Contains(p.output(), action) {
			t.Fatalf("relay log lacks %s", action)
		}
	}
}
