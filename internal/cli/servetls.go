package cli

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/crypto/acme"
	"golang.org/x/crypto/acme/autocert"

	"github.com/switchboard-relay/switchboard/internal/certfile"
)

// validateTLS checks the TLS and PROXY protocol flags together.
func (c *ServeCmd) validateTLS() error {
	if (c.TLSCert == "") != (c.TLSKey == "") {
		return errors.New("--tls-cert and --tls-key go together")
	}
	if len(c.ACMEDomain) > 0 && c.ACMECache == "" {
		return errors.New("--acme-domain needs --acme-cache DIR: without a cache every restart asks the CA for new " +
			"certificates and soon hits its rate limits")
	}
	if len(c.ACMEDomain) == 0 {
		for _, f := range []struct{ name, v string }{
			{"--acme-cache", c.ACMECache}, {"--acme-email", c.ACMEEmail}, {"--acme-http-listen", c.ACMEHTTPListen},
			{"--acme-directory-url", c.ACMEDirectoryURL},
		} {
			if f.v != "" {
				return fmt.Errorf("%s needs --acme-domain", f.name)
			}
		}
	}
	for _, d := range c.ACMEDomain {
		if strings.ContainsAny(d, "*/: ") || d == "" {
			return fmt.Errorf("--acme-domain %q: want a plain DNS name (ACME's HTTP and TLS challenges cannot issue "+
				"wildcards: give a wildcard certificate with --tls-cert, docs/operations.md)", d)
		}
	}
	if _, err := c.proxyNets(); err != nil {
		return err
	}
	return nil
}

// proxyNets parses --proxy-protocol-from; it is an error without --proxy-protocol and required with it.
func (c *ServeCmd) proxyNets() ([]netip.Prefix, error) {
	if !c.ProxyProtocol {
		if len(c.ProxyProtocolFrom) > 0 {
			return nil, errors.New("--proxy-protocol-from needs --proxy-protocol")
		}
		return nil, nil
	}
	if len(c.ProxyProtocolFrom) == 0 {
		return nil, errors.New("--proxy-protocol needs --proxy-protocol-from CIDR (the load balancers' networks): " +
			"a PROXY header from anyone else would let a client claim any address")
	}
	var nets []netip.Prefix
	for _, s := range c.ProxyProtocolFrom {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			a, aerr := netip.ParseAddr(s)
			if aerr != nil || a.Zone() != "" {
				return nil, fmt.Errorf("--proxy-protocol-from %q: want a CIDR like 10.0.0.0/8 or an address", s)
			}
			p = netip.PrefixFrom(a, a.BitLen())
		}
		nets = append(nets, p.Masked())
	}
	return nets, nil
}

// publicTLS is the TLS of the main listener: nil without --tls-cert and --acme-domain. The second result serves
// ACME HTTP-01 challenges (and redirects everything else to https) on --acme-http-listen; nil without ACME.
//
// Only HTTP/1.1 is offered (ALPN "http/1.1"): tunnels and WebSockets are HTTP/1.1 upgrades, which HTTP/2 does not
// carry. With both a certificate file and ACME domains, a handshake for an ACME domain (or an ACME TLS-ALPN-01
// challenge) gets the ACME certificate and every other name the file's, e.g. a wildcard for --hosts-domain.
// The file's certificate expiry is exported on reg (certExpiry).
func (c *ServeCmd) publicTLS(log *slog.Logger, reg prometheus.Registerer) (*tls.Config, http.Handler, error) {
	if c.TLSCert == "" && len(c.ACMEDomain) == 0 {
		return nil, nil, nil
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, NextProtos: []string{"http/1.1"}}
	var file *certfile.Reloader
	if c.TLSCert != "" {
		var err error
		if file, err = certfile.New(c.TLSCert, c.TLSKey, log); err != nil {
			return nil, nil, fmt.Errorf("--tls-cert/--tls-key: %w", err)
		}
		reg.MustRegister(certExpiry("main", file))
		cfg.GetCertificate = file.GetCertificate
	}
	if len(c.ACMEDomain) == 0 {
		return cfg, nil, nil
	}
	m := &autocert.Manager{
		Prompt:     autocert.AcceptTOS,
		Cache:      autocert.DirCache(c.ACMECache),
		HostPolicy: autocert.HostWhitelist(c.ACMEDomain...),
		Email:      c.ACMEEmail,
	}
	if c.ACMEDirectoryURL != "" {
		m.Client = &acme.Client{DirectoryURL: c.ACMEDirectoryURL}
	}
	cfg.NextProtos = append(cfg.NextProtos, acme.ALPNProto)
	cfg.GetCertificate = func(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
		if file == nil || slices.Contains(hello.SupportedProtos, acme.ALPNProto) ||
			slices.ContainsFunc(c.ACMEDomain, func(d string) bool { return strings.EqualFold(d, hello.ServerName) }) {
			return m.GetCertificate(hello)
		}
		return file.GetCertificate(hello)
	}
	return cfg, m.HTTPHandler(nil), nil
}

// certExpiry exports the expiry of a listener's certificate file as switchboard_tls_cert_expiry_timestamp_seconds
// {listener}: main (--tls-cert) or internal (--internal-tls-cert). ACME certificates are not in it: autocert renews
// them itself, 30 days ahead, and logs when it cannot.
func certExpiry(listener string, r *certfile.Reloader) prometheus.Collector {
	return prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Namespace: "switchboard", Name: "tls_cert_expiry_timestamp_seconds",
		Help:        "Expiry (NotAfter, Unix seconds) of the certificate a listener serves from its files: main (--tls-cert) or internal (--internal-tls-cert).",
		ConstLabels: prometheus.Labels{"listener": listener},
	}, func() float64 { return float64(r.NotAfter().Unix()) })
}

// clientTLSListener wraps ln with TLS when cfg is set.
func clientTLSListener(ln net.Listener, cfg *tls.Config) net.Listener {
	if cfg == nil {
		return ln
	}
	return tls.NewListener(ln, cfg)
}

// tlsMode names the main listener's TLS for the start log line: off, file, acme or file+acme.
func tlsMode(c *ServeCmd) string {
	switch {
	case c.TLSCert != "" && len(c.ACMEDomain) > 0:
		return "file+acme"
	case c.TLSCert != "":
		return "file"
	case len(c.ACMEDomain) > 0:
		return "acme"
	}
	return "off"
}
