package relay_test

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/switchboard-relay/switchboard/internal/relaytest"
)

// TestClusterLeanForward covers what the lean forward (GET, HEAD, OPTIONS, TRACE without a body) must do as
// ReverseProxy did: drop a client's forged forwarding headers, carry trailers and HEAD answers, send a request again
// when its pooled connection was closed by the owner, cut the client's response when the owner's is cut, and end
// the host's exchange when the client goes.
func TestClusterLeanForward(t *testing.T) {
	a, b, _ := startPair(t, nil)
	part := make(chan struct{})
	hostGone := make(chan struct{}, 1)
	mux := http.NewServeMux()
	mux.HandleFunc("/get", seenHeaders)
	mux.HandleFunc("/trailers", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Trailer", "X-Sum")
		_, _ = io.WriteString(w, "body")
		w.Header().Set("X-Sum", "42")
	})
	mux.HandleFunc("/cut", func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "part")
		w.(http.Flusher).Flush()
		select {
		case <-part:
		case <-r.Context().Done():
		}
	})
	mux.HandleFunc("/stream", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(200)
		w.(http.Flusher).Flush()
		<-r.Context().Done()
		hostGone <- struct{}{}
	})
	relaytest.StartHost(t, a.URL, "h1", mux, nil)
	tok := relaytest.ClientToken(t, "alice", "h1")
	client := newClient(t)
	do := func(method, path string, hdr ...string) *http.Response {
		t.Helper()
		req, _ := http.NewRequest(method, b.URL+"/hosts/h1"+path, nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		for i := 0; i+1 < len(hdr); i += 2 {
			req.Header.Set(hdr[i], hdr[i+1])
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("%s %s via B: %v", method, path, err)
		}
		return resp
	}
	read := func(resp *http.Response) string { return readAll(t, resp) }

	resp := do("GET", "/get", "X-Forwarded-For", "6.6.6.6", "Forwarded", "for=6.6.6.6")
	if got, want := read(resp), `uri=/get sub=alice xff=127.0.0.1 auth="" hop="" hopsub=""`; got != want {
		t.Fatalf("GET via B: %q, want %q (a client's X-Forwarded-For must not pass)", got, want)
	}

	resp = do("GET", "/trailers")
	if body := read(resp); body != "body" || resp.Trailer.Get("X-Sum") != "42" {
		t.Fatalf("trailers via B: body %q, trailer %q", body, resp.Trailer.Get("X-Sum"))
	}
	resp = do("HEAD", "/trailers")
	if body := read(resp); resp.StatusCode != 200 || body != "" {
		t.Fatalf("HEAD via B: %d %q", resp.StatusCode, body)
	}

	// The owner closes the idle connections B pooled (an idle timeout, a restart): the next request still works.
	a.Internal.CloseClientConnections()
	for range 3 {
		if resp := do("GET", "/get"); resp.StatusCode != 200 {
			t.Fatalf("GET via B after the owner closed its connections: %d", resp.StatusCode)
		} else {
			read(resp)
		}
	}

	// The owner's answer is cut mid-body: the client's must be cut too, not end cleanly.
	resp = do("GET", "/cut")
	br := bufio.NewReader(resp.Body)
	if got := make([]byte, 4); func() bool { _, err := io.ReadFull(br, got); return err != nil || string(got) != "part" }() {
		t.Fatalf("first part of /cut: %q", got)
	}
	a.Internal.CloseClientConnections()
	_, err := io.ReadAll(br)
	resp.Body.Close()
	close(part)
	if err == nil {
		t.Fatal("a response cut between the replicas reached the client as complete")
	}
	if !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Logf("cut response: %v", err)
	}

	// The client goes: the host's exchange ends.
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "GET", b.URL+"/hosts/h1/stream", nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err = client.Do(req)
	if err != nil {
		t.Fatalf("stream via B: %v", err)
	}
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("stream head via B: %d %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	cancel()
	resp.Body.Close()
	select {
	case <-hostGone:
	case <-time.After(10 * time.Second):
		t.Fatal("the host's exchange went on after the client left")
	}
}

// TestForwardKeepsQuery: the host sees the query as the client wrote it, less the token, whichever replica the
// client reached and whichever forward carried it: served by the owner, forwarded lean (a bodiless GET) or through
// ReverseProxy (a POST), which on its own drops the parts of a query it cannot parse.
func TestForwardKeepsQuery(t *testing.T) {
	a, b, _ := startPair(t, nil)
	mux := http.NewServeMux()
	mux.HandleFunc("/q", func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		_, _ = io.WriteString(w, r.URL.RawQuery)
	})
	relaytest.StartHost(t, a.URL, "h1", mux, nil)
	tok := relaytest.ClientToken(t, "alice", "h1")
	client := newClient(t)
	const query = "a=1;b=2&c=%zz&d=x+y"
	for _, tc := range []struct{ name, base, method string }{
		{"owner GET", a.URL, "GET"},
		{"owner POST", a.URL, "POST"},
		{"forwarded GET (lean)", b.URL, "GET"},
		{"forwarded POST (ReverseProxy)", b.URL, "POST"},
	} {
		req, _ := http.NewRequest(tc.method, tc.base+"/hosts/h1/q?"+query+"&access_token="+tok, strings.NewReader("x"))
		if tc.method == "GET" {
			req.Body, req.ContentLength = nil, 0
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if got := readAll(t, resp); resp.StatusCode != 200 || got != query {
			t.Errorf("%s: %d, the host saw the query %q, want %q", tc.name, resp.StatusCode, got, query)
		}
	}
}
