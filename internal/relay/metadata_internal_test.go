package relay

import (
	"net/http"
	"testing"

	"github.com/switchboard-relay/switchboard/internal/tunnel"
)

// TestMetadataFromCleansWhatAgentsSend: whatever an agent (ours or not) sends in its handshake, the metadata the
// presence API shows is visible text within its bounds.
func TestMetadataFromCleansWhatAgentsSend(t *testing.T) {
	h := http.Header{}
	h.Set(tunnel.HeaderHostName, "admin\u202e\u2066 panel")
	h.Set(tunnel.HeaderHostOS, "linux\u200b")
	h.Add(tunnel.HeaderHostLabel, "\u200b=hidden key")
	h.Add(tunnel.HeaderHostLabel, "env=prod\u200f")
	m := metadataFrom(h)
	if m.Name != "admin panel" || m.OS != "linux" {
		t.Fatalf("name %q, os %q", m.Name, m.OS)
	}
	if len(m.Labels) != 1 || m.Labels["env"] != "prod" {
		t.Fatalf("labels %q", m.Labels)
	}
}
