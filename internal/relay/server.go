// Package relay is the Switchboard relay as a library: relay.Server accepts host tunnels on /v1/tunnel and carries
// client exchanges to them on /hosts/{id}/... It does not listen on its own; main owns listeners and http.Server.
//
// It owns the tunnel registry, the routing decision for every request (route.go), local proxying, forwarding to
// peers, the drain and the relay's metrics. The protocol between replicas (signed hops, eviction notices, the peer
// list and asking it, the internal listener's handler, the lean forward's pooled connections) is package peering;
// the relay serves that handler through peering.Local (internal.go).
//
// The admin API (/v1/admin/, admin.go) is for admin tokens only: Server.AuthorizeAdmin and Server.RequireAdmin are
// the check, for any other operator page to reuse, and Server.ClusterReplicas and Server.ClusterTunnels return what
// it lists, for the whole cluster, as Go values (ReplicaView, TunnelPage).
//
// The hosts and presence API (GET /v1/hosts, /v1/hosts/{id}, /v1/presence/events) is package hostsapi, which New
// builds on this Server's directory, event fan-out and sealer, and mounts (hostsapi.go).
//
// Locks. Every mutex in the package is a leaf: none is held while another is taken, nor across a call to the
// directory, a peer or a callback. The one lock held across I/O is tunnelConn.ctrlMu, for one control-message write to
// the agent (with a 5 s deadline), and nothing else is locked under it. In particular Server.mu (the tunnel registry)
// and Server.behindMu (directory writes and releases owed after an outage) are never held together: writeBehind
// copies the owed entries out before it looks them up in the registry. The others each guard one small structure
// and call nothing under it: tunnelConn.callersMu, streamPool.mu, bodySender.mu, ipLimiter.mu,
// revocations.mu, liveUses.mu, tally.mu, AccessLog.mu and a drain's workQueue.mu (drain.go). The locks of package
// peering are leaves too (its doc lists them), and none is held while the relay is called back (peering.Local).
// A new lock keeps to this, or this paragraph gains the order.
package relay

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/switchboard-relay/switchboard/internal/auth"
	"github.com/switchboard-relay/switchboard/internal/directory"
	"github.com/switchboard-relay/switchboard/internal/hostsapi"
	"github.com/switchboard-relay/switchboard/internal/peering"
	"github.com/switchboard-relay/switchboard/internal/presence"
	"github.com/switchboard-relay/switchboard/internal/tunnel"
)

// Config configures a Server. Every zero value has a documented default, applied in New.
type Config struct {
	// Verifier checks host and client tokens. Required: use auth.AllowAll() for --auth none.
	Verifier auth.Verifier
	// Directory records tunnel owners and presence. If nil, a fresh directory.Memory is used.
	Directory directory.Directory
	// Replica names this relay in the directory. If empty, "local".
	Replica string
	// Logger receives structured logs. If nil, logs are discarded.
	Logger *slog.Logger
	// Registerer receives the relay's metrics. If nil, a fresh registry is used (see Server.Gatherer).
	Registerer prometheus.Registerer
	// Gatherer serves /metrics on MetricsHandler (never on the Server's own public handler). If nil and Registerer
	// is nil, the fresh registry; if nil otherwise, no /metrics.
	Gatherer prometheus.Gatherer

	// PingInterval is the tunnel keepalive cadence; a tunnel is dead after three missed intervals. Zero means 10 s.
	PingInterval time.Duration
	// IdleTimeout is how long an exchange may make no progress (no response header, no body bytes) before it is
	// answered 504 or cut. Zero means 60 s. It is never a limit on total duration.
	IdleTimeout time.Duration
	// MaxTunnels caps registered tunnels; further upgrades get 503. Zero means 100,000.
	MaxTunnels int
	// MaxStreamsPerHost caps concurrent exchanges per host; further ones get 429. Zero means 1,000.
	MaxStreamsPerHost int
	// MaxStreamsPerClient caps the concurrent exchanges one caller may have on one host, so that one client cannot
	// take a host's whole MaxStreamsPerHost; further ones get 429 too_many_streams. A caller is the token subject
	// when the client authenticated, else its IP. Zero means max(1, MaxStreamsPerHost/4).
	MaxStreamsPerClient int
	// UpgradeRate and UpgradeBurst limit tunnel upgrades with a valid host token per client IP (hosts behind one
	// NAT share it). Zero means 5 per second, burst 50.
	UpgradeRate  float64
	UpgradeBurst int
	// AuthFailRate and AuthFailBurst limit failed tunnel upgrades (bad token, token for another id, malformed id)
	// per client IP, in a bucket of their own that only failures are charged to: past it, failures get 429
	// rate_limited, while upgrades with a valid token from the same address go on. Zero means 1 per second,
	// burst 10.
	AuthFailRate  float64
	AuthFailBurst int
	// DrainJitter spreads drain notices to agents over this window, so they do not reconnect at once. Zero means 2 s.
	DrainJitter time.Duration
	// ReplaceGrace is how long a tunnel replaced by a newer registration of its host (a token renewal, a
	// reconnect, a duplicate agent) may finish the exchanges it has in flight before it is closed under them with
	// 4409; it takes no new ones meanwhile. Zero means 30 s.
	ReplaceGrace time.Duration
	// MaxBatchIDs bounds GET /v1/hosts?ids=. Zero means 100.
	MaxBatchIDs int
	// Events is the log presence events are appended to and GET /v1/presence/events reads (docs/presence.md). Give
	// every replica of a cluster the same shared log (presence.Redis). If nil, a fresh presence.Memory.
	Events presence.Log
	// FlapWindow is how long a host may be gone before its offline is announced: a reconnect within it announces
	// no offline/online pair. Zero means DefaultFlapWindow; negative means no wait.
	FlapWindow time.Duration
	// EventsHeartbeat is how often GET /v1/presence/events writes a comment line, on a fixed schedule from the
	// stream's start (so that proxies keep it open and clients notice a dead connection, and so that the stream's
	// timing tells nothing of events the token may not see). Zero means 15 s.
	EventsHeartbeat time.Duration
	// MaxResponseHeaderBytes caps a response head (status line and headers, 1xx heads included) read from a host,
	// on plain exchanges and WebSocket upgrades alike; a longer one is answered 502 upstream_header_too_large. A
	// peer replica's forwarded answer may be peerHeadSlack longer. Zero means DefaultMaxResponseHeaderBytes (64 KiB).
	MaxResponseHeaderBytes int
	// StallTimeout is how long a client may accept no bytes while the relay has bytes for it (a download, an SSE
	// stream, a WebSocket, proxied or forwarded), and a host no WebSocket bytes, before the exchange is cut. Zero
	// means IdleTimeout; `switchboard serve` defaults to 30 s.
	StallTimeout time.Duration
	// StreamWindow is the relay's receive window per exchange: what a host may send ahead of a client that reads
	// slowly, or not at all until StallTimeout cuts it. Larger windows carry more per stream over a long round
	// trip to the host. Zero means 4 MiB; at least 256 KiB.
	StreamWindow uint32
	// MaxExchanges caps the client exchanges in flight on this relay, over all hosts (forwarded ones included);
	// further ones get 503 relay_busy. With StreamWindow it bounds what clients can make the relay buffer:
	// about MaxExchanges × (StreamWindow + 0.5 MiB), see docs/operations.md. Zero means 10,000.
	MaxExchanges int
	// AccessLog, if set, receives one line per client exchange that reached this replica from a client (not from a
	// peer: the replica the client reached writes the line). The caller owns it: it closes it after the Server. If
	// nil, there is no access log.
	AccessLog *AccessLog
	// TrustForwardedFor appends to a client-sent X-Forwarded-For instead of replacing it (set behind a trusted
	// proxy). If false, X-Forwarded-For is the client's address. The scheme is TrustForwardedProto's.
	TrustForwardedFor bool
	// TrustForwardedProto takes a client-sent "X-Forwarded-Proto: https" (or http) as the scheme the client used,
	// for a front that terminates TLS and says so in that header (set only behind such a trusted proxy). If false,
	// the scheme is https only when the connection was TLS at this relay or a PROXY v2 header said so
	// (ContextWithClientTLS).
	TrustForwardedProto bool

	// Browsers (docs/browsers.md).

	// HostsDomain turns on host mode: a request whose Host is NAME.HostsDomain (any port) goes to the host whose id
	// has that name (HostName), with its path and query unchanged. Path mode (/hosts/{id}/…) works beside it. If
	// empty, host mode is off.
	HostsDomain string
	// CORSOrigins are the exact origins (scheme://host[:port]) whose pages may call the relay cross-origin: the
	// relay answers their preflights and marks its answers for them. If empty, every preflight is refused with 403
	// cors_origin_not_allowed and no answer allows another origin.
	CORSOrigins []string

	// Scale-out (docs/scaling.md). With the zero values the relay is a single node: a request for a host without
	// a tunnel here is answered 503 at once.

	// InternalURL is the base URL (scheme://host:port) at which peers reach this replica's InternalHandler; Run
	// advertises it in the directory. If empty, peers cannot forward to this replica.
	InternalURL string
	// ClusterSecret keys the HMAC that authenticates requests between replicas. If empty, forwarding is off both
	// ways: this replica forwards nothing and its InternalHandler refuses everything. It also keys the sealing of
	// GET /v1/hosts cursors and presence event ids (seal.go); if empty, those are sealed under a random key of this
	// process, so a cursor or Last-Event-ID works only on the replica that issued it.
	ClusterSecret []byte
	// RouteMode is RouteForward or RouteFlyReplay. If empty, RouteForward.
	RouteMode string
	// MissWait is how long a request for a host connected nowhere is held, waiting for the host to connect to any
	// replica, before it is answered 503. Zero (or negative) answers at once; `switchboard serve` defaults to 2 s.
	MissWait time.Duration
	// PeerTLS configures the TLS of connections to peers whose internal URL is https://: the CA that signed their
	// internal listeners' certificates (RootCAs) and the client certificate they require (Certificates). Hops to
	// https:// peers go through the ReverseProxy forward (the lean forward is plain HTTP only). If nil, https://
	// peers are verified against the system roots and offered no client certificate.
	PeerTLS *tls.Config
	// HopNonceCache caps the nonces of accepted hops this replica remembers to refuse a replayed one (each for
	// about 30 s, the acceptance window). When that many are held, further hops are refused with 503 replica_busy
	// until some expire. Size it above 30 × the forwarded requests per second this replica receives. Zero means
	// 1,000,000 (about 70 MB when full).
	HopNonceCache int

	// Operations (the admin API, admin.go).

	// MinAgentVersion, if not empty, refuses tunnels of agents whose version (MAJOR.MINOR.PATCH) is older, or
	// unknown, with close code 4426. See CheckAgentVersion.
	MinAgentVersion string
	// OnDrainRequest is called when an admin asks this replica to drain (POST /v1/admin/replicas/{id}/drain), at
	// most once: the process should then do what it does on SIGTERM, and exit afterwards only if exit is true. If
	// nil, the Server drains by itself (with a 30 s limit) and stays up.
	OnDrainRequest func(exit bool)
}

// Server is the relay. It is an http.Handler.
type Server struct {
	// Immutable after New.
	cfg     Config
	dir     *directory.Instrumented // measures its calls and feeds each result to the health state (dirhealth.go)
	ownDir  bool
	log     *slog.Logger
	metrics *metrics
	bounds  *boundMetrics
	mux     *http.ServeMux
	events  presence.Log
	hub     *presence.Fanout // serves every event stream of this replica from one reader of events
	hosts   *hostsapi.API    // GET /v1/hosts, /v1/hosts/{id}, /v1/presence/events (hostsapi.go)
	cors    corsPolicy
	evm     *eventMetrics
	seal    *sealer // list cursors and event ids (seal.go)
	started time.Time
	admin   *adminMetrics
	revoked *revocations // this replica's copy of the revocation list (revoke.go); its own lock
	live    liveUses     // long-lived client exchanges, for revocation; its own lock
	// minAgent is Config.MinAgentVersion parsed; nil if none.
	minAgent   *agentVersion
	drainAsked atomic.Bool // an admin asked for a drain (requestDrain)

	// Per-IP limits of tunnel upgrades; immutable after New (each has its own lock).
	limiter   *ipLimiter // upgrades with a valid token
	authFails *ipLimiter // failed upgrades

	// Scale-out; immutable after New except where noted.
	cluster       *clusterMetrics
	fwd           *httputil.ReverseProxy // forwards to peers
	peerTransport *http.Transport
	peerClient    peering.Client      // this replica's own requests to peers
	lean          *peering.LeanClient // the lean forward's pooled connections (leanforward.go); has its own lock
	evictions     *peering.Evictions  // eviction notices received; has its own lock
	peers         *peering.Peers      // the other replicas: URLs, list, asking them; has its own locks
	health        dirHealth           // is the directory known down (dirhealth.go)
	hops          *peering.Signer     // signs and verifies hops; has its own lock
	// advertisedOnce is set once InternalURL was advertised: from then on, a directory without it lost data.
	advertisedOnce atomic.Bool

	// ctx is the servers's lifetime: cancelled by Close. Tunnels live under it, not under a request context.
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup // every tunnel and background goroutine

	unready   atomic.Bool // set by Unready
	draining  atomic.Bool
	closed    atomic.Bool
	exchanges atomic.Int64 // client exchanges in flight, under MaxExchanges (admitExchange)
	tally     tally        // client exchanges ended, by outcome (the status page and GET /v1/admin/replicas)
	idle      idleWatch    // host streams of exchanges in flight, timed out by idleLoop

	statusStreams atomic.Int64 // open GET /status/events streams, under maxStatusStreams
	lastKick      atomic.Int64 // when a kick last reached this replica (UnixNano): serveTunnel checks bans again after it

	// Guarded by mu.
	mu         sync.Mutex
	tunnels    map[string]*tunnelConn
	settingUp  int    // tunnels between reserveSlot and register: they count against MaxTunnels
	drained    bool   // the drain is over: a tunnel still being set up is not registered (drain.go)
	registered uint32 // registrations so far (wrapping): deals tunnels their ping slice (liveness.go)

	// Entries accepted while the directory was unreachable (claimLocally), to be written behind. Guarded by
	// behindMu, which is never held with mu (nor mu with it).
	behindMu       sync.Mutex
	behind         map[string]directory.Entry
	lastLocalEpoch uint64
	// Releases that failed (the directory was unreachable), to be retried by the cluster loop. Guarded by
	// behindMu.
	unreleased map[string]release
}

// release is a tunnel's end whose directory release is owed: its epoch, and when it ended.
type release struct {
	epoch uint64
	at    time.Time
}

// New validates cfg, applies defaults and returns a Server. It starts nothing.
func New(cfg Config) (*Server, error) {
	if cfg.Verifier == nil {
		return nil, errors.New("relay: Config.Verifier is required (auth.AllowAll() disables auth)")
	}
	// Clients send the same token on every request: check each one's signature once a minute, not every time.
	// Revocations are checked on every use, after the cache.
	revoked := &revocations{}
	cfg.Verifier = revokingVerifier{inner: auth.Cached(cfg.Verifier, 0), list: revoked}
	var minAgent *agentVersion
	if cfg.MinAgentVersion != "" {
		v, err := parseAgentVersion(cfg.MinAgentVersion)
		if err != nil {
			return nil, fmt.Errorf("relay: Config.MinAgentVersion: %w", err)
		}
		minAgent = &v
	}
	if cfg.Replica == "" {
		cfg.Replica = "local"
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.PingInterval <= 0 {
		cfg.PingInterval = tunnel.DefaultPingInterval
	}
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = 60 * time.Second
	}
	if cfg.MaxResponseHeaderBytes <= 0 {
		cfg.MaxResponseHeaderBytes = DefaultMaxResponseHeaderBytes
	}
	if cfg.StallTimeout <= 0 {
		cfg.StallTimeout = cfg.IdleTimeout
	}
	if cfg.StreamWindow == 0 {
		cfg.StreamWindow = DefaultStreamWindow
	} else if cfg.StreamWindow < minStreamWindow {
		return nil, fmt.Errorf("relay: Config.StreamWindow %d is below yamux's minimum of %d", cfg.StreamWindow, minStreamWindow)
	}
	if cfg.MaxExchanges <= 0 {
		cfg.MaxExchanges = 10_000
	}
	if cfg.MaxTunnels <= 0 {
		cfg.MaxTunnels = 100_000
	}
	if cfg.MaxStreamsPerHost <= 0 {
		cfg.MaxStreamsPerHost = 1000
	}
	if cfg.MaxStreamsPerClient <= 0 {
		cfg.MaxStreamsPerClient = max(1, cfg.MaxStreamsPerHost/4)
	}
	if cfg.UpgradeRate <= 0 {
		cfg.UpgradeRate = 5
	}
	if cfg.UpgradeBurst <= 0 {
		cfg.UpgradeBurst = 50
	}
	if cfg.AuthFailRate <= 0 {
		cfg.AuthFailRate = 1
	}
	if cfg.AuthFailBurst <= 0 {
		cfg.AuthFailBurst = 10
	}
	if cfg.DrainJitter <= 0 {
		cfg.DrainJitter = 2 * time.Second
	}
	if cfg.ReplaceGrace <= 0 {
		cfg.ReplaceGrace = 30 * time.Second
	}
	if cfg.FlapWindow == 0 {
		cfg.FlapWindow = DefaultFlapWindow
	} else if cfg.FlapWindow < 0 {
		cfg.FlapWindow = 0
	}
	if cfg.HopNonceCache <= 0 {
		cfg.HopNonceCache = 1_000_000
	}
	if cfg.Events == nil {
		cfg.Events = presence.NewMemory(presence.MemoryConfig{})
	}
	switch cfg.RouteMode {
	case "":
		cfg.RouteMode = RouteForward
	case RouteForward, RouteFlyReplay:
	default:
		return nil, fmt.Errorf("relay: Config.RouteMode %q: want %q or %q", cfg.RouteMode, RouteForward, RouteFlyReplay)
	}
	if cfg.InternalURL != "" {
		if u, err := url.Parse(cfg.InternalURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, fmt.Errorf("relay: Config.InternalURL %q is not an absolute http(s) URL", cfg.InternalURL)
		}
	}
	cfg.HostsDomain = strings.ToLower(strings.Trim(cfg.HostsDomain, "."))
	if d := cfg.HostsDomain; d != "" && !validDomain(d) {
		return nil, fmt.Errorf("relay: Config.HostsDomain %q is not a DNS name (labels of a-z, 0-9 and '-')", d)
	}
	cors, err := newCORSPolicy(cfg.CORSOrigins)
	if err != nil {
		return nil, err
	}
	if cfg.Registerer == nil {
		reg := prometheus.NewRegistry()
		cfg.Registerer = reg
		if cfg.Gatherer == nil {
			cfg.Gatherer = reg
		}
	}
	seal, err := newSealer(cfg.ClusterSecret)
	if err != nil {
		return nil, fmt.Errorf("relay: %w", err)
	}
	s := &Server{
		started:    time.Now(),
		revoked:    revoked,
		minAgent:   minAgent,
		admin:      newAdminMetrics(cfg.Registerer),
		seal:       seal,
		cfg:        cfg,
		log:        cfg.Logger,
		metrics:    newMetrics(cfg.Registerer, cfg.IdleTimeout, cfg.AccessLog),
		bounds:     newBoundMetrics(cfg.Registerer),
		cluster:    newClusterMetrics(cfg.Registerer),
		limiter:    newIPLimiter(cfg.UpgradeRate, cfg.UpgradeBurst),
		authFails:  newIPLimiter(cfg.AuthFailRate, cfg.AuthFailBurst),
		tunnels:    make(map[string]*tunnelConn),
		behind:     make(map[string]directory.Entry),
		unreleased: make(map[string]release),
		events:     cfg.Events,
		hub:        presence.NewFanout(cfg.Events, 0),
		evm:        newEventMetrics(cfg.Registerer),
		hops:       peering.NewSigner(cfg.Replica, cfg.ClusterSecret, cfg.HopNonceCache),
		cors:       cors,
		evictions:  peering.NewEvictions(registerWindow),
	}
	s.health.gauge = s.cluster.dirUp
	s.health.log = s.log.Warn
	dir := cfg.Directory
	if dir == nil {
		dir = directory.NewMemory()
		s.ownDir = true
	}
	s.dir = directory.Instrument(dir, directory.OpMetrics{Seconds: s.cluster.dirSeconds, Errors: s.cluster.dirErrors}, s.health.observe)
	registerCacheMetrics(cfg.Registerer, dir)
	registerHopMetrics(cfg.Registerer, s)
	dir.OnReaped(s.moveReaped)
	s.peerTransport = s.newPeerTransport()
	s.peerClient = peering.Client{Signer: s.hops, Transport: s.peerTransport}
	// The owner answers 504 itself after its idle timeout; HeadTimeout only catches an owner that hangs.
	s.lean = &peering.LeanClient{Signer: s.hops, MaxHeadBytes: s.cfg.MaxResponseHeaderBytes + peerHeadSlack,
		HeadTimeout: s.cfg.IdleTimeout + 10*time.Second}
	s.peers = peering.NewPeers(cfg.Replica, cfg.InternalURL, s.dir, s.peerClient)
	s.fwd = s.newForwardProxy()
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.mux = http.NewServeMux()
	s.mux.HandleFunc("GET "+tunnel.Path, s.handleTunnel)
	if s.hosts, err = s.newHostsAPI(); err != nil {
		return nil, fmt.Errorf("relay: %w", err)
	}
	s.hosts.Route(s.mux) // hostsapi.go
	s.mux.HandleFunc("GET /healthz", s.handleHealthz)
	s.mux.HandleFunc("GET /readyz", s.handleReadyz)
	s.routeAdmin()
	// No /metrics here: this handler faces clients and hosts, and metrics are for operators (MetricsHandler).
	s.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, codeNotFound, "no such endpoint; clients call /hosts/{id}/...")
	})
	return s, nil
}

// ServeHTTP routes a request. /hosts/ is matched by hand so that paths reach the host exactly as sent (the
// standard mux would clean and redirect them).
//
// A request that carries Origin, for a host or the API, meets CORS first (cors.go): preflights are answered here,
// and real answers are marked for an allowed origin.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	tg, toHost, valid := s.resolve(r)
	if origin := r.Header.Get("Origin"); origin != "" &&
		(toHost || strings.HasPrefix(r.URL.Path, "/v1/") && r.URL.Path != tunnel.Path) {
		if isPreflight(r) {
			s.preflight(w, r)
			return
		}
		if !s.cors.allowed(origin) {
			origin = ""
		}
		w = &corsWriter{ResponseWriter: w, origin: origin}
	}
	if toHost {
		s.handleProxy(w, r, tg, valid)
		return
	}
	s.mux.ServeHTTP(w, r)
}

// MetricsHandler serves /metrics, /healthz, /readyz and the status page (/status) for a separate metrics listener.
func (s *Server) MetricsHandler() http.Handler {
	m := http.NewServeMux()
	if s.cfg.Gatherer != nil {
		m.Handle("GET /metrics", promhttp.HandlerFor(s.cfg.Gatherer, promhttp.HandlerOpts{}))
	}
	m.HandleFunc("GET /healthz", s.handleHealthz)
	m.HandleFunc("GET /readyz", s.handleReadyz)
	s.routeStatus(m) // status.go: never on the public listener
	return m
}

// Run runs the relay's background upkeep until ctx ends or the Server closes: tunnel liveness pings (without Run,
// dead tunnels are found only by the agents' own pings and TCP), the exchanges' idle timeouts (without Run, an
// exchange whose host makes no progress waits until the client goes), rate-limiter sweeping, advertising InternalURL,
// writing behind entries accepted while the directory was unreachable, probing the directory's health
// (dirhealth.go), and the directory's own Run loop if it has one (directory.Redis: the replica lease and
// re-assertion after data loss).
//
// Close waits for Run and everything it started; Run called after Close returns at once.
func (s *Server) Run(ctx context.Context) error {
	if !s.track() {
		return nil
	}
	defer s.wg.Done()
	var wg sync.WaitGroup
	defer wg.Wait()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // before wg.Wait
	stop := context.AfterFunc(s.ctx, cancel)
	defer stop()
	wg.Go(func() { s.pingLoop(ctx) })
	wg.Go(func() { s.idleLoop(ctx) })
	wg.Go(func() { s.clusterLoop(ctx) })
	wg.Go(func() { s.hub.Run(ctx) })
	wg.Go(func() { s.reapLoop(ctx) })
	wg.Go(func() { s.healthLoop(ctx) })
	wg.Go(func() { s.revokeLoop(ctx) })
	wg.Go(func() {
		if err := s.dir.Run(ctx); err != nil {
			s.log.Error("directory upkeep stopped", "err", err)
		}
	})
	t := time.NewTicker(time.Minute)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-s.ctx.Done():
			return nil
		case now := <-t.C:
			s.limiter.sweep(now)
			s.authFails.sweep(now)
		}
	}
}

// Draining reports whether Drain has begun.
func (s *Server) Draining() bool { return s.draining.Load() }

// Unready turns /readyz to 503 and changes nothing else: the relay keeps serving exchanges and accepting tunnels.
// Call it before Drain for a lame-duck period in which load balancers take this replica out of rotation, so that
// the agents Drain then tells to move reconnect to other replicas rather than to this one. Drain and Close keep
// /readyz at 503.
func (s *Server) Unready() { s.unready.Store(true) }

// track counts a goroutine that Close must wait for, unless Close has begun: it reports false then, and the
// goroutine must not start. A goroutine already counted (a tunnel's, Run's) may also call s.wg.Go directly.
func (s *Server) track() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed.Load() {
		return false
	}
	s.wg.Add(1) // under mu, which Close takes to set closed: Close is not waiting yet
	return true
}

// spawn runs f on a goroutine Close waits for, unless Close has begun; it reports whether f was started.
func (s *Server) spawn(f func()) bool {
	if !s.track() {
		return false
	}
	go func() {
		defer s.wg.Done()
		f()
	}()
	return true
}

// Close stops the relay now: every tunnel is closed and Close waits for every goroutine the Server started, Run
// and what it runs included. Stop Run (cancel its context) before calling Close where possible, so that nothing
// Run does races the closing. It is idempotent.
func (s *Server) Close() error {
	s.mu.Lock() // no tunnel goroutine starts after this (see handleTunnel)
	already := s.closed.Swap(true)
	s.mu.Unlock()
	if already {
		return nil
	}
	s.cancel()
	s.closeAll(tunnel.CloseGoingAway, "relay shutting down", "shutdown")
	s.wg.Wait()
	s.peerTransport.CloseIdleConnections()
	s.lean.CloseIdle()
	if s.ownDir {
		return s.dir.Close()
	}
	return nil
}

// closeAll closes every tunnel at once: each close waits for its agent's close answer, so they run in parallel.
func (s *Server) closeAll(code websocket.StatusCode, msg, reason string) {
	var wg sync.WaitGroup
	for _, t := range s.snapshot() {
		wg.Go(func() { t.close(code, msg, reason) })
	}
	wg.Wait()
}

// snapshot returns the registered tunnels.
func (s *Server) snapshot() []*tunnelConn {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]*tunnelConn, 0, len(s.tunnels))
	for _, t := range s.tunnels {
		out = append(out, t)
	}
	return out
}

// lookup returns the live local tunnel of hostID, or nil.
func (s *Server) lookup(hostID string) *tunnelConn {
	s.mu.Lock()
	t := s.tunnels[hostID]
	s.mu.Unlock()
	return t
}

// serving returns hostID's tunnel if it is registered here and not retiring.
func (s *Server) serving(hostID string) *tunnelConn {
	if t := s.lookup(hostID); t != nil && !t.retiring.Load() {
		return t
	}
	return nil
}

func (s *Server) handleHealthz(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write([]byte(`{"status":"ok"}` + "\n"))
}

func (s *Server) handleReadyz(w http.ResponseWriter, r *http.Request) {
	if s.unready.Load() || s.draining.Load() || s.closed.Load() {
		writeError(w, http.StatusServiceUnavailable, codeDraining, "relay is draining")
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write([]byte(`{"status":"ready"}` + "\n"))
}
