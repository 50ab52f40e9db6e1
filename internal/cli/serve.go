package cli

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/switchboard-relay/switchboard/internal/auth"
	"github.com/switchboard-relay/switchboard/internal/connlimit"
	"github.com/switchboard-relay/switchboard/internal/listen"
	"github.com/switchboard-relay/switchboard/internal/proxyproto"
	"github.com/switchboard-relay/switchboard/internal/relay"
	"github.com/switchboard-relay/switchboard/internal/version"
)

// ServeCmd is `switchboard serve`.
type ServeCmd struct {
	Listen        string `help:"Address of the relay listener, or fd:N to serve on a listening socket inherited as file descriptor N." default:"127.0.0.1:8080" env:"SWITCHBOARD_LISTEN"`
	MetricsListen string `help:"Address of the operator listener (/metrics, /healthz, /readyz, the /status page), or fd:N; empty disables it." default:"127.0.0.1:9090" env:"SWITCHBOARD_METRICS_LISTEN"`
	Secret        string `help:"HS256 secret for host and client tokens; generated for this run if empty." env:"SWITCHBOARD_SECRET"`
	Auth          string `help:"Token checking: 'token' (HS256, plus JWKS when --jwks-url is set) or 'none' (local experiments only)." default:"token" enum:"token,none" env:"SWITCHBOARD_AUTH"`

	JWKSURL         string `name:"jwks-url" help:"Also accept RS256/EdDSA JWTs verified against this JWKS URL." env:"SWITCHBOARD_JWKS_URL"`
	JWKSHostsClaim  string `name:"jwks-hosts-claim" help:"Claim listing the hosts a JWKS token may reach." default:"hosts" env:"SWITCHBOARD_JWKS_HOSTS_CLAIM"`
	JWKSHostsSuffix string `name:"jwks-hosts-suffix" help:"Suffix appended to every hosts-claim value (e.g. ':*' for org ids)." env:"SWITCHBOARD_JWKS_HOSTS_SUFFIX"`
	JWKSHostIDClaim string `name:"jwks-host-id-claim" help:"Claim naming the host id a JWKS token may register." default:"host_id" env:"SWITCHBOARD_JWKS_HOST_ID_CLAIM"`
	JWKSIssuer      string `name:"jwks-issuer" help:"Required 'iss' of JWKS tokens." env:"SWITCHBOARD_JWKS_ISSUER"`
	JWKSAudience    string `name:"jwks-audience" help:"Required 'aud' of JWKS tokens (required with --jwks-url)." env:"SWITCHBOARD_JWKS_AUDIENCE"`
	JWKSAdminClaim  string `name:"jwks-admin-claim" help:"NAME=VALUE: a JWKS token whose claim NAME is VALUE (or an array holding it) is an admin token; empty: no JWKS token is." env:"SWITCHBOARD_JWKS_ADMIN_CLAIM"`
	MinAgentVersion string `name:"min-agent-version" help:"Refuse tunnels of agents older than this version (MAJOR.MINOR.PATCH), or of unknown version, with close code 4426." env:"SWITCHBOARD_MIN_AGENT_VERSION"`

	Directory         string        `help:"Tunnel directory: 'memory' (one node), or Redis shared by replicas: redis://[user:pass@]HOST:PORT/DB, rediss://..., redis-sentinel://[user:pass@]SENTINEL:PORT,SENTINEL:PORT/DB?master=NAME[&sentinel_password=...] (rediss-sentinel:// for TLS), or a HOST:PORT,HOST:PORT Redis Cluster seed list." default:"memory" env:"SWITCHBOARD_DIRECTORY"`
	ReplicaID         string        `help:"Name of this replica, unique among replicas (default: FLY_MACHINE_ID, else the hostname)." env:"SWITCHBOARD_REPLICA_ID"`
	InternalListen    string        `help:"Address of the internal listener peers forward requests to, or fd:N (required with a Redis directory; keep it private)." env:"SWITCHBOARD_INTERNAL_LISTEN"`
	AdvertiseInternal string        `help:"URL at which peers reach --internal-listen (default: http:// plus that address if it names one; https:// with --internal-tls-cert)." env:"SWITCHBOARD_ADVERTISE_INTERNAL"`
	InternalTLSCert   string        `name:"internal-tls-cert" help:"PEM certificate of the internal listener, also presented to peers as this replica's client certificate (with --internal-tls-key); the default advertised URL becomes https://." env:"SWITCHBOARD_INTERNAL_TLS_CERT"`
	InternalTLSKey    string        `name:"internal-tls-key" help:"PEM private key of --internal-tls-cert." env:"SWITCHBOARD_INTERNAL_TLS_KEY"`
	InternalCA        string        `name:"internal-ca" help:"PEM CA bundle: peers' internal listeners must present a certificate it signed, and with --internal-tls-cert so must every caller of this replica's internal listener." env:"SWITCHBOARD_INTERNAL_CA"`
	ClusterSecret     string        `help:"Secret shared by all replicas; authenticates forwarded requests (required with a Redis directory)." env:"SWITCHBOARD_CLUSTER_SECRET"`
	RouteMode         string        `help:"How a replica reaches a host held by another: 'forward' (proxy to its internal listener) or 'fly-replay' (answer plain HTTP with fly-replay; WebSocket and SSE are forwarded)." default:"forward" enum:"forward,fly-replay" env:"SWITCHBOARD_ROUTE_MODE"`
	MissWait          time.Duration `help:"How long a request for a host connected nowhere waits for it to connect before 503; 0 answers at once." default:"2s" env:"SWITCHBOARD_MISS_WAIT"`
	HopNonceCache     int           `help:"Most nonces of accepted hops remembered to refuse replays (each ~30 s); when full, hops get 503. Size above 30 × forwarded requests/s." default:"1000000" env:"SWITCHBOARD_HOP_NONCE_CACHE"`
	Lease             time.Duration `help:"Replica lease in a Redis directory: how long a dead replica's hosts may still route to it; refreshed every third of it." default:"15s" env:"SWITCHBOARD_LEASE"`

	DrainTimeout        time.Duration `help:"How long in-flight exchanges may finish after SIGTERM." default:"30s" env:"SWITCHBOARD_DRAIN_TIMEOUT"`
	DrainDelay          time.Duration `help:"After SIGTERM, first answer /readyz with 503 for this long while serving as usual, so a load balancer's health checks take the replica out of rotation before its agents are told to move and its listeners close (set above the balancer's check interval × failures); 0 starts the drain at once." default:"0s" env:"SWITCHBOARD_DRAIN_DELAY"`
	FlapWindow          time.Duration `help:"How long a host may be gone before its offline event; a reconnect within it sends no offline/online pair." default:"5s" env:"SWITCHBOARD_FLAP_WINDOW"`
	EventsRetention     time.Duration `help:"How long presence events stay readable for resuming streams (GET /v1/presence/events)." default:"1h" env:"SWITCHBOARD_EVENTS_RETENTION"`
	EventsMax           int           `help:"Most presence events kept for resuming streams." default:"100000" env:"SWITCHBOARD_EVENTS_MAX"`
	DrainJitter         time.Duration `help:"Window over which agents are told to reconnect." default:"2s" env:"SWITCHBOARD_DRAIN_JITTER"`
	PingInterval        time.Duration `help:"Tunnel keepalive cadence; a tunnel is dead after three missed." default:"10s" env:"SWITCHBOARD_PING_INTERVAL"`
	IdleTimeout         time.Duration `help:"An exchange with no progress for this long gets 504 (never a total limit)." default:"60s" env:"SWITCHBOARD_IDLE_TIMEOUT"`
	MaxTunnels          int           `help:"Most tunnels this relay holds." default:"100000" env:"SWITCHBOARD_MAX_TUNNELS"`
	MaxStreamsPerHost   int           `help:"Most concurrent exchanges per host; more get 429." default:"1000" env:"SWITCHBOARD_MAX_STREAMS_PER_HOST"`
	ReplaceGrace        time.Duration `help:"How long a tunnel replaced by a newer one for its host (e.g. a token renewal) may finish its exchanges before it is closed." default:"30s" env:"SWITCHBOARD_REPLACE_GRACE"`
	UpgradeRate         float64       `help:"Tunnel upgrades per second per client IP." default:"5" env:"SWITCHBOARD_UPGRADE_RATE"`
	UpgradeBurst        int           `help:"Burst of tunnel upgrades per client IP." default:"50" env:"SWITCHBOARD_UPGRADE_BURST"`
	MaxHeaderBytes      int           `help:"Largest request header block accepted." default:"65536" env:"SWITCHBOARD_MAX_HEADER_BYTES"`
	TrustForwardedFor   bool          `help:"Append to a client-sent X-Forwarded-For (only behind a trusted proxy)." env:"SWITCHBOARD_TRUST_FORWARDED_FOR"`
	TrustForwardedProto bool          `help:"Take a client-sent X-Forwarded-Proto: https as the client's scheme (only behind a trusted proxy that terminates TLS and sets it)." env:"SWITCHBOARD_TRUST_FORWARDED_PROTO"`
	HostsDomain         string        `name:"hosts-domain" help:"Serve each host on its own origin, NAME.DOMAIN (a wildcard DNS record *.DOMAIN and certificate); path mode /hosts/{id}/ keeps working. Empty: path mode only." env:"SWITCHBOARD_HOSTS_DOMAIN"`
	CORSOrigin          []string      `name:"cors-origin" help:"Exact origin (scheme://host[:port]) whose pages may call the relay cross-origin (repeatable, or comma-separated)." env:"SWITCHBOARD_CORS_ORIGIN" sep:","`
	Pprof               bool          `help:"Serve /debug/pprof/ on the metrics listener." env:"SWITCHBOARD_PPROF"`
	AccessLog           string        `name:"access-log" help:"Write one JSON line per client exchange to this file (reopened on SIGHUP, for logrotate), or '-' for stdout; empty disables it." env:"SWITCHBOARD_ACCESS_LOG"`
	AccessLogSample     int           `name:"access-log-sample" help:"Log one in N successful exchanges (failed ones, status 400 and up or an error code, are always logged); 1 logs every one." default:"1" env:"SWITCHBOARD_ACCESS_LOG_SAMPLE"`

	TLSCert          string   `name:"tls-cert" help:"PEM certificate (chain) of the main listener, which then speaks TLS (HTTP/1.1); reloaded when the file changes." env:"SWITCHBOARD_TLS_CERT"`
	TLSKey           string   `name:"tls-key" help:"PEM private key of --tls-cert; reloaded with it." env:"SWITCHBOARD_TLS_KEY"`
	ACMEDomain       []string `name:"acme-domain" help:"Get and renew certificates for this name from an ACME CA (Let's Encrypt) automatically (repeatable, or comma-separated); the main listener then speaks TLS." env:"SWITCHBOARD_ACME_DOMAIN" sep:","`
	ACMECache        string   `name:"acme-cache" help:"Directory where ACME account keys and certificates are kept across restarts (required with --acme-domain; keep it private)." env:"SWITCHBOARD_ACME_CACHE"`
	ACMEEmail        string   `name:"acme-email" help:"Contact address given to the ACME CA for expiry notices." env:"SWITCHBOARD_ACME_EMAIL"`
	ACMEHTTPListen   string   `name:"acme-http-listen" help:"Address (e.g. :80) or fd:N serving ACME HTTP-01 challenges and redirecting other requests to https; empty leaves only the TLS-ALPN-01 challenge on the main listener." env:"SWITCHBOARD_ACME_HTTP_LISTEN"`
	ACMEDirectoryURL string   `name:"acme-directory-url" help:"ACME directory URL (default Let's Encrypt production; use its staging URL to try a setup)." env:"SWITCHBOARD_ACME_DIRECTORY_URL"`

	ProxyProtocol     bool     `name:"proxy-protocol" help:"Connections to the main listener start with a PROXY protocol header (v1 or v2) from a load balancer; the client address it names is used for X-Forwarded-For, per-IP limits and logs." env:"SWITCHBOARD_PROXY_PROTOCOL"`
	ProxyProtocolFrom []string `name:"proxy-protocol-from" help:"Network (CIDR or address) of the load balancers allowed to connect with --proxy-protocol (repeatable, or comma-separated); connections from anywhere else are refused." env:"SWITCHBOARD_PROXY_PROTOCOL_FROM" sep:","`

	// Fairness and connection limits (docs/operations.md, "Limits").
	MaxStreamsPerClient int     `help:"Most concurrent exchanges one caller (token subject, else IP) may have on one host; 0 means max(1, max-streams-per-host/4)." default:"0" env:"SWITCHBOARD_MAX_STREAMS_PER_CLIENT"`
	AuthFailRate        float64 `help:"Failed tunnel upgrades (bad token, malformed id) per second per client IP; more get 429, upgrades with a valid token do not." default:"1" env:"SWITCHBOARD_AUTH_FAIL_RATE"`
	AuthFailBurst       int     `help:"Burst of failed tunnel upgrades per client IP." default:"10" env:"SWITCHBOARD_AUTH_FAIL_BURST"`
	MaxConnsPerIP       int     `name:"max-conns-per-ip" help:"Most open TCP connections from one client address (IPv6: one /64) on the relay listener; more are closed at accept. 0 means no cap." default:"2000" env:"SWITCHBOARD_MAX_CONNS_PER_IP"`
	MaxConns            int     `name:"max-conns" help:"Most open TCP connections on the relay listener; more are closed at accept. 0 means 90% of the open-file limit." default:"0" env:"SWITCHBOARD_MAX_CONNS"`
	// Bounds on the data path (docs/operations.md, "Limits and abuse").
	MaxResponseHeaderBytes int           `help:"Largest response head (status line and headers) read from a host or a peer replica; a longer one gets 502 upstream_header_too_large." default:"65536" env:"SWITCHBOARD_MAX_RESPONSE_HEADER_BYTES"`
	StallTimeout           time.Duration `help:"A client that takes no bytes for this long while the relay has bytes for it (and a host no WebSocket bytes) is cut." default:"30s" env:"SWITCHBOARD_STALL_TIMEOUT"`
	StreamWindow           int           `help:"Bytes a host may send ahead of a slow client, per exchange (the relay's yamux receive window; at least 262144)." default:"4194304" env:"SWITCHBOARD_STREAM_WINDOW"`
	MaxExchanges           int           `help:"Most client exchanges in flight on this relay over all hosts; more get 503 relay_busy." default:"10000" env:"SWITCHBOARD_MAX_EXCHANGES"`

	WebhookURL     []string      `name:"webhook-url" help:"POST every presence event, signed, to this http(s) URL (repeatable, or comma-separated)." env:"SWITCHBOARD_WEBHOOK_URL" sep:","`
	WebhookSecret  string        `name:"webhook-secret" help:"Key of the HMAC in the Switchboard-Signature header of webhooks (required with --webhook-url; prefer the env variable)." env:"SWITCHBOARD_WEBHOOK_SECRET"`
	WebhookTimeout time.Duration `name:"webhook-timeout" help:"Limit on one webhook attempt, request and response; a slower receiver is retried." default:"10s" env:"SWITCHBOARD_WEBHOOK_TIMEOUT"`
}

// Validate refuses negative limits and durations (the relay would silently replace them with its defaults, which
// is not what someone asking for -1 meant), secrets shorter than auth.MinSecretLen bytes, and --jwks-url without
// --jwks-audience.
func (c *ServeCmd) Validate() error {
	for _, o := range c.CORSOrigin {
		if err := relay.CheckCORSOrigin(o); err != nil {
			return fmt.Errorf("--cors-origin %q: %w", o, err)
		}
	}
	if c.HostsDomain != "" {
		if err := relay.CheckHostsDomain(c.HostsDomain); err != nil {
			return fmt.Errorf("--hosts-domain %q: %w", c.HostsDomain, err)
		}
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{
		{"--drain-timeout", c.DrainTimeout}, {"--drain-jitter", c.DrainJitter}, {"--drain-delay", c.DrainDelay},
		{"--ping-interval", c.PingInterval}, {"--idle-timeout", c.IdleTimeout},
		{"--webhook-timeout", c.WebhookTimeout}, {"--replace-grace", c.ReplaceGrace},
		{"--stall-timeout", c.StallTimeout},
	} {
		if d.v < 0 {
			return fmt.Errorf("%s %v must not be negative", d.name, d.v)
		}
	}
	if c.JWKSAdminClaim != "" {
		if k, v, ok := strings.Cut(c.JWKSAdminClaim, "="); !ok || k == "" || v == "" {
			return fmt.Errorf("--jwks-admin-claim %q: want NAME=VALUE, such as role=switchboard-admin", c.JWKSAdminClaim)
		}
		if c.JWKSURL == "" {
			return errors.New("--jwks-admin-claim needs --jwks-url")
		}
	}
	if c.MinAgentVersion != "" {
		if err := relay.CheckAgentVersion(c.MinAgentVersion); err != nil {
			return fmt.Errorf("--min-agent-version: %w", err)
		}
	}
	if c.Lease < time.Second {
		return fmt.Errorf("--lease %v: a replica lease must be at least 1s (it is refreshed every third of it)", c.Lease)
	}
	for _, n := range []struct {
		name string
		v    float64
	}{
		{"--max-tunnels", float64(c.MaxTunnels)}, {"--max-streams-per-host", float64(c.MaxStreamsPerHost)},
		{"--max-streams-per-client", float64(c.MaxStreamsPerClient)},
		{"--auth-fail-rate", c.AuthFailRate}, {"--auth-fail-burst", float64(c.AuthFailBurst)},
		{"--max-conns-per-ip", float64(c.MaxConnsPerIP)}, {"--max-conns", float64(c.MaxConns)},
		{"--upgrade-rate", c.UpgradeRate}, {"--upgrade-burst", float64(c.UpgradeBurst)},
		{"--max-header-bytes", float64(c.MaxHeaderBytes)}, {"--hop-nonce-cache", float64(c.HopNonceCache)},
		{"--max-response-header-bytes", float64(c.MaxResponseHeaderBytes)}, {"--max-exchanges", float64(c.MaxExchanges)},
	} {
		if n.v < 0 {
			return fmt.Errorf("%s %v must not be negative", n.name, n.v)
		}
	}
	if c.AccessLogSample < 1 {
		return fmt.Errorf("--access-log-sample %d must be at least 1 (1 logs every exchange)", c.AccessLogSample)
	}
	if c.JWKSURL != "" && c.JWKSAudience == "" {
		return errors.New("--jwks-url needs --jwks-audience (or SWITCHBOARD_JWKS_AUDIENCE): without it a token the " +
			"identity provider issued for any other application would be accepted here")
	}
	for _, sec := range []struct{ flag, v string }{
		{"--secret (SWITCHBOARD_SECRET)", c.Secret},
		{"--cluster-secret (SWITCHBOARD_CLUSTER_SECRET)", c.ClusterSecret},
		{"--webhook-secret (SWITCHBOARD_WEBHOOK_SECRET)", c.WebhookSecret},
	} {
		if err := checkSecret(sec.flag, sec.v); err != nil {
			return err
		}
	}
	if c.StreamWindow != 0 && (c.StreamWindow < 256<<10 || c.StreamWindow > math.MaxUint32) {
		return fmt.Errorf("--stream-window %d must be between 262144 and %d", c.StreamWindow, uint32(math.MaxUint32))
	}
	if err := c.validateTLS(); err != nil {
		return err
	}
	return c.validateWebhooks()
}

// Run serves until ctx ends, then drains and exits 0.
func (c *ServeCmd) Run(ctx context.Context, g *Globals) error {
	log := g.logger()
	if err := singleInstanceGuard(c.Directory); err != nil {
		log.Error(err.Error())
		return &exitError{code: 2, err: nil}
	}
	verifier, err := c.verifier(g, log)
	if err != nil {
		return &exitError{code: 2, err: err}
	}
	replica := c.ReplicaID
	if replica == "" {
		replica = defaultReplicaID()
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		version.NewCollector())
	tlsCfg, acmeHTTP, err := c.publicTLS(log, reg)
	if err != nil {
		return &exitError{code: 2, err: err}
	}
	proxyNets, _ := c.proxyNets() // checked by Validate
	cl, err := c.openCluster(ctx, replica, log, reg)
	if err != nil {
		return &exitError{code: 2, err: err}
	}
	rcfg := relay.Config{
		Verifier:            verifier,
		Replica:             replica,
		Logger:              log,
		Registerer:          reg,
		Gatherer:            reg,
		PingInterval:        c.PingInterval,
		IdleTimeout:         c.IdleTimeout,
		MaxTunnels:          c.MaxTunnels,
		MaxStreamsPerHost:   c.MaxStreamsPerHost,
		ReplaceGrace:        c.ReplaceGrace,
		UpgradeRate:         c.UpgradeRate,
		UpgradeBurst:        c.UpgradeBurst,
		DrainJitter:         c.DrainJitter,
		TrustForwardedFor:   c.TrustForwardedFor,
		TrustForwardedProto: c.TrustForwardedProto,
		HopNonceCache:       c.HopNonceCache,
		HostsDomain:         c.HostsDomain,
		CORSOrigins:         c.CORSOrigin,

		MaxResponseHeaderBytes: c.MaxResponseHeaderBytes,
		StallTimeout:           c.StallTimeout,
		StreamWindow:           uint32(c.StreamWindow),
		MaxExchanges:           c.MaxExchanges,
		MinAgentVersion:        c.MinAgentVersion,
	}
	// An admin's drain request (POST /v1/admin/replicas/{id}/drain) starts what SIGTERM starts.
	drainReq := make(chan bool, 1)
	rcfg.OnDrainRequest = func(exit bool) {
		select {
		case drainReq <- exit:
		default:
		}
	}
	rcfg.MaxStreamsPerClient = c.MaxStreamsPerClient
	rcfg.AuthFailRate, rcfg.AuthFailBurst = c.AuthFailRate, c.AuthFailBurst
	cl.configure(c, &rcfg)
	if c.AccessLog != "" {
		al, err := relay.NewAccessLog(relay.AccessLogConfig{Path: c.AccessLog, Sample: c.AccessLogSample,
			Logger: log.With("component", "access_log")})
		if err != nil {
			cl.abort()
			return &exitError{code: 2, err: err}
		}
		defer al.Close() // after the relay closed: its last lines are flushed
		rcfg.AccessLog = al
	}
	stopHangup := onHangup(rcfg.AccessLog)
	defer stopHangup()
	srv, err := relay.New(rcfg)
	if err != nil {
		cl.abort()
		return &exitError{code: 2, err: err}
	}
	hooks, err := c.openWebhooks(rcfg.Events, cl, replica, reg, log)
	if err != nil {
		_ = srv.Close()
		cl.abort()
		return &exitError{code: 2, err: err}
	}
	ln, err := listen.Open(c.Listen)
	if err != nil {
		_ = srv.Close()
		cl.abort()
		return &exitError{code: 2, err: fmt.Errorf("listen: %w", err)}
	}
	// Order: accept → PROXY header (only from --proxy-protocol-from) → limits by the client's address → TLS →
	// http.Server.
	if proxyNets != nil {
		pln, err := proxyproto.NewListener(ln, proxyproto.Config{Trusted: proxyNets, Logger: log, Registerer: reg})
		if err != nil {
			_ = ln.Close()
			_ = srv.Close()
			cl.abort()
			return &exitError{code: 2, err: err}
		}
		ln = pln
	} else if err := proxyproto.RegisterUnused(reg); err != nil {
		_ = ln.Close()
		_ = srv.Close()
		cl.abort()
		return &exitError{code: 2, err: err}
	}
	ln = c.limitConns(ln, reg, log)
	ln = clientTLSListener(ln, tlsCfg)
	var http1 http.Protocols
	http1.SetHTTP1(true) // tunnels and WebSockets are HTTP/1.1 upgrades
	main := &http.Server{
		Handler:           srv,
		ReadHeaderTimeout: 30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    c.MaxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
		Protocols:         &http1,
		ConnContext: func(ctx context.Context, conn net.Conn) context.Context {
			if proxyproto.ClientTLS(conn) { // the balancer terminated TLS and said so in its PROXY v2 header
				return relay.ContextWithClientTLS(ctx)
			}
			return ctx
		},
	}
	servers := []*http.Server{main}
	var metricsAddr string
	var mln net.Listener
	if c.MetricsListen != "" {
		mln, err = listen.Open(c.MetricsListen)
		if err != nil {
			_ = ln.Close()
			_ = srv.Close()
			cl.abort()
			return &exitError{code: 2, err: fmt.Errorf("metrics listen: %w", err)}
		}
		metricsAddr = mln.Addr().String()
		servers = append(servers, &http.Server{Handler: metricsHandler(srv, c.Pprof), ReadHeaderTimeout: 10 * time.Second,
			IdleTimeout: time.Minute})
	}

	var aln net.Listener
	if c.ACMEHTTPListen != "" {
		aln, err = listen.Open(c.ACMEHTTPListen)
		if err != nil {
			_ = ln.Close()
			if mln != nil {
				_ = mln.Close()
			}
			_ = srv.Close()
			cl.abort()
			return &exitError{code: 2, err: fmt.Errorf("acme http listen: %w", err)}
		}
		servers = append(servers, &http.Server{Handler: acmeHTTP, ReadHeaderTimeout: 10 * time.Second})
	}

	var wg, running sync.WaitGroup // running: the background loops, stopped before the relay closes
	runCtx, stopRun := context.WithCancel(context.Background())
	running.Go(func() { _ = srv.Run(runCtx) })
	if hooks != nil { // delivers through the drain; stops (resigning its lease) with runCtx, before cl.close
		running.Go(func() { _ = hooks.Run(runCtx) })
	}
	wg.Go(func() { serveUntilClosed(main, ln, log) })
	if mln != nil {
		ms := servers[1] // not servers[1] inside the goroutine: servers grows below while it starts
		wg.Go(func() { serveUntilClosed(ms, mln, log) })
	}
	if aln != nil {
		as := servers[len(servers)-1]
		wg.Go(func() { serveUntilClosed(as, aln, log) })
	}
	if is := cl.internalServer(srv, log); is != nil {
		servers = append(servers, is)
		wg.Go(func() { serveUntilClosed(is, cl.internal, log) })
	}
	log.Info("relay listening", "addr", ln.Addr().String(), "metrics_addr", metricsAddr, "replica", replica,
		"directory", redactDirectory(c.Directory), "internal_url", cl.url, "route_mode", c.RouteMode, "auth", c.Auth,
		"tls", tlsMode(c), "proxy_protocol", c.ProxyProtocol)

	exit := true
	select {
	case <-ctx.Done():
		// The default handlers are back before the drain shows anywhere (readiness 503), so that a second signal
		// stops the process at once whatever the machine's load (main also restores them, but asynchronously).
		signal.Reset(os.Interrupt, syscall.SIGTERM)
		log.Info("shutdown signal: draining (a second signal stops at once)", "drain_timeout", c.DrainTimeout.String(),
			"drain_delay", c.DrainDelay.String())
	case exit = <-drainReq:
		log.Info("admin asked for a drain: draining", "exit_after", exit, "drain_timeout", c.DrainTimeout.String(),
			"drain_delay", c.DrainDelay.String())
	}
	if c.DrainDelay > 0 {
		// Lame duck: /readyz says 503 while everything still works, until the load balancer has stopped sending
		// new connections here; agents told to move then reconnect elsewhere.
		srv.Unready()
		time.Sleep(c.DrainDelay)
	}
	drainCtx, cancel := context.WithTimeout(context.Background(), c.DrainTimeout)
	defer cancel()
	if err := srv.Drain(drainCtx); err != nil {
		log.Warn("drain ended with exchanges in flight", "err", err)
	}
	if !exit {
		// Drained, and still up: /readyz says 503, tunnels are refused, the API and metrics answer. A signal stops it.
		log.Info("drained on an admin's request; staying up until a shutdown signal")
		<-ctx.Done()
	}
	shutdownCtx, cancel2 := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel2()
	for _, s := range servers {
		_ = s.Shutdown(shutdownCtx)
	}
	// Run stops before Close, so that none of its loops (pings, write-behind, reaping) races the closing.
	stopRun()
	running.Wait()
	_ = srv.Close()
	wg.Wait()
	cl.close(log)
	log.Info("relay stopped")
	return nil
}

// onHangup makes SIGHUP reopen the access log, if there is one (logrotate's postrotate), and never stop the relay
// (its default action would end the process without a drain); the returned func stops listening for it.
func onHangup(al *relay.AccessLog) (stop func()) {
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, syscall.SIGHUP)
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			select {
			case <-ch:
				if al != nil {
					al.Reopen()
				}
			case <-done:
				return
			}
		}
	})
	return func() {
		signal.Stop(ch)
		close(done)
		wg.Wait()
	}
}

// limitConns caps the relay listener's TCP connections per client address and in total (internal/connlimit), after
// raising the open-file limit. The metrics listener (health probes) and the internal listener (peers only, every
// request signed) are not capped.
func (c *ServeCmd) limitConns(ln net.Listener, reg prometheus.Registerer, log *slog.Logger) net.Listener {
	fds, err := raiseFileLimit()
	if err != nil {
		log.Warn("could not raise the open-file limit", "open_files_limit", fds, "err", err)
	}
	total := c.MaxConns
	if total == 0 && fds > 0 {
		total = int(min(fds/10*9, math.MaxInt32))
	}
	log.Info("connection limits", "open_files_limit", fds, "max_conns", total, "max_conns_per_ip", c.MaxConnsPerIP)
	return connlimit.Wrap(ln, connlimit.Config{PerIP: c.MaxConnsPerIP, Total: total, Logger: log,
		Metrics: connlimit.NewMetrics(reg)})
}

// metricsHandler serves the relay's metrics and health endpoints, and pprof when asked. pprof's cmdline handler is
// left out: it prints the process's arguments, which may hold --secret, --cluster-secret or --webhook-secret (the
// index's "cmdline" link then answers 404 "Unknown profile").
func metricsHandler(srv *relay.Server, withPprof bool) http.Handler {
	if !withPprof {
		return srv.MetricsHandler()
	}
	mux := http.NewServeMux()
	mux.Handle("/", srv.MetricsHandler())
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	return mux
}

func serveUntilClosed(s *http.Server, ln net.Listener, log *slog.Logger) {
	if err := s.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		log.Error("listener failed", "addr", ln.Addr().String(), "err", err)
	}
}

// verifier builds the token checker from the flags.
func (c *ServeCmd) verifier(g *Globals, log *slog.Logger) (auth.Verifier, error) {
	if c.Auth == "none" {
		log.Warn("AUTH DISABLED (--auth none): anyone can register any host id and reach every host; use only for local experiments")
		return auth.AllowAll(), nil
	}
	secret := c.Secret
	if secret == "" {
		secret = generateSecret(g.stderr, log)
	}
	vs := []auth.Verifier{auth.NewHS256([]byte(secret))}
	adminClaim, adminValue, _ := strings.Cut(c.JWKSAdminClaim, "=") // checked by Validate
	if c.JWKSURL != "" {
		j, err := auth.NewJWKS(auth.JWKSConfig{
			URL:         c.JWKSURL,
			HostsClaim:  c.JWKSHostsClaim,
			HostsSuffix: c.JWKSHostsSuffix,
			HostIDClaim: c.JWKSHostIDClaim,
			Issuer:      c.JWKSIssuer,
			Audience:    c.JWKSAudience,
			AdminClaim:  adminClaim,
			AdminValue:  adminValue,
			Logger:      log,
		})
		if err != nil {
			return nil, fmt.Errorf("jwks: %w", err)
		}
		vs = append(vs, j)
	}
	return auth.Chain(vs...), nil
}

// generateSecret makes a secret for this run. It prints the secret, with how to mint tokens, only when stderr is a
// terminal: logs are collected somewhere (a file, journald, a log service), and a secret printed there is leaked to
// everyone who reads them.
func generateSecret(stderr io.Writer, log *slog.Logger) string {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	secret := hex.EncodeToString(b)
	if !isTerminal(stderr) {
		log.Warn("SWITCHBOARD_SECRET is not set: generated a secret for this run only and kept it to this process " +
			"(stderr is not a terminal); tokens from this run cannot be minted elsewhere and die with the process. " +
			"Set SWITCHBOARD_SECRET (at least 32 bytes: openssl rand -base64 32) to mint tokens")
		return secret
	}
	log.Warn("SWITCHBOARD_SECRET is not set: generated a secret for this run only; tokens die with the process")
	fmt.Fprintf(stderr, "\nTo mint tokens for this relay run, in another shell:\n\n"+
		"  export SWITCHBOARD_SECRET=%s\n"+
		"  switchboard token host --id my-host\n"+
		"  switchboard token client --hosts my-host\n\n"+
		"Set SWITCHBOARD_SECRET before starting the relay to keep tokens valid across restarts.\n\n", secret)
	return secret
}

// isTerminal reports whether w is a character device, as a terminal is: the generated secret is printed only for a
// person watching, never into collected logs. (/dev/null is a character device too, which is harmless.)
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// singleInstanceGuard refuses the in-memory directory where the platform may run several instances: two relays
// with separate memories would each see half the hosts.
func singleInstanceGuard(directory string) error {
	if directory != "memory" || os.Getenv("SWITCHBOARD_SINGLE_INSTANCE") == "1" {
		return nil
	}
	for _, v := range []string{"FLY_APP_NAME", "KUBERNETES_SERVICE_HOST"} {
		if os.Getenv(v) != "" {
			return fmt.Errorf("refusing to start: %s is set, so this platform may run several relay instances, "+
				"but --directory memory keeps tunnels in one process; use a shared Redis directory "+
				"(--directory redis://HOST:PORT) or, if exactly one instance will ever run, set SWITCHBOARD_SINGLE_INSTANCE=1", v)
		}
	}
	return nil
}

func defaultReplicaID() string {
	if id := os.Getenv("FLY_MACHINE_ID"); id != "" {
		return id
	}
	if h, err := os.Hostname(); err == nil && h != "" {
		return h
	}
	return "local"
}
