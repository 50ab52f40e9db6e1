package bench

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/switchboard-relay/switchboard/internal/auth"
)

// relayProc is a relay the bench drives: a child it started, or an existing deployment (proc nil).
type relayProc struct {
	proc *child
	// Addr is host:port of the relay's main listener.
	Addr string
	// Base is the relay's base URL, "http://host:port" (no trailing slash).
	Base string
	// Metrics is the base URL of the metrics listener; "" when unknown.
	Metrics string
	// args restart the relay on the same sockets.
	args []string
	// sockets are the listening sockets the relay serves (public, metrics, then internal if any), held by the bench
	// across restarts and closed by stop.
	sockets []*socket
}

// name is the relay's process name in logs and profile files.
func (r *relayProc) name() string {
	if r.proc == nil {
		return "relay-external"
	}
	return r.proc.name
}

// startRelay starts `switchboard serve` on sockets of its own and waits for /healthz, or describes Config.Relay.
func (e *env) startRelay(ctx context.Context, name string) (*relayProc, error) {
	if e.cfg.Relay != "" {
		return e.externalRelay()
	}
	return e.startRelayArgs(ctx, name, 0)
}

// startRelayArgs starts `switchboard serve` (never an external relay) on a public and a metrics socket, plus
// extraSockets more passed as fd:5, fd:6, … for extra arguments to name.
func (e *env) startRelayArgs(ctx context.Context, name string, extraSockets int, extra ...string) (*relayProc, error) {
	ss, err := sockets(2 + extraSockets)
	if err != nil {
		return nil, err
	}
	// The per-IP and per-caller limits exist against abuse; every simulated host and client here comes from
	// loopback with one token, so lift them.
	args := []string{"serve", "--listen", fdArg(0), "--metrics-listen", fdArg(1),
		"--upgrade-rate", "1000000", "--upgrade-burst", "1000000",
		"--max-conns-per-ip", "0", "--max-streams-per-client", "1000000"}
	args = append(args, e.cfg.RelayArgs...)
	args = append(args, extra...)
	r := &relayProc{Addr: ss[0].Addr, Base: "http://" + ss[0].Addr, Metrics: "http://" + ss[1].Addr, args: args, sockets: ss}
	if err := e.launchRelay(ctx, r, name); err != nil {
		closeSockets(ss)
		return nil, err
	}
	return r, nil
}

// launchRelay starts the relay process of r (again, on the same sockets) and waits until it is healthy.
func (e *env) launchRelay(ctx context.Context, r *relayProc, name string) error {
	p, err := startChild(e.exe, name, e.logDir, r.args, []string{
		"SWITCHBOARD_SECRET=" + e.secret, "SWITCHBOARD_LOG_LEVEL=" + childLogLevel,
		// pprof on the metrics listener: forced GCs before heap readings, and CPU profiles with Config.Profile.
		"SWITCHBOARD_PPROF=true",
	}, files(r.sockets)...)
	if err != nil {
		return err
	}
	r.proc = p
	if err := waitReady(ctx, r.Base+"/healthz", p, 20*time.Second, nil); err != nil {
		p.kill()
		return fmt.Errorf("start relay: %w", err)
	}
	return nil
}

// externalRelay describes the deployment at Config.Relay.
func (e *env) externalRelay() (*relayProc, error) {
	u, err := url.Parse(strings.TrimRight(e.cfg.Relay, "/"))
	if err != nil || u.Host == "" {
		return nil, fmt.Errorf("relay URL %q: want http://host:port", e.cfg.Relay)
	}
	r := &relayProc{Addr: u.Host, Base: u.Scheme + "://" + u.Host, Metrics: strings.TrimRight(e.cfg.RelayMetrics, "/")}
	if u.Scheme == "https" {
		return nil, fmt.Errorf("relay URL %q: the bench speaks plain HTTP/1.1; use an http:// address", e.cfg.Relay)
	}
	return r, nil
}

// stop ends a relay the bench started and releases its sockets; an external relay is left alone.
func (r *relayProc) stop() {
	if r.proc != nil {
		r.proc.stop(5 * time.Second)
	}
	closeSockets(r.sockets)
	r.sockets = nil
}

// PID is the relay's process id, 0 for an external relay.
func (r *relayProc) PID() int {
	if r.proc == nil {
		return 0
	}
	return r.proc.PID()
}

// tunnelURL is the WebSocket URL of the relay's tunnel endpoint.
func (r *relayProc) tunnelURL() string {
	return "ws" + strings.TrimPrefix(r.Base, "http") + "/v1/tunnel"
}

// hostPath is the relay path that reaches path on host id.
func hostPath(id, path string) string {
	return "/hosts/" + url.PathEscape(id) + path
}

// agentProc is a `switchboard host` child serving the origin through a relay.
type agentProc struct {
	proc *child
	ID   string
}

// startAgent starts `switchboard host` for host id in front of the origin and waits until a client call through
// the relay reaches the origin.
func (e *env) startAgent(ctx context.Context, r *relayProc, id string) (*agentProc, error) {
	token, err := e.hostToken(id)
	if err != nil {
		return nil, err
	}
	args := []string{"host", "--relay", r.Base, "--id", id, "--token", token, "--upstream", "http://" + e.origin.Addr}
	p, err := startChild(e.exe, "agent-"+id, e.logDir, args, []string{"SWITCHBOARD_LOG_LEVEL=" + childLogLevel})
	if err != nil {
		return nil, err
	}
	h := http.Header{"Authorization": {"Bearer " + e.clientToken}}
	if err := waitReady(ctx, r.Base+hostPath(id, "/small"), p, 20*time.Second, h); err != nil {
		p.stop(2 * time.Second)
		return nil, fmt.Errorf("start agent: %w", err)
	}
	return &agentProc{proc: p, ID: id}, nil
}

// stop ends the agent.
func (a *agentProc) stop() { a.proc.stop(5 * time.Second) }

// childLogLevel keeps children's logs to warnings: per-tunnel info lines at 10k tunnels cost the relay CPU.
const childLogLevel = "warn"

// tokenTTL is how long the bench's tokens live: longer than any run.
const tokenTTL = 24 * time.Hour

// hostToken mints a host token for id.
func (e *env) hostToken(id string) (string, error) {
	return auth.MintHost([]byte(e.secret), id, tokenTTL)
}

// mintClientToken mints a client token that reaches every host.
func mintClientToken(secret string) (string, error) {
	return auth.MintClient([]byte(secret), "bench", []string{"*"}, tokenTTL)
}
