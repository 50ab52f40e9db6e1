package relay_test

import (
	"net/http"
	"testing"

	"github.com/switchboard-relay/switchboard/internal/relaytest"
)

// TestUnready: Unready turns /readyz to 503 on both listeners while exchanges and new tunnels still work (the
// lame-duck period before a drain).
func TestUnready(t *testing.T) {
	r := relaytest.StartRelay(t, nil)
	ok := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok")) })
	relaytest.StartHost(t, r.URL, "before", ok, nil)
	r.Unready()
	for _, u := range []string{r.URL, r.MetricsURL} {
		resp := relaytest.Do(t, "GET", u+"/readyz", "")
		resp.Body.Close()
		if resp.StatusCode != http.StatusServiceUnavailable {
			t.Fatalf("%s/readyz: %d after Unready", u, resp.StatusCode)
		}
	}
	relaytest.StartHost(t, r.URL, "after", ok, nil) // fails the test unless the tunnel comes up
	for _, h := range []string{"before", "after"} {
		resp := relaytest.Do(t, "GET", r.URL+"/hosts/"+h+"/", relaytest.ClientToken(t, "c", h))
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("host %s: %d while unready", h, resp.StatusCode)
		}
	}
}
