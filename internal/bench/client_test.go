package bench

import (
	"io"
	"net/http"
	"testing"
)

// The two benchmarks below justify the lean client: one keep-alive GET of /small against the in-process origin,
// with the lean client and with net/http's Transport. Run with -benchmem; CPU per request is what the generator
// takes away from the system under test on a 2-core machine.

func BenchmarkLeanClient(b *testing.B) {
	o, err := startLocalOrigin()
	if err != nil {
		b.Fatal(err)
	}
	defer o.Close()
	c, err := dialConn(b.Context(), o.Addr)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	req := buildGET(o.Addr, "/small", "")
	b.ReportAllocs()
	for b.Loop() {
		if st, _, err := c.do(req); err != nil || st != 200 {
			b.Fatalf("status %d: %v", st, err)
		}
	}
}

func BenchmarkTransportClient(b *testing.B) {
	o, err := startLocalOrigin()
	if err != nil {
		b.Fatal(err)
	}
	defer o.Close()
	tr := &http.Transport{MaxConnsPerHost: 1, MaxIdleConnsPerHost: 1}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr}
	url := "http://" + o.Addr + "/small"
	b.ReportAllocs()
	for b.Loop() {
		resp, err := client.Get(url)
		if err != nil {
			b.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			b.Fatalf("status %d", resp.StatusCode)
		}
	}
}
