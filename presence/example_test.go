package presence_test

import (
	"context"
	"errors"
	"fmt"

	"github.com/switchboard-relay/switchboard/agent"
	"github.com/switchboard-relay/switchboard/internal/relaytest"
	"github.com/switchboard-relay/switchboard/presence"
)

// Watch a host come and go. An id the relay did not issue as the starting point makes it answer with a Reset at
// once, so the example knows the stream is connected before the host comes.
func ExampleClient_Watch() {
	relay := relaytest.StartExample() // a real relay, in this process
	defer relay.Close()
	ctx := context.Background()

	c := &presence.Client{Relay: relay.URL, Token: relay.ClientToken("*")}
	var host *agent.Listener
	done := errors.New("done")
	err := c.Watch(ctx, "unknown", func(e presence.Event) error {
		switch e.Type {
		case presence.Reset: // connected; re-read the state with List (empty here), then bring a host up
			hosts, err := c.List(ctx, presence.ListOptions{})
			fmt.Println("reset,", len(hosts), "hosts")
			host, err = agent.Listen(ctx, agent.Config{Relays: []string{relay.URL}, HostID: "laptop",
				Token: relay.HostToken("laptop"), Name: "Laptop"})
			return err
		case presence.Online:
			fmt.Println(e.Type, e.HostID, e.Metadata.Name)
			return host.Close()
		default:
			fmt.Println(e.Type, e.HostID)
			return done
		}
	})
	fmt.Println(err == done)
	// Output:
	// reset, 0 hosts
	// online laptop Laptop
	// offline laptop
	// true
}
