package certfile

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// selfSigned returns PEM certificate and key for a self-signed certificate with common name cn.
func selfSigned(t *testing.T, cn string) (certPEM, keyPEM []byte) {
	t.Helper()
	return selfSignedUntil(t, cn, time.Now().Add(time.Hour))
}

// selfSignedUntil is selfSigned expiring at notAfter.
func selfSignedUntil(t *testing.T, cn string, notAfter time.Time) (certPEM, keyPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: cn}, DNSNames: []string{cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: notAfter,
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder})
}

// write writes b to path with modification time mod (file systems with coarse timestamps would otherwise hide a
// quick rewrite).
func write(t *testing.T, path string, b []byte, mod time.Time) {
	t.Helper()
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(path, mod, mod); err != nil {
		t.Fatal(err)
	}
}

// served is the common name of the certificate a TLS server using r presents, over a real connection.
func served(t *testing.T, r *Reloader) string {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{GetCertificate: r.GetCertificate})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	done := make(chan struct{})
	go func() {
		defer close(done)
		if c, err := ln.Accept(); err == nil {
			_ = c.(*tls.Conn).Handshake()
			c.Close()
		}
	}()
	c, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	cn := c.ConnectionState().PeerCertificates[0].Subject.CommonName
	c.Close()
	<-done
	return cn
}

// TestReload: a renewed pair is served on the next handshake without a restart; a half-written renewal (a key
// that does not match) keeps the previous certificate until the pair is whole again.
func TestReload(t *testing.T) {
	dir := t.TempDir()
	cp, kp := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	t0 := time.Now().Add(-time.Hour)
	c1, k1 := selfSigned(t, "first.example")
	write(t, cp, c1, t0)
	write(t, kp, k1, t0)
	r, err := New(cp, kp, nil)
	if err != nil {
		t.Fatal(err)
	}
	r.every = 0
	if cn := served(t, r); cn != "first.example" {
		t.Fatalf("served %q", cn)
	}
	c2, k2 := selfSigned(t, "second.example")
	write(t, cp, c2, t0.Add(time.Minute)) // the certificate first: the key does not match it yet
	if cn := served(t, r); cn != "first.example" {
		t.Fatalf("half-written renewal: served %q", cn)
	}
	write(t, kp, k2, t0.Add(time.Minute))
	if cn := served(t, r); cn != "second.example" {
		t.Fatalf("after renewal: served %q", cn)
	}
	if err := os.Remove(cp); err != nil {
		t.Fatal(err)
	}
	if cn := served(t, r); cn != "second.example" {
		t.Fatalf("certificate file gone: served %q", cn)
	}
}

// TestNotAfter: the expiry reported is the loaded certificate's, and a renewal shows in it without a handshake.
func TestNotAfter(t *testing.T) {
	dir := t.TempDir()
	cp, kp := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	t0 := time.Now().Add(-time.Hour)
	c1, k1 := selfSigned(t, "first.example")
	write(t, cp, c1, t0)
	write(t, kp, k1, t0)
	r, err := New(cp, kp, nil)
	if err != nil {
		t.Fatal(err)
	}
	r.every = 0
	if got, want := r.NotAfter(), leafOf(t, c1).NotAfter; !got.Equal(want) {
		t.Fatalf("NotAfter %v, want %v", got, want)
	}
	c2, k2 := selfSignedUntil(t, "second.example", time.Now().Add(90*24*time.Hour))
	write(t, cp, c2, t0.Add(time.Minute))
	write(t, kp, k2, t0.Add(time.Minute))
	if got, want := r.NotAfter(), leafOf(t, c2).NotAfter; !got.Equal(want) {
		t.Fatalf("after renewal: NotAfter %v, want %v", got, want)
	}
}

// leafOf parses a PEM certificate.
func leafOf(t *testing.T, certPEM []byte) *x509.Certificate {
	t.Helper()
	b, _ := pem.Decode(certPEM)
	if b == nil {
		t.Fatal("no PEM block")
	}
	c, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestReloadSymlinkSwap: cert-manager and kubelet publish a renewed Secret by pointing a symlink at a new directory;
// the files' paths stay the same.
func TestReloadSymlinkSwap(t *testing.T) {
	dir := t.TempDir()
	t0 := time.Now().Add(-time.Hour)
	for i, cn := range []string{"a.example", "b.example"} {
		sub := filepath.Join(dir, cn)
		if err := os.Mkdir(sub, 0o700); err != nil {
			t.Fatal(err)
		}
		c, k := selfSigned(t, cn)
		write(t, filepath.Join(sub, "tls.crt"), c, t0.Add(time.Duration(i)*time.Minute))
		write(t, filepath.Join(sub, "tls.key"), k, t0.Add(time.Duration(i)*time.Minute))
	}
	data := filepath.Join(dir, "..data")
	if err := os.Symlink("a.example", data); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"tls.crt", "tls.key"} {
		if err := os.Symlink(filepath.Join("..data", f), filepath.Join(dir, f)); err != nil {
			t.Fatal(err)
		}
	}
	r, err := New(filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key"), nil)
	if err != nil {
		t.Fatal(err)
	}
	r.every = 0
	if cn := served(t, r); cn != "a.example" {
		t.Fatalf("served %q", cn)
	}
	tmp := filepath.Join(dir, "..data_tmp")
	if err := os.Symlink("b.example", tmp); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, data); err != nil {
		t.Fatal(err)
	}
	if cn := served(t, r); cn != "b.example" {
		t.Fatalf("after the swap: served %q", cn)
	}
}

// TestNewErrors: a missing file or a mismatched pair is an error at start, naming the file.
func TestNewErrors(t *testing.T) {
	dir := t.TempDir()
	c1, _ := selfSigned(t, "x.example")
	_, k2 := selfSigned(t, "y.example")
	cp, kp := filepath.Join(dir, "c.pem"), filepath.Join(dir, "k.pem")
	write(t, cp, c1, time.Now())
	if _, err := New(cp, kp, nil); err == nil {
		t.Fatal("missing key: no error")
	}
	write(t, kp, k2, time.Now())
	if _, err := New(cp, kp, nil); err == nil {
		t.Fatal("mismatched key: no error")
	}
}
