package agent_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"

	"github.com/switchboard-relay/switchboard/agent"
	"github.com/switchboard-relay/switchboard/internal/relaytest"
)

// A Go program serves HTTP through a relay: clients reach the handler at <relay>/hosts/<host id>/....
func ExampleListen() {
	relay := relaytest.StartExample() // a real relay, in this process
	defer relay.Close()
	ctx := context.Background()

	ln, err := agent.Listen(ctx, agent.Config{
		Relays: []string{relay.URL},
		HostID: "laptop",
		Token:  relay.HostToken("laptop"),
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer ln.Close()
	go http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello from the laptop: %s", r.URL.Path)
	}))
	if err := ln.WaitUp(ctx); err != nil {
		fmt.Println(err)
		return
	}

	// A client of the relay.
	req, _ := http.NewRequest("GET", relay.URL+"/hosts/laptop/hi", nil)
	req.Header.Set("Authorization", "Bearer "+relay.ClientToken("laptop"))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	fmt.Println(resp.StatusCode, string(body))
	// Output: 200 hello from the laptop: /hi
}

// A refused token is permanent with a static Config.Token: the listener stops and says why.
func ExampleErrAuth() {
	relay := relaytest.StartExample()
	defer relay.Close()

	ln, err := agent.Listen(context.Background(), agent.Config{
		Relays: []string{relay.URL},
		HostID: "laptop",
		Token:  relay.HostToken("someone-else"), // bound to another host id
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer ln.Close()
	err = http.Serve(ln, http.NotFoundHandler())
	fmt.Println(errors.Is(err, agent.ErrAuth))
	var de *agent.DialError
	if errors.As(err, &de) {
		fmt.Println(de.Status, de.Code)
	}
	// Output:
	// true
	// 403 forbidden
}
