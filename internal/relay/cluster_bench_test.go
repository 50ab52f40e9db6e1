package relay_test

import (
	"io"
	"net/http"
	"testing"

	"github.com/switchboard-relay/switchboard/internal/directory"
	"github.com/switchboard-relay/switchboard/internal/relaytest"
)

// BenchmarkForwardedGET compares a small keep-alive GET served by the replica that holds the tunnel ("owner") with
// the same GET through another replica that forwards it ("forwarded"): the cost of one hop between replicas. Both
// replicas share one in-memory directory, so no Redis round trip is measured.
func BenchmarkForwardedGET(b *testing.B) {
	dir := directory.NewMemory()
	b.Cleanup(func() { _ = dir.Close() })
	owner := relaytest.StartRelayOn(b, dir, nil)
	other := relaytest.StartRelayOn(b, dir, nil)
	relaytest.StartHost(b, owner.URL, "h", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "hello")
	}), nil)
	tok := relaytest.ClientToken(b, "c", "h")
	for _, tc := range []struct {
		name string
		url  string
	}{{"owner", owner.URL}, {"forwarded", other.URL}} {
		b.Run(tc.name, func(b *testing.B) {
			c := newClient(b)
			req, err := http.NewRequest("GET", tc.url+"/hosts/h/small", nil)
			if err != nil {
				b.Fatal(err)
			}
			req.Header.Set("Authorization", "Bearer "+tok)
			b.ReportAllocs()
			for b.Loop() {
				resp, err := c.Do(req)
				if err != nil {
					b.Fatal(err)
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					b.Fatalf("status %d", resp.StatusCode)
				}
			}
		})
	}
}
