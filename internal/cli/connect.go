package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"

	"github.com/switchboard-relay/switchboard/internal/tcpstream"
	"github.com/switchboard-relay/switchboard/internal/tunnel"
)

// ConnectCmd is `switchboard connect HOST SERVICE`.
type ConnectCmd struct {
	Host    string `arg:"" help:"Host id."`
	Service string `arg:"" help:"Name of a TCP service the host publishes (switchboard host --tcp NAME=ADDR)."`
	tcpClientFlags

	stdin  io.ReadCloser  `kong:"-"` // nil: the process's stdin
	stdout io.WriteCloser `kong:"-"` // nil: the process's stdout
}

// tcpClientFlags are the flags `connect` and `forward` share.
type tcpClientFlags struct {
	Relay   string `help:"Relay base URL (http, https, ws, wss)." required:"" env:"SWITCHBOARD_RELAY"`
	Token   string `help:"Client token (see 'switchboard token client')." env:"SWITCHBOARD_CLIENT_TOKEN"`
	RelayCA string `name:"relay-ca" help:"PEM CA bundle that verifies an https relay's certificate (instead of the system roots)." env:"SWITCHBOARD_RELAY_CA"`
}

// check validates the shared flags and the host and service arguments.
func (f *tcpClientFlags) check(host, service string) error {
	if err := tunnel.CheckHostID(host); err != nil {
		return fmt.Errorf("host %q: %w", host, err)
	}
	if err := tunnel.CheckServiceName(service); err != nil {
		return fmt.Errorf("service: %w", err)
	}
	if _, err := tcpstream.URL(f.Relay, host, service); err != nil {
		return fmt.Errorf("--relay: %w", err)
	}
	if f.Token == "" {
		return errors.New("a client token is required: --token or SWITCHBOARD_CLIENT_TOKEN")
	}
	return nil
}

// dialOptions builds the upgrade client: the system's roots, or --relay-ca.
func (f *tcpClientFlags) dialOptions() (tcpstream.DialOptions, error) {
	if f.RelayCA == "" {
		return tcpstream.DialOptions{}, nil
	}
	tr, err := relayCATransport(f.RelayCA)
	if err != nil {
		return tcpstream.DialOptions{}, err
	}
	return tcpstream.DialOptions{HTTPClient: &http.Client{Transport: tr}}, nil
}

// Run opens the stream and bridges it to stdin and stdout until both directions end. Exit 1 when the relay or
// host refuses (the reason on stderr), 2 for bad flags.
func (c *ConnectCmd) Run(ctx context.Context, g *Globals) error {
	if err := c.check(c.Host, c.Service); err != nil {
		return &exitError{code: 2, err: err}
	}
	opts, err := c.dialOptions()
	if err != nil {
		return &exitError{code: 2, err: err}
	}
	ws, err := tcpstream.Dial(ctx, c.Relay, c.Host, c.Service, c.Token, opts)
	if err != nil {
		return &exitError{code: 1, err: err}
	}
	in, out := c.stdin, c.stdout
	if in == nil {
		in = pollableStdin()
	}
	if out == nil {
		out = os.Stdout
	}
	if _, err := tcpstream.Bridge(ctx, ws, &stdio{in: in, out: out}); err != nil && ctx.Err() == nil {
		return &exitError{code: 1, err: fmt.Errorf("connect %s %s: %w", c.Host, c.Service, err)}
	}
	return nil
}

// stdio is stdin and stdout as the local side of a bridge.
type stdio struct {
	in  io.ReadCloser
	out io.WriteCloser
}

func (s *stdio) Read(p []byte) (int, error)  { return s.in.Read(p) }
func (s *stdio) Write(p []byte) (int, error) { return s.out.Write(p) }
func (s *stdio) CloseWrite() error           { return s.out.Close() }
func (s *stdio) Close() error {
	_ = s.out.Close()
	return s.in.Close()
}
