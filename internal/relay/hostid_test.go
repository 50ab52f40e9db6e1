package relay_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"testing"

	"github.com/switchboard-relay/switchboard/internal/relay"
	"github.com/switchboard-relay/switchboard/internal/relaytest"
)

// invisibleIDs are host ids that print like another id, or like nothing: every place an id enters refuses them.
var invisibleIDs = map[string]string{
	"zero width space":       "org:\u200bm",
	"right-to-left":          "org:\u202eenihcam",
	"left-to-right isolate":  "org:\u2066m",
	"byte order mark":        "\ufefforg:m",
	"soft hyphen":            "org:\u00adm",
	"no-break space":         "org:\u00a0m",
	"ideographic space":      "org:\u3000m",
	"line separator":         "org:\u2028m",
	"hangul filler":          "org:\u3164",
	"variation selector":     "org:m\ufe0f",
	"tag character":          "org:m\U000e0041",
	"private use":            "org:\ue000",
	"replacement":            "org:\ufffd",
	"braille blank":          "org:\u2800",
	"leading combining mark": "\u0301org:m",
}

// TestInvisibleHostIDsRefused: a host id with format (bidi, zero width), space, separator, ignorable or private-use
// characters is refused with 400 invalid_host_id by tunnel registration, /hosts/{id}/, /v1/hosts/{id} and
// /v1/hosts?ids=, while a host with a plain id on the same relay keeps being served.
func TestInvisibleHostIDsRefused(t *testing.T) {
	r := relaytest.StartRelay(t, func(c *relay.Config) { c.AuthFailBurst = 1000 }) // every refused id is a failed upgrade
	relaytest.StartHost(t, r.URL, "org:m", echoPath, nil)
	tok := relaytest.ClientToken(t, "c", "*")
	for name, id := range invisibleIDs {
		t.Run(name, func(t *testing.T) {
			if status, code := tunnelAttempt(t, r.URL, id, relaytest.HostToken(t, id)); status != 400 || code != "invalid_host_id" {
				t.Errorf("tunnel registration: %d %q, want 400 invalid_host_id", status, code)
			}
			esc := url.PathEscape(id)
			for _, path := range []string{"/hosts/" + esc + "/x", "/v1/hosts/" + esc, "/v1/hosts?ids=org:m," + url.QueryEscape(id)} {
				if status, code := apiError(t, r.URL+path, tok); status != 400 || code != "invalid_host_id" {
					t.Errorf("GET %s: %d %q, want 400 invalid_host_id", path, status, code)
				}
			}
			resp := relaytest.Do(t, "GET", r.URL+"/hosts/org:m/ok", tok)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Errorf("the plain host meanwhile: %d, want 200", resp.StatusCode)
			}
		})
	}
}

// apiError is the status and error code of a GET with a client token.
func apiError(t *testing.T, u, tok string) (int, string) {
	t.Helper()
	resp := relaytest.Do(t, "GET", u, tok)
	defer resp.Body.Close()
	var body struct {
		Error struct{ Code string } `json:"error"`
	}
	b, _ := io.ReadAll(resp.Body)
	_ = json.Unmarshal(b, &body)
	return resp.StatusCode, body.Error.Code
}
