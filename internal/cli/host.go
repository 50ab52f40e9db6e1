package cli

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"net/url"
	"os/exec"
	"strings"
	"time"

	"github.com/switchboard-relay/switchboard/agent"
	"github.com/switchboard-relay/switchboard/internal/listen"
	"github.com/switchboard-relay/switchboard/internal/tunnel"
	"github.com/switchboard-relay/switchboard/internal/version"
)

// HostCmd is `switchboard host`.
type HostCmd struct {
	Relay                      []string          `help:"Relay base URL (http, https, ws, wss); repeat to fail over between relays." required:"" env:"SWITCHBOARD_RELAY" sep:","`
	ID                         string            `help:"Host id to register." required:"" env:"SWITCHBOARD_HOST_ID"`
	Token                      string            `help:"Host token (see 'switchboard token host')." env:"SWITCHBOARD_TOKEN"`
	TokenCommand               string            `help:"Shell command that prints a host token; run before every connection attempt and to renew the tunnel before the token expires." env:"SWITCHBOARD_TOKEN_COMMAND"`
	Upstream                   string            `help:"URL of the HTTP service to expose, e.g. http://127.0.0.1:3000. Optional with --tcp." env:"SWITCHBOARD_UPSTREAM"`
	TCP                        map[string]string `name:"tcp" help:"Publish a TCP service NAME=HOST:PORT (repeatable), e.g. ssh=127.0.0.1:22; clients open it by name with 'switchboard connect' or 'forward'." env:"SWITCHBOARD_TCP" mapsep:","`
	UpstreamHeader             []string          `help:"Fixed header 'K: V' added to every upstream request (repeatable)." env:"SWITCHBOARD_UPSTREAM_HEADER" sep:"none"`
	Name                       string            `help:"Display name of this host." env:"SWITCHBOARD_HOST_NAME"`
	Label                      map[string]string `help:"Label k=v (repeatable)." env:"SWITCHBOARD_HOST_LABELS" mapsep:","`
	PingInterval               time.Duration     `help:"Keepalive cadence; the relay is dead after three missed." default:"10s" env:"SWITCHBOARD_PING_INTERVAL"`
	MinBackoff                 time.Duration     `help:"Reconnect backoff floor." default:"1s" env:"SWITCHBOARD_MIN_BACKOFF"`
	MaxBackoff                 time.Duration     `help:"Reconnect backoff ceiling." default:"5s" env:"SWITCHBOARD_MAX_BACKOFF"`
	Transport                  string            `help:"Tunnel transport: auto (raw upgrade, falling back to WebSocket), websocket, raw." default:"auto" enum:"auto,websocket,raw" env:"SWITCHBOARD_TRANSPORT"`
	HostHeader                 string            `name:"host-header" help:"Host sent upstream: 'upstream' (the upstream URL's), 'preserve' (the client's, the public name) or a fixed name. X-Forwarded-Host always carries the client's." default:"upstream" env:"SWITCHBOARD_HOST_HEADER"`
	UpstreamCA                 string            `name:"upstream-ca" help:"PEM CA bundle that verifies an https:// upstream's certificate (instead of the system roots)." env:"SWITCHBOARD_UPSTREAM_CA"`
	UpstreamInsecureSkipVerify bool              `name:"upstream-insecure-skip-verify" help:"Do not verify an https:// upstream's certificate (a self-signed local service only)." env:"SWITCHBOARD_UPSTREAM_INSECURE_SKIP_VERIFY"`
	Pprof                      string            `name:"pprof" placeholder:"ADDR" help:"Serve Go's profiler (/debug/pprof/) on ADDR, a loopback address such as 127.0.0.1:6061 (or fd:N). Off by default." env:"SWITCHBOARD_HOST_PPROF"`
	PprofAllowRemote           bool              `name:"pprof-allow-remote" help:"Let --pprof listen on an address that is not loopback (profiles show what the agent is doing to anyone who can reach it)." env:"SWITCHBOARD_HOST_PPROF_ALLOW_REMOTE"`
	MetricsListen              string            `name:"metrics-listen" help:"Address (or fd:N) serving the agent's /metrics and /healthz (200 while the tunnel is up, else 503); empty disables it. Keep it private." env:"SWITCHBOARD_AGENT_METRICS_LISTEN"`
}

// Validate rejects flag values the relay would refuse at every attempt, so the agent exits 2 at once instead of
// retrying forever.
func (c *HostCmd) Validate() error {
	if err := checkHostID(c.ID); c.ID != "" && err != nil { // a missing --id is kong's to report
		return err
	}
	if c.PingInterval < 0 || c.MinBackoff < 0 || c.MaxBackoff < 0 {
		return errors.New("--ping-interval, --min-backoff and --max-backoff must not be negative")
	}
	if c.MaxBackoff > 0 && c.MinBackoff > c.MaxBackoff {
		return fmt.Errorf("--min-backoff %v is above --max-backoff %v", c.MinBackoff, c.MaxBackoff)
	}
	if err := checkHostHeader(c.HostHeader); err != nil {
		return err
	}
	if c.UpstreamCA != "" && c.UpstreamInsecureSkipVerify {
		return errors.New("--upstream-ca and --upstream-insecure-skip-verify exclude each other")
	}
	if c.Upstream == "" && len(c.TCP) == 0 {
		return errors.New("nothing to serve: give --upstream (HTTP), --tcp NAME=HOST:PORT, or both")
	}
	if err := agent.CheckTCPServices(c.TCP); err != nil {
		return fmt.Errorf("--tcp: %w", err)
	}
	return checkPprofAddr(c.Pprof, c.PprofAllowRemote)
}

// checkPprofAddr accepts an empty address (off), fd:N, or host:port whose host is a loopback address or
// "localhost"; any other host only with allowRemote.
func checkPprofAddr(addr string, allowRemote bool) error {
	if addr == "" || strings.HasPrefix(addr, "fd:") {
		return nil
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("--pprof %q: want host:port, e.g. 127.0.0.1:6061: %w", addr, err)
	}
	if ip := net.ParseIP(host); (ip != nil && ip.IsLoopback()) || host == "localhost" || allowRemote {
		return nil
	}
	return fmt.Errorf("--pprof %q is not a loopback address: profiles and goroutine dumps would be open to the "+
		"network; use 127.0.0.1:PORT, or add --pprof-allow-remote", addr)
}

// servePprof serves the profiler on addr until ctx ends; the returned function stops it and waits. pprof's
// cmdline handler is left out: the command line may carry the host token.
func servePprof(addr string, log *slog.Logger) (stop func(), err error) {
	ln, err := listen.Open(addr)
	if err != nil {
		return nil, fmt.Errorf("--pprof: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(ln)
	}()
	log.Info("pprof listening", "addr", ln.Addr().String())
	return func() {
		_ = srv.Close()
		<-done
	}, nil
}

// checkHostHeader accepts upstream, preserve, or a host[:port] to send as Host.
func checkHostHeader(v string) error {
	switch v {
	case "", agent.HostHeaderUpstream, agent.HostHeaderPreserve:
		return nil
	}
	if strings.ContainsAny(v, "/ \t@?#") || !validHeaderValue(v) {
		return fmt.Errorf("--host-header %q: want upstream, preserve or a host name such as app.internal:8080", v)
	}
	if _, err := url.Parse("http://" + v); err != nil {
		return fmt.Errorf("--host-header %q: want upstream, preserve or a host name: %w", v, err)
	}
	return nil
}

// upstreamTLS builds the TLS configuration of an https:// upstream from --upstream-ca and
// --upstream-insecure-skip-verify; nil when neither is set.
func (c *HostCmd) upstreamTLS() (*tls.Config, error) {
	switch {
	case c.UpstreamInsecureSkipVerify:
		return &tls.Config{InsecureSkipVerify: true}, nil // asked for by name
	case c.UpstreamCA != "":
		pool, err := loadCAPool("--upstream-ca", c.UpstreamCA)
		if err != nil {
			return nil, err
		}
		return &tls.Config{RootCAs: pool}, nil
	}
	return nil, nil
}

// checkHostID applies the relay's host id rule (tunnel.CheckHostID: 1 to tunnel.MaxHostIDLen bytes of visible UTF-8
// without '/'); the relay answers 400 to anything else.
func checkHostID(id string) error {
	if err := tunnel.CheckHostID(id); err != nil {
		return fmt.Errorf("--id %q: %w", id, err)
	}
	return nil
}

// Run keeps the tunnel until the process is told to stop.
func (c *HostCmd) Run(ctx context.Context, g *Globals) error {
	if err := checkHostID(c.ID); err != nil { // an explicit --id "" passes kong's required check
		return &exitError{code: 2, err: err}
	}
	if c.Token == "" && c.TokenCommand == "" {
		return &exitError{code: 2, err: errors.New("a host token is required: --token, SWITCHBOARD_TOKEN or --token-command")}
	}
	fixed, err := parseHeaders(c.UpstreamHeader)
	if err != nil {
		return &exitError{code: 2, err: err}
	}
	cfg := agent.Config{
		Relays:       c.Relay,
		HostID:       c.ID,
		Token:        c.Token,
		Name:         c.Name,
		Labels:       c.Label,
		PingInterval: c.PingInterval,
		MinBackoff:   c.MinBackoff,
		MaxBackoff:   c.MaxBackoff,
		Transport:    c.Transport,
		Logger:       g.logger(),
		Version:      version.String(),
	}
	if c.TokenCommand != "" {
		cfg.TokenSource = commandToken(c.TokenCommand)
	}
	tlsCfg, err := c.upstreamTLS()
	if err != nil {
		return &exitError{code: 2, err: err}
	}
	opts := agent.UpstreamOptions{Fixed: fixed, HostHeader: c.HostHeader, TLS: tlsCfg, TCP: c.TCP}
	if c.Pprof != "" {
		if err := checkPprofAddr(c.Pprof, c.PprofAllowRemote); err != nil {
			return &exitError{code: 2, err: err}
		}
		stop, err := servePprof(c.Pprof, g.logger())
		if err != nil {
			return &exitError{code: 2, err: err}
		}
		defer stop()
	}
	if c.MetricsListen != "" {
		ln, err := listen.Open(c.MetricsListen)
		if err != nil {
			return &exitError{code: 2, err: fmt.Errorf("metrics listen: %w", err)}
		}
		m := newHostMetrics()
		cfg.MeasureRTT = true
		opts.Wrap = m.wrap
		opts.Exchange = m.exchange
		opts.Listening = m.ln.Store
		stop := serveHostMetrics(m, ln, cfg.Logger)
		defer stop()
		cfg.Logger.Info("agent metrics listening", "metrics_addr", ln.Addr().String())
	}
	if err := agent.Host(ctx, cfg, c.Upstream, opts); err != nil {
		return &exitError{code: 2, err: err}
	}
	return nil
}

// parseHeaders parses "Name: value" flags. It refuses what the upstream transport would refuse on every request
// (a name that is not an HTTP token, control characters in the value) and the headers that frame the message or
// belong to one hop, which a fixed value would break or which the transport ignores (Host).
func parseHeaders(kvs []string) (http.Header, error) {
	h := http.Header{}
	for _, kv := range kvs {
		k, v, ok := strings.Cut(kv, ":")
		v = strings.Trim(v, " \t")
		if !ok || !validHeaderName(k) || !validHeaderValue(v) {
			return nil, fmt.Errorf("--upstream-header %q: want 'Name: value' with a token name and a value "+
				"without control characters", kv)
		}
		switch ck := http.CanonicalHeaderKey(k); ck {
		case "Host", "Content-Length", "Transfer-Encoding", "Connection", "Upgrade", "Te", "Trailer",
			"Keep-Alive", "Proxy-Connection":
			return nil, fmt.Errorf("--upstream-header %q: %s cannot be fixed", kv, ck)
		}
		h.Add(k, v)
	}
	return h, nil
}

// validHeaderName reports whether k is an RFC 9110 token.
func validHeaderName(k string) bool {
	if k == "" {
		return false
	}
	for i := range len(k) {
		c := k[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0) {
			return false
		}
	}
	return true
}

// validHeaderValue reports whether v has no control characters other than horizontal tab.
func validHeaderValue(v string) bool {
	for i := range len(v) {
		if c := v[i]; c < ' ' && c != '\t' || c == 0x7f {
			return false
		}
	}
	return true
}

// commandToken runs a shell command for every token it is asked for.
func commandToken(command string) func(context.Context) (string, error) {
	return func(ctx context.Context) (string, error) {
		out, err := exec.CommandContext(ctx, "sh", "-c", command).Output()
		if err != nil {
			return "", fmt.Errorf("token command: %w", err)
		}
		tok := strings.TrimSpace(string(out))
		if tok == "" {
			return "", errors.New("token command printed nothing")
		}
		return tok, nil
	}
}
