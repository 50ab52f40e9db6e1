// Package cli turns the command line into configuration and runs the subcommand: flags → Config → Run.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"

	"github.com/alecthomas/kong"

	"github.com/switchboard-relay/switchboard/internal/auth"
	"github.com/switchboard-relay/switchboard/internal/version"
)

// exitError carries a process exit code out of a subcommand.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

// Globals are given to every subcommand.
type Globals struct {
	LogLevel string `help:"Log level: debug, info, warn, error." default:"info" env:"SWITCHBOARD_LOG_LEVEL" enum:"debug,info,warn,error"`

	stdout, stderr io.Writer
}

// logger returns the JSON logger every subcommand logs with.
func (g *Globals) logger() *slog.Logger {
	var lvl slog.Level
	_ = lvl.UnmarshalText([]byte(g.LogLevel))
	return slog.New(slog.NewJSONHandler(g.stderr, &slog.HandlerOptions{Level: lvl}))
}

// CLI is the switchboard command line.
type CLI struct {
	Globals

	Serve   ServeCmd   `cmd:"" help:"Run the relay."`
	Host    HostCmd    `cmd:"" help:"Keep a tunnel to a relay and serve an upstream through it."`
	Token   TokenCmd   `cmd:"" help:"Mint HS256 tokens signed with SWITCHBOARD_SECRET."`
	Admin   AdminCmd   `cmd:"" help:"Operate a running relay cluster through its admin API (needs an admin token)."`
	Connect ConnectCmd `cmd:"" help:"Bridge stdin/stdout to a host's TCP service (for ssh -o ProxyCommand)."`
	Forward ForwardCmd `cmd:"" help:"Accept local TCP connections and carry each to a host's TCP service."`
	Bench   BenchCmd   `cmd:"" help:"Measure the relay against a direct connection."`
	Version VersionCmd `cmd:"" help:"Print the version."`

	PrintVersion kong.VersionFlag `name:"version" help:"Print the version and exit."`
}

// Main parses args and runs the chosen subcommand; it returns the process exit code.
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var c CLI
	c.stdout, c.stderr = stdout, stderr
	exit := -1
	parser, err := kong.New(&c,
		kong.Name("switchboard"),
		kong.Description("A relay that carries HTTP, streams and WebSockets to hosts behind NAT, by host id."),
		kong.Writers(stdout, stderr),
		kong.Exit(func(code int) { exit = code; panic(exitPanic{}) }),
		kong.BindTo(ctx, (*context.Context)(nil)),
		kong.Bind(&c.Globals),
		kong.Vars{"version": version.String()},
	)
	if err != nil {
		fmt.Fprintln(stderr, "switchboard:", err)
		return 2
	}
	kctx, code, ok := parse(parser, args, &exit)
	if !ok {
		return code
	}
	if err := kctx.Run(); err != nil {
		var ee *exitError
		if errors.As(err, &ee) {
			if ee.err != nil && ee.code != 0 {
				fmt.Fprintln(stderr, "switchboard:", ee.err)
			}
			return ee.code
		}
		fmt.Fprintln(stderr, "switchboard:", err)
		return 1
	}
	return 0
}

type exitPanic struct{}

// parse parses args; --help and friends end through kong.Exit, which panics with exitPanic so that Main returns
// the code instead of calling os.Exit.
func parse(p *kong.Kong, args []string, exit *int) (kctx *kong.Context, code int, ok bool) {
	defer func() {
		if r := recover(); r != nil {
			if _, isExit := r.(exitPanic); !isExit {
				panic(r)
			}
			kctx, code, ok = nil, *exit, false
		}
	}()
	kctx, err := p.Parse(args)
	if err != nil {
		fmt.Fprintln(p.Stderr, "switchboard:", err)
		return nil, 2, false
	}
	return kctx, 0, true
}

// checkSecret refuses a secret shorter than auth.MinSecretLen bytes; empty is the caller's to handle. The error
// names the flag and how to make a good secret, never the secret.
func checkSecret(flag, secret string) error {
	if secret == "" || len(secret) >= auth.MinSecretLen {
		return nil
	}
	return fmt.Errorf("%s is %d bytes: a secret must be at least %d random bytes; make one with "+
		"`openssl rand -base64 32` or `head -c 32 /dev/urandom | base64`", flag, len(secret), auth.MinSecretLen)
}

// splitList splits a comma-separated flag value, dropping empty parts.
func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}
