// Command switchboard is the relay (serve), the host agent (host), the token tool (token) and the load tool (bench).
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/switchboard-relay/switchboard/internal/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	// The first signal asks for a drain; restoring the default handlers then lets a second one stop the process
	// at once, as an operator pressing Ctrl-C twice expects.
	context.AfterFunc(ctx, stop)
	code := cli.Main(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
