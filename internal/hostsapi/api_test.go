package hostsapi

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/switchboard-relay/switchboard/internal/auth"
	"github.com/switchboard-relay/switchboard/internal/directory"
	"github.com/switchboard-relay/switchboard/internal/presence"
)

// plainSealer "seals" a position by tagging it: enough for the API, which only hands positions out and back.
type plainSealer struct{ tag string }

func (p plainSealer) Seal(pos string) string       { return p.tag + pos }
func (p plainSealer) SealRandom(pos string) string { return p.tag + pos }
func (p plainSealer) Open(v string) (string, error) {
	pos, ok := strings.CutPrefix(v, p.tag)
	if !ok {
		return "", errors.New("not sealed here")
	}
	return pos, nil
}

// fakeRelay is a relay in path mode on http://relay, stopping when told.
type fakeRelay struct{ stopping bool }

func (fakeRelay) HostURLs(r *http.Request, id string) (string, string) {
	return "", "http://relay/hosts/" + id + "/"
}
func (f fakeRelay) Stopping() bool { return f.stopping }
func (fakeRelay) Hold(ctx context.Context, c auth.Claims) (context.Context, func()) {
	return ctx, func() {}
}

var secret = []byte("hostsapi test secret of some length")

// startAPI serves an API over a memory directory that knows hosts a:1 and b:1, and returns its URL.
func startAPI(t *testing.T, relay Relay) string {
	t.Helper()
	dir := directory.NewMemory()
	t.Cleanup(func() { _ = dir.Close() })
	for _, id := range []string{"a:1", "b:1"} {
		if _, _, err := dir.Claim(context.Background(), id, "r1", directory.Metadata{Name: id}); err != nil {
			t.Fatal(err)
		}
	}
	log := presence.NewMemory(presence.MemoryConfig{})
	api, err := New(Config{Verifier: auth.NewHS256(secret), Directory: dir, Lister: dir,
		Events: presence.NewFanout(log, 0), Cursors: plainSealer{"c."}, EventIDs: plainSealer{"e."}, Relay: relay})
	if err != nil {
		t.Fatal(err)
	}
	m := http.NewServeMux()
	api.Route(m)
	srv := httptest.NewServer(m)
	t.Cleanup(srv.Close)
	return srv.URL
}

func get(t *testing.T, u, tok string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, u, nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestScopeWithoutRelay: on its interfaces alone, the API answers a host outside the token's scope exactly like an
// unknown one, and its batch and listing hold only hosts in scope.
func TestScopeWithoutRelay(t *testing.T) {
	base := startAPI(t, fakeRelay{})
	tok, err := auth.MintClient(secret, "alice", []string{"a:*"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	status, body := get(t, base+"/v1/hosts/a:1", tok)
	var v hostView
	if err := json.Unmarshal([]byte(body), &v); status != 200 || err != nil || v.ID != "a:1" || !v.Online ||
		v.URL != "http://relay/hosts/a:1/" {
		t.Fatalf("in scope: %d %s", status, body)
	}
	outside, outsideBody := get(t, base+"/v1/hosts/b:1", tok)
	unknown, unknownBody := get(t, base+"/v1/hosts/a:9", tok)
	if outside != http.StatusNotFound || outside != unknown || outsideBody != unknownBody {
		t.Fatalf("outside scope %d %s; unknown %d %s", outside, outsideBody, unknown, unknownBody)
	}
	for _, q := range []string{"?ids=a:1,b:1", ""} {
		status, body := get(t, base+"/v1/hosts"+q, tok)
		if status != 200 || !strings.Contains(body, `"id":"a:1"`) || strings.Contains(body, "b:1") {
			t.Errorf("GET /v1/hosts%s: %d %s", q, status, body)
		}
	}
	if status, body := get(t, base+"/v1/hosts?cursor=x.b:1", tok); status != http.StatusBadRequest ||
		!strings.Contains(body, `"invalid_cursor"`) {
		t.Errorf("foreign cursor: %d %s", status, body)
	}
}

// TestEventsRefusedWhileStopping: a relay that is stopping opens no event stream, and says where to go.
func TestEventsRefusedWhileStopping(t *testing.T) {
	base := startAPI(t, fakeRelay{stopping: true})
	tok, err := auth.MintClient(secret, "alice", []string{"*"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if status, body := get(t, base+"/v1/presence/events", tok); status != http.StatusServiceUnavailable ||
		!strings.Contains(body, `"draining"`) {
		t.Fatalf("%d %s", status, body)
	}
}
