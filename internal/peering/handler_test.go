package peering

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// fakeLocal records what the handler asked of it.
type fakeLocal struct {
	holds   string // the host it holds
	evicted string // "host from epoch" of the last notice taken
	refused error
	served  string // "forwarded subject" or "internal from"
}

func (f *fakeLocal) ServeForwarded(w http.ResponseWriter, r *http.Request, subject string) bool {
	if !strings.HasPrefix(r.URL.Path, "/hosts/") {
		return false
	}
	f.served = "forwarded " + subject
	return true
}

func (f *fakeLocal) Holds(hostID string) bool { return hostID != "" && hostID == f.holds }

func (f *fakeLocal) Evicted(hostID, from string, epoch uint64) bool {
	if hostID == "" {
		return false
	}
	f.evicted = hostID + " " + from + " " + strings.Repeat("I", int(epoch))
	return true
}

func (f *fakeLocal) ServeInternal(w http.ResponseWriter, r *http.Request, from string) bool {
	if r.URL.Path != "/internal/v1/admin/x" {
		return false
	}
	f.served = "internal " + from
	return true
}

func (f *fakeLocal) Refuse(w http.ResponseWriter, r *http.Request, err error) {
	f.refused = err
	w.WriteHeader(http.StatusTeapot)
}

// TestHandlerDispatch: only signed requests reach the replica; a forwarded exchange is asked for first, whatever
// its path; notices and questions are parsed and answered here; anything else is refused as no endpoint.
func TestHandlerDispatch(t *testing.T) {
	secret := []byte("secret")
	from, to := NewSigner("B", secret, 100), NewSigner("A", secret, 100)
	for _, tc := range []struct {
		name, method, target string
		signed               bool
		subject              string // the client the hop vouches for
		wantStatus           int
		wantRefused          error
		wantEvicted          string
		wantServed           string
	}{
		{"unsigned", "GET", "/hosts/h/x", false, "", http.StatusTeapot, ErrHopMalformed, "", ""},
		{"forwarded exchange", "GET", "/hosts/h/x", true, "", http.StatusOK, nil, "", "forwarded "},
		{"notice", "POST", EvictPath + "?host=h&epoch=3", true, "", http.StatusNoContent, nil, "h B III", ""},
		{"notice without epoch", "POST", EvictPath + "?host=h", true, "", http.StatusTeapot, ErrBadNotice, "", ""},
		{"notice without host", "POST", EvictPath + "?epoch=3", true, "", http.StatusTeapot, ErrBadNotice, "", ""},
		{"notice by GET", "GET", EvictPath + "?host=h&epoch=3", true, "", http.StatusTeapot, ErrNoEndpoint, "", ""},
		{"has: held", "GET", HasPath + "?host=held", true, "", http.StatusNoContent, nil, "", ""},
		{"has: not held", "GET", HasPath + "?host=h", true, "", http.StatusNotFound, nil, "", ""},
		{"another endpoint", "GET", "/internal/v1/admin/x", true, "", http.StatusOK, nil, "", "internal B"},
		{"no endpoint", "GET", "/internal/v1/nothing", true, "", http.StatusTeapot, ErrNoEndpoint, "", ""},
		// A hop made for a client's exchange reaches no replica endpoint, whatever its path.
		{"client hop to a notice", "POST", EvictPath + "?host=h&epoch=3", true, "alice", http.StatusTeapot, ErrNoEndpoint, "", ""},
		{"client hop to has", "GET", HasPath + "?host=held", true, "alice", http.StatusTeapot, ErrNoEndpoint, "", ""},
		{"client hop to another endpoint", "GET", "/internal/v1/admin/x", true, "alice", http.StatusTeapot, ErrNoEndpoint, "", ""},
		{"client hop forwarded", "GET", "/hosts/h/x", true, "alice", http.StatusOK, nil, "", "forwarded alice"},
	} {
		local := &fakeLocal{holds: "held"}
		out := httptest.NewRequest(tc.method, "http://a.internal"+tc.target, nil)
		if tc.signed {
			from.Sign(out, tc.subject)
		}
		in := httptest.NewRequest(tc.method, "http://a.internal"+tc.target, nil)
		in.Header, in.RequestURI = out.Header, out.URL.RequestURI() // as a server reads the request line
		rec := httptest.NewRecorder()
		Handler(to, local).ServeHTTP(rec, in)
		if rec.Code != tc.wantStatus || !errors.Is(local.refused, tc.wantRefused) || (tc.wantRefused == nil) != (local.refused == nil) ||
			local.evicted != tc.wantEvicted || local.served != tc.wantServed {
			t.Errorf("%s: status %d refused %v evicted %q served %q; want %d %v %q %q", tc.name, rec.Code, local.refused,
				local.evicted, local.served, tc.wantStatus, tc.wantRefused, tc.wantEvicted, tc.wantServed)
		}
	}
}
