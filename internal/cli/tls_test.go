package cli_test

import (
	"bufio"
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	be "encoding/binary"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/switchboard-relay/switchboard/internal/relaytest"
)

// startRelayMetricsReady runs `serve` on fresh sockets (main, metrics, then any more) with args and waits until
// its metrics listener says healthy: the main listener may speak TLS or want a PROXY header.
func startRelayMetricsReady(t *testing.T, env []string, n int, args ...string) (*proc, sockets) {
	t.Helper()
	s := listenSockets(t, n)
	p := startFiles(t, env, s.files, append([]string{"serve", "--listen", "fd:3", "--metrics-listen", "fd:4"}, args...)...)
	s.release()
	waitStatus(t, "http://"+s.addrs[1]+"/healthz", "", 200)
	return p, s
}

// seenHeaders is an upstream that reports the forwarding headers of each request it gets.
func seenHeaders(t *testing.T) (string, <-chan http.Header) {
	t.Helper()
	ch := make(chan http.Header, 16)
	up := upstream(t, func(w http.ResponseWriter, r *http.Request) {
		select {
		case ch <- r.Header.Clone():
		default:
		}
		_, _ = w.Write([]byte("ok"))
	})
	return up, ch
}

// TestServeTLS: with --tls-cert the main listener speaks TLS with ALPN http/1.1 only; a host connects over https
// (its tunnel is an upgrade through TLS) and learns X-Forwarded-Proto: https; a renewed certificate written over
// the files is served without a restart.
func TestServeTLS(t *testing.T) {
	dir := t.TempDir()
	pki := relaytest.NewInternalPKI(t)
	certFile, keyFile, caFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key"), filepath.Join(dir, "ca.pem")
	next := relaytest.NewInternalPKI(t)
	for name, b := range map[string][]byte{certFile: pki.CertPEM, keyFile: pki.KeyPEM, caFile: append(append([]byte{}, pki.CAPEM...), next.CAPEM...)} {
		if err := os.WriteFile(name, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	_, s := startRelayMetricsReady(t, withSecret, 2, "--tls-cert", certFile, "--tls-key", keyFile)
	addr := s.addrs[0]
	up, seen := seenHeaders(t)
	// The agent trusts the relay's CA the way any Go program does: SSL_CERT_FILE.
	start(t, []string{"SSL_CERT_FILE=" + caFile}, "host", "--relay", "https://"+addr, "--id", "h1",
		"--token", mint(t, "host", "--id", "h1"), "--upstream", up)

	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pki.CAPEM)
	pool.AppendCertsFromPEM(next.CAPEM)
	hc := &http.Client{Timeout: 15 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool}, ForceAttemptHTTP2: true}}
	defer hc.CloseIdleConnections()
	tok := mint(t, "client", "--hosts", "h1")
	var resp *http.Response
	waitFor(t, "the host through https", func() bool {
		req, _ := http.NewRequest("GET", "https://"+addr+"/hosts/h1/", nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		var err error
		if resp, err = hc.Do(req); err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
	if resp.Proto != "HTTP/1.1" || resp.TLS == nil || resp.TLS.NegotiatedProtocol != "http/1.1" {
		t.Fatalf("proto %s, ALPN %q: want HTTP/1.1 over TLS with ALPN http/1.1", resp.Proto, resp.TLS.NegotiatedProtocol)
	}
	if h := <-seen; h.Get("X-Forwarded-Proto") != "https" {
		t.Fatalf("host saw X-Forwarded-Proto %q", h.Get("X-Forwarded-Proto"))
	}
	// The certificate's expiry is exported for alerting (deploy/prometheus/alerts.yml).
	block, _ := pem.Decode(pki.CertPEM)
	first, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	_, m := get("http://"+s.addrs[1]+"/metrics", "")
	if got, ok := gaugeValue(m, `switchboard_tls_cert_expiry_timestamp_seconds{listener="main"}`); !ok || got != float64(first.NotAfter.Unix()) {
		t.Fatalf("certificate expiry metric %v (found %v), want %d:\n%s", got, ok, first.NotAfter.Unix(), m)
	}

	// Renewal: new files, same paths (written to the side and renamed in, as certbot's deploy hooks do).
	leaf := func() []byte {
		c, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"})
		if err != nil {
			return nil
		}
		defer c.Close()
		return c.ConnectionState().PeerCertificates[0].Raw
	}
	for name, b := range map[string][]byte{certFile: next.CertPEM, keyFile: next.KeyPEM} {
		if err := os.WriteFile(name+".new", b, 0o600); err != nil {
			t.Fatal(err)
		}
		later := time.Now().Add(time.Minute) // a distinct modification time even on a coarse clock
		if err := os.Chtimes(name+".new", later, later); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(name+".new", name); err != nil {
			t.Fatal(err)
		}
	}
	nextBlock, _ := pem.Decode(next.CertPEM)
	waitFor(t, "the renewed certificate", func() bool { return bytes.Equal(leaf(), nextBlock.Bytes) })
}

// gaugeValue finds the sample named series (name and labels exactly as exposed) in Prometheus text.
func gaugeValue(text, series string) (float64, bool) {
	for line := range strings.Lines(text) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), series+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			return f, err == nil
		}
	}
	return 0, false
}

// proxyV2 is a PROXY v2 header for a TCP4 client, with PP2_TYPE_SSL saying the client used TLS when tls is set.
func proxyV2(src string, sport uint16, tls bool) []byte {
	b := []byte("\r\n\r\n\x00\r\nQUIT\n\x21\x11")
	payload := append(net.ParseIP(src).To4(), 127, 0, 0, 1)
	payload = be.BigEndian.AppendUint16(payload, sport)
	payload = be.BigEndian.AppendUint16(payload, 443)
	if tls {
		payload = append(payload, 0x20, 0, 5, 0x01, 0, 0, 0, 0)
	}
	b = be.BigEndian.AppendUint16(b, uint16(len(payload)))
	return append(b, payload...)
}

// rawGet sends header (a PROXY header, or nothing) and a GET on a fresh connection to addr, and returns the
// status; 0 if the connection was closed first.
func rawGet(t *testing.T, addr string, header []byte, path, token string) int {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	req := fmt.Sprintf("GET %s HTTP/1.1\r\nHost: relay.example\r\nAuthorization: Bearer %s\r\nX-Forwarded-For: 6.6.6.6\r\nConnection: close\r\n\r\n", path, token)
	if _, err := c.Write(append(header, req...)); err != nil {
		return 0
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return 0
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// front is a stand-in L4 balancer on loopback: every connection it accepts is carried to backend after header.
// Its goroutines end in t.Cleanup.
func front(t *testing.T, backend string, header []byte) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	track := func(c net.Conn) {
		mu.Lock()
		conns = append(conns, c)
		mu.Unlock()
	}
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			b, err := net.Dial("tcp", backend)
			if err != nil {
				c.Close()
				continue
			}
			track(c)
			track(b)
			_, _ = b.Write(header)
			wg.Go(func() { _, _ = io.Copy(b, c); _ = b.(*net.TCPConn).CloseWrite() })
			wg.Go(func() { _, _ = io.Copy(c, b); _ = c.(*net.TCPConn).CloseWrite() })
		}
	})
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return ln.Addr().String()
}

// TestServeProxyProtocol: behind --proxy-protocol, the client address of a trusted balancer's header (v1 or v2) is
// the address the relay logs and hosts see in X-Forwarded-For (a client's own X-Forwarded-For is not trusted), and
// a v2 header's TLS information makes X-Forwarded-Proto https. A connection without a header is refused, and a
// relay that trusts another network refuses even a valid header from loopback.
func TestServeProxyProtocol(t *testing.T) {
	p, s := startRelayMetricsReady(t, withSecret, 2, "--proxy-protocol", "--proxy-protocol-from", "10.0.0.0/8,127.0.0.1")
	addr := s.addrs[0]
	up, seen := seenHeaders(t)
	hostFront := front(t, addr, []byte("PROXY TCP4 198.51.100.2 127.0.0.1 40000 443\r\n"))
	start(t, nil, "host", "--relay", "http://"+hostFront, "--id", "h1", "--token", mint(t, "host", "--id", "h1"), "--upstream", up)
	p.waitOutput(t, `"msg":"tunnel up","host_id":"h1"`)
	if !strings.Contains(p.output(), `"remote":"198.51.100.2"`) {
		t.Fatalf("the relay did not log the host's address from the PROXY header:\n%s", p.output())
	}
	tok := mint(t, "client", "--hosts", "h1")
	for _, tc := range []struct {
		header []byte
		proto  string
		xff    string
	}{
		{[]byte("PROXY TCP4 203.0.113.9 127.0.0.1 50000 80\r\n"), "http", "203.0.113.9"},
		{proxyV2("203.0.113.10", 50001, false), "http", "203.0.113.10"},
		{proxyV2("203.0.113.11", 50002, true), "https", "203.0.113.11"},
	} {
		if code := rawGet(t, addr, tc.header, "/hosts/h1/", tok); code != 200 {
			t.Fatalf("through a header for %s: status %d", tc.xff, code)
		}
		h := <-seen
		if h.Get("X-Forwarded-For") != tc.xff || h.Get("X-Forwarded-Proto") != tc.proto {
			t.Fatalf("host saw X-Forwarded-For %q, X-Forwarded-Proto %q; want %q, %q",
				h.Get("X-Forwarded-For"), h.Get("X-Forwarded-Proto"), tc.xff, tc.proto)
		}
	}
	if code := rawGet(t, addr, nil, "/healthz", ""); code != 0 {
		t.Fatalf("no PROXY header: status %d, want the connection closed", code)
	}
	if code := rawGet(t, addr, []byte("PROXY TCP4 1.2.3.4 5.6.7.8 99999 1\r\n"), "/healthz", ""); code != 0 {
		t.Fatalf("bad PROXY header: status %d, want the connection closed", code)
	}

	_, s2 := startRelayMetricsReady(t, withSecret, 2, "--proxy-protocol", "--proxy-protocol-from", "10.0.0.0/8")
	if code := rawGet(t, s2.addrs[0], proxyV2("203.0.113.9", 1, false), "/healthz", ""); code != 0 {
		t.Fatalf("header from an untrusted network: status %d, want the connection closed", code)
	}
	_, m := get("http://"+s2.addrs[1]+"/metrics", "")
	if !strings.Contains(m, `switchboard_proxy_protocol_refused_total{reason="untrusted"} 1`) {
		t.Fatalf("refusal not counted:\n%s", m)
	}
}

// TestServeACME: with --acme-domain, a certificate in --acme-cache (as autocert stores what the CA issued) is served
// for that name and the --tls-cert file for any other; --acme-http-listen answers HTTP-01 challenges for the
// configured names only and redirects everything else to https. No ACME CA is reachable here (the directory URL
// points at a closed loopback port), so issuance itself is not exercised.
func TestServeACME(t *testing.T) {
	dir := t.TempDir()
	cache := filepath.Join(dir, "acme")
	if err := os.Mkdir(cache, 0o700); err != nil {
		t.Fatal(err)
	}
	issued := relaytest.NewInternalPKI(t) // stands for the CA's certificate; autocert checks names and dates, not roots
	acmeCert := selfSignedFor(t, "relay.test")
	if err := os.WriteFile(filepath.Join(cache, "relay.test"), acmeCert, 0o600); err != nil {
		t.Fatal(err)
	}
	certFile, keyFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	_ = os.WriteFile(certFile, issued.CertPEM, 0o600)
	_ = os.WriteFile(keyFile, issued.KeyPEM, 0o600)
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedURL := "https://" + closed.Addr().String() + "/directory"
	closed.Close()
	_, s := startRelayMetricsReady(t, withSecret, 3, "--acme-domain", "relay.test", "--acme-cache", cache,
		"--acme-directory-url", closedURL, "--acme-http-listen", "fd:5", "--tls-cert", certFile, "--tls-key", keyFile)

	subject := func(name string) string {
		c, err := tls.Dial("tcp", s.addrs[0], &tls.Config{ServerName: name, InsecureSkipVerify: true, NextProtos: []string{"http/1.1"}})
		if err != nil {
			return "error: " + err.Error()
		}
		defer c.Close()
		return c.ConnectionState().PeerCertificates[0].Subject.CommonName
	}
	if got := subject("relay.test"); got != "relay.test" {
		t.Fatalf("relay.test: served %q, want the cached ACME certificate", got)
	}
	if got := subject("other.example"); got != "replica" {
		t.Fatalf("other.example: served %q, want the --tls-cert certificate", got)
	}

	noRedirect := &http.Client{Timeout: 15 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	ask := func(host, path string) *http.Response {
		req, _ := http.NewRequest("GET", "http://"+s.addrs[2]+path, nil)
		req.Host = host
		resp, err := noRedirect.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	if r := ask("relay.test", "/.well-known/acme-challenge/unknown-token"); r.StatusCode != 404 {
		t.Fatalf("challenge for a configured name without a pending token: %d, want 404", r.StatusCode)
	}
	if r := ask("evil.example", "/.well-known/acme-challenge/unknown-token"); r.StatusCode != 403 {
		t.Fatalf("challenge for a name not configured: %d, want 403", r.StatusCode)
	}
	if r := ask("relay.test", "/hosts/h1/x?y=1"); r.StatusCode != 302 || r.Header.Get("Location") != "https://relay.test/hosts/h1/x?y=1" {
		t.Fatalf("plain http: %d → %q, want a redirect to https", r.StatusCode, r.Header.Get("Location"))
	}
}

// selfSignedFor is an autocert cache entry for name: the EC private key, then a self-signed certificate for it.
func selfSignedFor(t *testing.T, name string) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: name}, DNSNames: []string{name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(90 * 24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return append(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}),
		pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})...)
}

// TestServeProxyProtocolConnCaps: the per-address connection cap counts the client addresses PROXY headers name,
// not the balancer's: with --max-conns-per-ip 1, a second client behind the same balancer is served while the
// first holds its connection, and a second connection from the first client is closed.
func TestServeProxyProtocolConnCaps(t *testing.T) {
	_, s := startRelayMetricsReady(t, withSecret, 2, "--proxy-protocol", "--proxy-protocol-from", "127.0.0.1",
		"--max-conns-per-ip", "1")
	addr := s.addrs[0]
	held, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	if _, err := held.Write(proxyV2("198.51.100.1", 1000, false)); err != nil {
		t.Fatal(err)
	}
	// The held connection is accepted (and counted) once a request on it is answered.
	if _, err := held.Write([]byte("GET /healthz HTTP/1.1\r\nHost: relay\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	if resp, err := http.ReadResponse(bufio.NewReader(held), nil); err != nil || resp.StatusCode != 200 {
		t.Fatalf("held connection: %v %v", resp, err)
	}
	if code := rawGet(t, addr, proxyV2("198.51.100.2", 1001, false), "/healthz", ""); code != 200 {
		t.Fatalf("another client behind the same balancer: status %d", code)
	}
	if code := rawGet(t, addr, proxyV2("198.51.100.1", 1002, false), "/healthz", ""); code != 0 {
		t.Fatalf("a second connection from a client at its cap: status %d, want the connection closed", code)
	}
}
