// Package certfile serves a TLS certificate from a PEM certificate file and key file, and picks up new contents
// when the files change: certbot, cert-manager (a Secret mounted as a volume, swapped through a symlink) and
// manual renewals need no restart.
package certfile

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"
)

// Reloader holds the certificate of one certificate/key pair of files. Its methods are safe for concurrent use.
type Reloader struct {
	// Immutable after New.
	certPath, keyPath string
	log               *slog.Logger
	every             time.Duration // least time between two looks at the files

	// Guarded by mu.
	mu      sync.Mutex
	cert    *tls.Certificate
	stamp   [2]fileStamp // of the files the current certificate came from
	failed  [2]fileStamp // of files that failed to load, so each failure is logged once
	checked time.Time    // last look at the files
}

// fileStamp tells one version of a file from another.
type fileStamp struct {
	mod  time.Time
	size int64
}

// New loads the pair once; an error names the file and what is wrong. log receives a line per reload and per
// failed reload (the old certificate stays in use); nil discards.
func New(certPath, keyPath string, log *slog.Logger) (*Reloader, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	r := &Reloader{certPath: certPath, keyPath: keyPath, log: log, every: time.Second}
	st, err := r.stat()
	if err != nil {
		return nil, err
	}
	cert, err := r.load()
	if err != nil {
		return nil, err
	}
	r.cert, r.stamp, r.checked = cert, st, time.Now()
	return r, nil
}

// GetCertificate is for tls.Config.GetCertificate.
func (r *Reloader) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return r.Current(), nil
}

// GetClientCertificate is for tls.Config.GetClientCertificate: the same pair as a client certificate.
func (r *Reloader) GetClientCertificate(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
	return r.Current(), nil
}

// Current returns the certificate, loading the files again first if they changed since the last look (at most
// one look a second, so a flood of handshakes costs no more than one stat a second).
func (r *Reloader) Current() *tls.Certificate {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := time.Now()
	if now.Sub(r.checked) < r.every {
		return r.cert
	}
	r.checked = now
	st, err := r.stat()
	if err != nil || st == r.stamp || st == r.failed {
		if err != nil && st != r.failed {
			r.failed = st
			r.log.Warn("tls certificate files unreadable; serving the previous certificate", "err", err)
		}
		return r.cert
	}
	cert, err := r.load()
	if err != nil {
		// A renewal may have written one file and not yet the other: the next look tries again.
		r.failed = st
		r.log.Warn("tls certificate not reloaded; serving the previous one", "err", err)
		return r.cert
	}
	r.cert, r.stamp = cert, st
	r.log.Info("tls certificate reloaded", "cert_file", r.certPath, "not_after", cert.Leaf.NotAfter.UTC().Format(time.RFC3339),
		"subject", cert.Leaf.Subject.CommonName)
	return r.cert
}

// NotAfter is the expiry of the certificate in use, after looking at the files as Current does: a renewal shows
// here (in the expiry metric) without waiting for a handshake.
func (r *Reloader) NotAfter() time.Time {
	return r.Current().Leaf.NotAfter
}

func (r *Reloader) stat() ([2]fileStamp, error) {
	var st [2]fileStamp
	for i, p := range []string{r.certPath, r.keyPath} {
		fi, err := os.Stat(p)
		if err != nil {
			return st, fmt.Errorf("tls certificate: %w", err)
		}
		st[i] = fileStamp{fi.ModTime(), fi.Size()}
	}
	return st, nil
}

func (r *Reloader) load() (*tls.Certificate, error) {
	cert, err := tls.LoadX509KeyPair(r.certPath, r.keyPath)
	if err != nil {
		return nil, fmt.Errorf("tls certificate %s, key %s: %w", r.certPath, r.keyPath, err)
	}
	if cert.Leaf == nil {
		if cert.Leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return nil, fmt.Errorf("tls certificate %s: %w", r.certPath, err)
		}
	}
	return &cert, nil
}
