// Command app is a separate module that uses Switchboard's public packages the way an application does: it serves
// an HTTP handler through agent.Listen, watches presence, and receives signed webhooks. It prints one line per
// thing it saw, for the test that runs it; "stop" on stdin closes the host, EOF ends the program.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/switchboard-relay/switchboard/agent"
	"github.com/switchboard-relay/switchboard/presence"
	"github.com/switchboard-relay/switchboard/webhook"
)

var (
	outMu sync.Mutex
	out   = bufio.NewWriter(os.Stdout)
)

func say(format string, args ...any) {
	outMu.Lock()
	defer outMu.Unlock()
	fmt.Fprintf(out, format+"\n", args...)
	out.Flush()
}

func main() {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	relay, hostID := os.Getenv("RELAY"), os.Getenv("HOST_ID")
	secret := []byte(os.Getenv("WEBHOOK_SECRET"))

	// Webhooks: the receiver listens on the socket the test handed over (fd 3).
	hookLn, err := net.FileListener(os.NewFile(3, "webhook"))
	if err != nil {
		say("error: webhook listener: %v", err)
		os.Exit(1)
	}
	go http.Serve(hookLn, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		if err := webhook.Verify(secret, r.Header.Get(webhook.SignatureHeader), body, 5*time.Minute); err != nil {
			say("webhook rejected %v", errors.Is(err, webhook.ErrSignatureMismatch))
			http.Error(w, "bad signature", http.StatusUnauthorized)
			return
		}
		var e webhook.Event
		if err := json.Unmarshal(body, &e); err != nil {
			http.Error(w, "bad body", http.StatusBadRequest)
			return
		}
		say("webhook %s %s", e.Type, e.HostID)
		w.WriteHeader(http.StatusNoContent)
	}))

	// The host, started once the presence stream is connected so the watcher sees it come.
	var ln *agent.Listener
	hostUp := make(chan struct{})
	startHost := func() {
		ln, err = agent.Listen(ctx, agent.Config{Relays: []string{relay}, HostID: hostID,
			Token: os.Getenv("HOST_TOKEN"), Name: "sdk app"})
		if err != nil {
			say("error: listen: %v", err)
			os.Exit(1)
		}
		go http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintf(w, "hello from %s at %s", hostID, r.URL.Path)
		}))
		if err := ln.WaitUp(ctx); err != nil {
			say("error: wait up: %v", err)
			os.Exit(1)
		}
		say("host up")
		close(hostUp)
	}

	pc := &presence.Client{Relay: relay, Token: os.Getenv("CLIENT_TOKEN")}
	go func() {
		// An id the relay did not issue: it answers with a reset at once, which tells that the stream is connected.
		err := pc.Watch(ctx, "start", func(e presence.Event) error {
			if e.Type == presence.Reset {
				hosts, err := pc.List(ctx, presence.ListOptions{})
				if err != nil {
					return err
				}
				say("presence reset, %d hosts", len(hosts))
				go startHost()
				return nil
			}
			say("presence %s %s %s", e.Type, e.HostID, nameOf(e))
			return nil
		})
		if err != nil && ctx.Err() == nil {
			say("error: watch: %v", err)
		}
	}()

	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		if in.Text() == "stop" {
			<-hostUp
			ln.Close()
			say("host closed")
		}
	}
}

func nameOf(e presence.Event) string {
	if e.Metadata == nil {
		return "-"
	}
	return fmt.Sprintf("%q", e.Metadata.Name)
}
