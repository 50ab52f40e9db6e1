package relay_test

import (
	"io"
	"net/http"
	"testing"

	"go.uber.org/goleak"

	"github.com/switchboard-relay/switchboard/internal/relaytest"
)

func TestMain(m *testing.M) {
	// Goroutines parked on a socket read (an idle keep-alive connection, a tunnel's reader) are the leak class a
	// relay has: none is ignored, and tests close the clients and connections they open.
	goleak.VerifyTestMain(closingBrowser{m},
		// rueidis closes connections replaced by a cluster topology refresh after a 5 s sleep, past Close.
		goleak.IgnoreAnyFunction("github.com/redis/rueidis.(*clusterClient)._refresh.func2"))
}

// closingBrowser runs the tests, then ends the package's Chromium (browser_test.go) before the leak check.
type closingBrowser struct{ m *testing.M }

func (c closingBrowser) Run() int {
	defer stopBrowser()
	return c.m.Run()
}

func TestProxySmoke(t *testing.T) {
	r := relaytest.StartRelay(t, nil)
	relaytest.StartUpstreamHost(t, r.URL, "org:m1", http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		_, _ = io.WriteString(w, "path="+req.URL.RequestURI()+" sub="+req.Header.Get("X-Switchboard-Subject"))
	}), nil)
	tok := relaytest.ClientToken(t, "alice", "org:*")
	resp := relaytest.Do(t, "GET", r.URL+"/hosts/org%3Am1/a/b?x=1&access_token="+tok, "")
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(body) != "path=/a/b?x=1 sub=alice" {
		t.Fatalf("got %d %q", resp.StatusCode, body)
	}
}
