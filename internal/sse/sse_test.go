package sse

import (
	"net/http/httptest"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestStream: the head, event blocks as appended, nothing written by a Flush with nothing pending.
func TestStream(t *testing.T) {
	rec := httptest.NewRecorder()
	stalled := prometheus.NewCounter(prometheus.CounterOpts{Name: "stalled"})
	st := Start(rec, time.Second, stalled)
	if got := rec.Header().Get("Content-Type"); got != "text/event-stream" {
		t.Fatalf("Content-Type %q", got)
	}
	st.Append("retry: 2000\n\n")
	st.Event("7", "online", []byte(`{"a":1}`))
	st.Event("", "snapshot", []byte(`{}`))
	if rec.Body.Len() != 0 {
		t.Fatalf("written before Flush: %q", rec.Body.String())
	}
	if err := st.Flush(); err != nil {
		t.Fatal(err)
	}
	want := "retry: 2000\n\nid: 7\nevent: online\ndata: {\"a\":1}\n\nevent: snapshot\ndata: {}\n\n"
	if got := rec.Body.String(); got != want {
		t.Fatalf("body %q, want %q", got, want)
	}
	if err := st.Flush(); err != nil || rec.Body.String() != want {
		t.Fatalf("empty Flush: %v, body %q", err, rec.Body.String())
	}
	if n := testutil.ToFloat64(stalled); n != 0 {
		t.Fatalf("stalled %v", n)
	}
}
