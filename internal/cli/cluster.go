package cli

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/switchboard-relay/switchboard/internal/certfile"
	"github.com/switchboard-relay/switchboard/internal/directory"
	"github.com/switchboard-relay/switchboard/internal/listen"
	"github.com/switchboard-relay/switchboard/internal/presence"
	"github.com/switchboard-relay/switchboard/internal/relay"
)

// cluster is the scale-out part of `switchboard serve`: the directory and the internal listener peers forward to.
type cluster struct {
	dir      directory.Directory
	redis    *directory.Redis             // nil with the memory directory
	internal net.Listener                 // nil without --internal-listen
	url      string                       // advertised internal URL
	peerTLS  *tls.Config                  // TLS of connections to https:// peers; nil: system roots, no certificate
	srv      atomic.Pointer[relay.Server] // set once the relay exists; its tunnels are re-asserted after data loss
}

// openCluster builds the directory named by --directory and, for Redis, the internal listener. It returns nil
// with the memory directory and no internal listener.
// The internal certificate's expiry is exported on reg.
func (c *ServeCmd) openCluster(ctx context.Context, replica string, log *slog.Logger, reg prometheus.Registerer) (*cluster, error) {
	cl := &cluster{}
	if c.Directory == "" || c.Directory == "memory" {
		if c.InternalListen != "" || c.InternalTLSCert != "" || c.InternalCA != "" {
			return nil, errors.New("--internal-listen and --internal-tls-*/--internal-ca need a shared directory (--directory redis://...)")
		}
		return cl, nil
	}
	if !strings.Contains(c.Directory, "://") && !strings.Contains(c.Directory, ":") {
		return nil, errors.New("--directory: want memory, redis://HOST:PORT/DB, rediss://..., redis-sentinel://SENTINEL:PORT,SENTINEL:PORT/DB?master=NAME or a HOST:PORT,HOST:PORT cluster seed list")
	}
	cfg, err := directory.ParseRedisURL(c.Directory)
	if err != nil {
		return nil, fmt.Errorf("--directory: %w", err)
	}
	if c.ClusterSecret == "" {
		return nil, errors.New("a shared directory needs --cluster-secret (or SWITCHBOARD_CLUSTER_SECRET): replicas authenticate forwarded requests with it")
	}
	if c.InternalListen == "" {
		return nil, errors.New("a shared directory needs --internal-listen: peers forward requests for this replica's hosts there")
	}
	cl.url = c.AdvertiseInternal
	serverTLS, peerTLS, err := c.internalTLS(log, reg)
	if err != nil {
		return nil, err
	}
	cl.peerTLS = peerTLS
	cl.internal, err = listen.Open(c.InternalListen)
	if err != nil {
		return nil, fmt.Errorf("internal listen: %w", err)
	}
	scheme := "http://"
	if serverTLS != nil {
		cl.internal = tls.NewListener(cl.internal, serverTLS)
		scheme = "https://"
	}
	if cl.url == "" {
		// The bound address, not the flag: it may name an inherited socket (fd:N).
		if cl.internal.Addr().(*net.TCPAddr).IP.IsUnspecified() {
			_ = cl.internal.Close()
			return nil, fmt.Errorf("--internal-listen %s listens on every address: set --advertise-internal to the URL peers should use", c.InternalListen)
		}
		cl.url = scheme + cl.internal.Addr().String()
	}
	if serverTLS != nil && !strings.HasPrefix(cl.url, "https://") {
		_ = cl.internal.Close()
		return nil, fmt.Errorf("--advertise-internal %s: the internal listener speaks TLS (--internal-tls-cert); advertise an https:// URL", cl.url)
	}
	cfg.Replica = replica
	cfg.Lease = c.Lease
	cfg.Logger = log
	cfg.Owned = func() []directory.Entry {
		if s := cl.srv.Load(); s != nil {
			return s.Owned()
		}
		return nil
	}
	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	cl.redis, err = directory.NewRedis(dctx, cfg)
	if err != nil {
		_ = cl.internal.Close()
		return nil, fmt.Errorf("--directory: %w", err)
	}
	cl.dir = cl.redis
	return cl, nil
}

// internalTLS loads --internal-tls-cert, --internal-tls-key and --internal-ca: the TLS of the internal listener
// (nil without a certificate: plain HTTP), which requires a client certificate signed by the CA when one is given,
// and the TLS of connections to https:// peers (nil without a certificate or a CA). Connections between replicas
// are HTTP/1.1 (no NextProtos): a forwarded WebSocket is an HTTP/1.1 upgrade. The certificate is reloaded when its
// files change, as the main listener's is.
func (c *ServeCmd) internalTLS(log *slog.Logger, reg prometheus.Registerer) (server, peer *tls.Config, err error) {
	if (c.InternalTLSCert == "") != (c.InternalTLSKey == "") {
		return nil, nil, errors.New("--internal-tls-cert and --internal-tls-key go together")
	}
	var pool *x509.CertPool
	if c.InternalCA != "" {
		var err error
		if pool, err = loadCAPool("--internal-ca", c.InternalCA); err != nil {
			return nil, nil, err
		}
		peer = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	if c.InternalTLSCert == "" {
		return nil, peer, nil
	}
	cert, err := certfile.New(c.InternalTLSCert, c.InternalTLSKey, log.With("listener", "internal"))
	if err != nil {
		return nil, nil, fmt.Errorf("--internal-tls-cert/--internal-tls-key: %w", err)
	}
	reg.MustRegister(certExpiry("internal", cert))
	server = &tls.Config{GetCertificate: cert.GetCertificate, MinVersion: tls.VersionTLS12}
	if pool != nil {
		server.ClientCAs = pool
		server.ClientAuth = tls.RequireAndVerifyClientCert
	}
	if peer == nil {
		peer = &tls.Config{MinVersion: tls.VersionTLS12}
	}
	peer.GetClientCertificate = cert.GetClientCertificate
	return server, peer, nil
}

// configure sets the relay's scale-out fields.
func (cl *cluster) configure(c *ServeCmd, cfg *relay.Config) {
	cfg.Directory = cl.dir // nil: the relay's own memory directory
	cfg.InternalURL = cl.url
	cfg.ClusterSecret = []byte(c.ClusterSecret)
	cfg.PeerTLS = cl.peerTLS
	cfg.RouteMode = c.RouteMode
	cfg.MissWait = c.MissWait
	cfg.FlapWindow = c.FlapWindow
	if c.FlapWindow == 0 {
		cfg.FlapWindow = -1 // relay.Config reads zero as the default
	}
	if cl.redis != nil {
		// Cannot fail: the client is set.
		cfg.Events, _ = presence.NewRedis(presence.RedisConfig{Client: cl.redis.Client(), Prefix: cl.redis.Prefix(),
			Retention: c.EventsRetention, MaxEvents: c.EventsMax})
	} else {
		cfg.Events = presence.NewMemory(presence.MemoryConfig{Retention: c.EventsRetention, MaxEvents: c.EventsMax})
	}
}

// internalServer returns the HTTP server of the internal listener, or nil if there is none.
func (cl *cluster) internalServer(srv *relay.Server, log *slog.Logger) *http.Server {
	cl.srv.Store(srv)
	if cl.internal == nil {
		return nil
	}
	return &http.Server{
		Handler:           srv.InternalHandler(),
		ReadHeaderTimeout: 30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
}

// close resigns this replica's lease, so its remaining entries stop routing at once, and closes the directory.
func (cl *cluster) close(log *slog.Logger) {
	if cl.redis == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := cl.redis.Resign(ctx); err != nil {
		log.Warn("directory lease not resigned; entries expire with the lease", "err", err)
	}
	_ = cl.redis.Close()
}

// abort undoes openCluster when serve fails before it runs.
func (cl *cluster) abort() {
	if cl.internal != nil {
		_ = cl.internal.Close()
	}
	if cl.redis != nil {
		_ = cl.redis.Close()
	}
}

// redactDirectory hides the Redis passwords in --directory for logs (see directory.RedactRedisURL).
func redactDirectory(s string) string {
	if s == "" || s == "memory" {
		return s
	}
	return directory.RedactRedisURL(s)
}
