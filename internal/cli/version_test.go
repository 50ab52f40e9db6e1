package cli_test

import (
	"encoding/json"
	"net/http"
	"regexp"
	"strings"
	"testing"
)

// TestVersionEverywhere: the version `switchboard version` prints is the agent_version a host reports and the
// version label of switchboard_build_info on the relay's metrics listener.
func TestVersionEverywhere(t *testing.T) {
	r := run(t, nil, "version")
	want := strings.TrimSpace(r.stdout)
	if r.code != 0 || want != testVersion {
		t.Fatalf("version: exit %d, %q", r.code, r.stdout)
	}
	up := upstream(t, func(w http.ResponseWriter, r *http.Request) {})
	_, addr, metrics := startRelay(t, withSecret)
	start(t, nil, "host", "--relay", "http://"+addr, "--id", "v1", "--token", mint(t, "host", "--id", "v1"), "--upstream", up)
	tok := mint(t, "client", "--hosts", "v1")
	waitStatus(t, "http://"+addr+"/hosts/v1/", tok, 200)
	_, body := get("http://"+addr+"/v1/hosts/v1", tok)
	var h struct {
		Metadata struct {
			AgentVersion string `json:"agent_version"`
		} `json:"metadata"`
	}
	if err := json.Unmarshal([]byte(body), &h); err != nil || h.Metadata.AgentVersion != want {
		t.Fatalf("agent_version %q (%v), want %q: %s", h.Metadata.AgentVersion, err, want, body)
	}
	_, m := get("http://"+metrics+"/metrics", "")
	line := regexp.MustCompile(`(?m)^switchboard_build_info\{goversion="go[^"]+",revision="[0-9a-f]*",version="([^"]*)"\} 1$`).FindStringSubmatch(m)
	if line == nil || line[1] != want {
		t.Fatalf("switchboard_build_info: %q, want version %q", line, want)
	}
}
