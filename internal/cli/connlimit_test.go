package cli_test

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestServeConnectionCaps: one address opening 50 idle connections against --max-conns-per-ip 20 gets the ones
// beyond its cap closed at accept, with a few rate-limited warnings rather than one per connection; meanwhile
// /healthz answers on the metrics listener and, from another address, on the relay listener.
func TestServeConnectionCaps(t *testing.T) {
	const perIP, flood = 20, 50
	p, addr, metrics := startRelay(t, withSecret, "--max-conns-per-ip", strconv.Itoa(perIP))
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.1")}, Timeout: 10 * time.Second}
	for range flood {
		c, err := d.Dial("tcp", addr)
		if errors.Is(err, syscall.ECONNRESET) {
			continue // refused so fast that the dial saw it
		}
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Close() })
	}
	open := regexp.MustCompile(`(?m)^switchboard_connections_open (\d+)$`)
	refused := regexp.MustCompile(`(?m)^switchboard_connections_refused_total\{reason="per_ip"\} (\d+)$`)
	waitFor(t, "the flood to reach the cap", func() bool {
		_, body := get("http://"+metrics+"/metrics", "")
		o, r := open.FindStringSubmatch(body), refused.FindStringSubmatch(body)
		if o == nil || r == nil {
			return false
		}
		nr, _ := strconv.Atoi(r[1])
		return o[1] == strconv.Itoa(perIP) && nr >= flood-perIP
	})
	if code, _ := get("http://"+metrics+"/healthz", ""); code != 200 {
		t.Fatalf("/healthz on the metrics listener: %d", code)
	}
	other := &http.Client{Transport: &http.Transport{DialContext: (&net.Dialer{
		LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.2")}}).DialContext}, Timeout: 20 * time.Second}
	defer other.CloseIdleConnections()
	req, _ := http.NewRequestWithContext(context.Background(), "GET", "http://"+addr+"/healthz", nil)
	resp, err := other.Do(req)
	if err != nil {
		t.Fatalf("/healthz from another address: %v", err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("/healthz from another address: %d", resp.StatusCode)
	}
	var warns int
	sc := bufio.NewScanner(strings.NewReader(p.output()))
	for sc.Scan() {
		if strings.Contains(sc.Text(), `"level":"WARN"`) && strings.Contains(sc.Text(), "connection refused at a cap") {
			warns++
		}
	}
	if warns == 0 || warns >= flood-perIP {
		t.Fatalf("%d warnings for %d refused connections; want a few, rate-limited:\n%s", warns, flood-perIP, p.output())
	}
	if !strings.Contains(p.output(), `"open_files_limit"`) {
		t.Fatalf("the open-file limit is not logged:\n%s", p.output())
	}
}
