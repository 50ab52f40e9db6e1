package hostsapi

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"testing"

	"github.com/switchboard-relay/switchboard/internal/auth"
	"github.com/switchboard-relay/switchboard/internal/directory"
	"github.com/switchboard-relay/switchboard/internal/presence"
	"github.com/switchboard-relay/switchboard/internal/reply"
	"github.com/switchboard-relay/switchboard/internal/tunnel"
)

// FuzzParseListQuery feeds arbitrary query strings, as a client could send them to GET /v1/hosts, to
// ParseListQuery, and a position sealed as a cursor. It must never panic. What it accepts keeps the documented
// bounds (limit 1-1000, default 100; at most 16 label filters, each key=value with a key; online true or false)
// and says what the query said; a cursor this API sealed opens to the position sealed, if the position is a host
// id. What it refuses is a 400 with one of the package's client error codes and a short fixed message (at most 64
// bytes), so nothing of the query is echoed.
func FuzzParseListQuery(f *testing.F) {
	for _, s := range []struct{ query, pos string }{
		{"", ""},
		{"online=true&label=env=dev&label=team=a&prefix=org:&limit=50", "org:laptop"},
		{"online=false&limit=1000", "a:1"},
		{"online=yes", ""},
		{"limit=0", ""},
		{"limit=1001", ""},
		{"limit=+7&limit=9", ""},
		{"limit=99999999999999999999", ""},
		{"limit=" + strings.Repeat("9", 100), ""},
		{"online=" + strings.Repeat("x", 100), ""},
		{"label=noequals", ""},
		{"label==v", ""},
		{"label=k==v=", ""},
		{strings.Repeat("label=k=v&", 17), ""},
		{"cursor=c.a:1", ""},
		{"cursor=forged", ""},
		{"cursor=c.", ""},
		{"cursor=c.bad/id", "bad/id"},
		{"prefix=%zz&online=true", ""},
		{"a;b=c&limit=5", "x\x00y"},
		{"prefix=" + strings.Repeat("p", tunnel.MaxHostIDLen), ""},
		{"prefix=" + strings.Repeat("p", tunnel.MaxHostIDLen+1), ""},
		{"label=" + strings.Repeat("k", tunnel.MaxLabelKeyLen) + "=" + strings.Repeat("v", tunnel.MaxLabelValueLen), ""},
		{"label=" + strings.Repeat("k", tunnel.MaxLabelKeyLen+1) + "=v", ""},
		{"label=k=" + strings.Repeat("v", tunnel.MaxLabelValueLen+1), ""},
	} {
		f.Add(s.query, s.pos)
	}
	cursors := plainSealer{"c."}
	dir := directory.NewMemory()
	f.Cleanup(func() { _ = dir.Close() })
	api, err := New(Config{Verifier: auth.NewHS256(secret), Directory: dir, Lister: dir,
		Events: presence.NewFanout(presence.NewMemory(presence.MemoryConfig{}), 0), Cursors: cursors,
		EventIDs: plainSealer{"e."}, Relay: fakeRelay{}})
	if err != nil {
		f.Fatal(err)
	}
	parse := func(raw string) (ListQuery, bool, *httptest.ResponseRecorder, url.Values) {
		w := httptest.NewRecorder()
		r := &http.Request{Method: http.MethodGet, URL: &url.URL{Path: "/v1/hosts", RawQuery: raw}, Header: http.Header{}}
		lq, ok := api.ParseListQuery(w, r, tunnel.ValidHostID)
		return lq, ok, w, r.URL.Query()
	}
	f.Fuzz(func(t *testing.T, raw, pos string) {
		lq, ok, w, q := parse(raw)
		if !ok {
			refused(t, w, raw)
			return
		}
		if w.Body.Len() != 0 {
			t.Fatalf("accepted %q, yet answered %d %q", raw, w.Code, w.Body)
		}
		if lq.Limit < 1 || lq.Limit > MaxListLimit {
			t.Fatalf("%q: limit %d outside 1-%d", raw, lq.Limit, MaxListLimit)
		}
		if q.Get("limit") == "" && lq.Limit != listDefaultLimit {
			t.Fatalf("%q: limit %d without a limit, want %d", raw, lq.Limit, listDefaultLimit)
		}
		switch v := q.Get("online"); {
		case v == "" && lq.Filter.Online != nil, v != "" && (lq.Filter.Online == nil || *lq.Filter.Online != (v == "true")):
			t.Fatalf("%q: online=%q read as %v", raw, v, lq.Filter.Online)
		}
		if len(lq.Filter.Labels) > 16 || len(lq.Filter.Labels) != len(q["label"]) {
			t.Fatalf("%q: %d label filters from %d", raw, len(lq.Filter.Labels), len(q["label"]))
		}
		for i, kv := range lq.Filter.Labels {
			if kv[0] == "" || kv[0]+"="+kv[1] != q["label"][i] || strings.Contains(kv[0], "=") ||
				len(kv[0]) > tunnel.MaxLabelKeyLen || len(kv[1]) > tunnel.MaxLabelValueLen {
				t.Fatalf("%q: label filter %q from %q", raw, kv, q["label"][i])
			}
		}
		if lq.Prefix != q.Get("prefix") || len(lq.Prefix) > tunnel.MaxHostIDLen {
			t.Fatalf("%q: prefix %q, query %q", raw, lq.Prefix, q.Get("prefix"))
		}
		if c := q.Get("cursor"); c == "" && lq.After != "" || c != "" && (!tunnel.ValidHostID(lq.After) || cursors.Seal(lq.After) != c) {
			t.Fatalf("%q: cursor %q opened to %q", raw, c, lq.After)
		}

		// A cursor sealed here, as a client hands it back: it opens to its position if that is a host id.
		sealed := "online=true&cursor=" + url.QueryEscape(cursors.Seal(pos))
		lq, ok, w, _ = parse(sealed)
		switch {
		case ok != tunnel.ValidHostID(pos):
			t.Fatalf("cursor of %q: accepted %v, a host id %v", pos, ok, tunnel.ValidHostID(pos))
		case ok && lq.After != pos:
			t.Fatalf("cursor of %q opened to %q", pos, lq.After)
		case !ok:
			refused(t, w, sealed)
		}
	})
}

// refused checks the answer to a query ParseListQuery refused: 400, one of the package's client error codes, and a
// short fixed message.
func refused(t *testing.T, w *httptest.ResponseRecorder, raw string) {
	t.Helper()
	var body struct {
		Error struct{ Code, Message string }
	}
	if w.Code != http.StatusBadRequest || json.Unmarshal(w.Body.Bytes(), &body) != nil {
		t.Fatalf("refused %q with %d %q, want a 400 error", raw, w.Code, w.Body)
	}
	if !slices.Contains([]string{reply.CodeBadRequest, reply.CodeInvalidCursor}, body.Error.Code) {
		t.Fatalf("refused %q with code %q", raw, body.Error.Code)
	}
	if len(body.Error.Message) > 64 {
		t.Fatalf("refused %q with a message of %d bytes: %q", raw, len(body.Error.Message), body.Error.Message)
	}
}
