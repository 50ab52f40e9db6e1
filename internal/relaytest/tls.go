package relaytest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"testing"
	"time"

	"github.com/switchboard-relay/switchboard/internal/directory"
	"github.com/switchboard-relay/switchboard/internal/relay"
)

// InternalPKI is a private CA and one certificate it signed for 127.0.0.1, good for both ends of a connection
// between replicas (server and client authentication), as PEM.
type InternalPKI struct {
	CAPEM, CertPEM, KeyPEM []byte
}

// NewInternalPKI makes a fresh InternalPKI.
func NewInternalPKI(t testing.TB) InternalPKI {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	ca := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "relaytest internal CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, ca, ca, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	leaf := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "replica"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	leafDER, err := x509.CreateCertificate(rand.Reader, leaf, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return InternalPKI{
		CAPEM:   pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}),
		CertPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: leafDER}),
		KeyPEM:  pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}),
	}
}

// ServerConfig is the TLS of an internal listener that requires a client certificate signed by the CA.
func (p InternalPKI) ServerConfig(t testing.TB) *tls.Config {
	t.Helper()
	cert, pool := p.parse(t)
	return &tls.Config{Certificates: []tls.Certificate{cert}, ClientCAs: pool, ClientAuth: tls.RequireAndVerifyClientCert}
}

// ClientConfig is the TLS of a replica dialing peers: it trusts the CA and presents the certificate.
func (p InternalPKI) ClientConfig(t testing.TB) *tls.Config {
	t.Helper()
	cert, pool := p.parse(t)
	return &tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: pool}
}

func (p InternalPKI) parse(t testing.TB) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	cert, err := tls.X509KeyPair(p.CertPEM, p.KeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(p.CAPEM) {
		t.Fatal("relaytest: CA PEM not parsed")
	}
	return cert, pool
}

// StartTLSRelayOn is StartRelayOn with an internal listener that speaks TLS with pki's certificate and requires a
// client certificate signed by its CA, and with peers dialed over TLS with pki's ClientConfig.
func StartTLSRelayOn(t testing.TB, dir directory.Directory, pki InternalPKI, mutate func(*relay.Config)) *Replica {
	t.Helper()
	return startRelayOn(t, dir, &pki, mutate)
}
