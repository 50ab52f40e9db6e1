package tcpstream

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

	"github.com/coder/websocket"

	"github.com/switchboard-relay/switchboard/internal/tunnel"
)

// DialError is a stream the relay (or the host's agent) refused, with the HTTP status and error code it sent.
type DialError struct {
	Host, Service string
	Status        int    // 0 if no answer came
	Code          string // the error code of the JSON answer, if any
	Message       string
	Err           error
}

func (e *DialError) Error() string {
	switch {
	case e.Status == 0:
		return fmt.Sprintf("connect %s %s: %v", e.Host, e.Service, e.Err)
	case e.Code == "host_offline":
		return fmt.Sprintf("connect %s %s: host %s is offline (503 host_offline)", e.Host, e.Service, e.Host)
	case e.Code == "unknown_service":
		return fmt.Sprintf("connect %s %s: host %s publishes no TCP service %q (404 unknown_service)",
			e.Host, e.Service, e.Host, e.Service)
	case e.Status == http.StatusUnauthorized:
		return fmt.Sprintf("connect %s %s: the relay refused the client token (401 %s): %s",
			e.Host, e.Service, e.Code, e.Message)
	case e.Status == http.StatusForbidden:
		return fmt.Sprintf("connect %s %s: the client token may not reach it (403 %s): %s",
			e.Host, e.Service, e.Code, e.Message)
	}
	return fmt.Sprintf("connect %s %s: %d %s: %s", e.Host, e.Service, e.Status, e.Code, e.Message)
}

func (e *DialError) Unwrap() error { return e.Err }

// DialOptions tune Dial. The zero value uses http.DefaultClient's transport.
type DialOptions struct {
	// HTTPClient makes the upgrade request (a private CA, a test server's client). If nil, http.DefaultClient.
	HTTPClient *http.Client
}

// URL returns the WebSocket URL of hostID's TCP service on relay (an http, https, ws or wss base URL).
func URL(relay, hostID, service string) (string, error) {
	if err := tunnel.CheckHostID(hostID); err != nil {
		return "", err
	}
	if err := tunnel.CheckServiceName(service); err != nil {
		return "", err
	}
	u, err := tunnel.WebSocketBase(relay)
	if err != nil {
		return "", err
	}
	escBase := strings.TrimSuffix(u.EscapedPath(), "/")
	base := strings.TrimSuffix(u.Path, "/")
	u.Path = base + "/hosts/" + hostID + tunnel.TCPPathPrefix + service
	u.RawPath = escBase + "/hosts/" + url.PathEscape(hostID) + tunnel.TCPPathPrefix + service
	u.RawQuery, u.Fragment = "", ""
	return u.String(), nil
}

// Dial opens hostID's TCP service through relay with a client token. A refusal is a *DialError.
func Dial(ctx context.Context, relay, hostID, service, token string, opts DialOptions) (*websocket.Conn, error) {
	target, err := URL(relay, hostID, service)
	if err != nil {
		return nil, err
	}
	h := http.Header{}
	if token != "" {
		h.Set("Authorization", "Bearer "+token)
	}
	ws, resp, err := websocket.Dial(ctx, target, &websocket.DialOptions{HTTPClient: opts.HTTPClient, HTTPHeader: h})
	if err == nil {
		return ws, nil
	}
	de := &DialError{Host: hostID, Service: service, Err: err}
	if resp != nil && resp.StatusCode != http.StatusSwitchingProtocols {
		de.Status = resp.StatusCode
		var body struct {
			Error struct{ Code, Message string } `json:"error"`
		}
		if resp.Body != nil {
			b, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
			if json.Unmarshal(b, &body) == nil {
				de.Code, de.Message = tunnel.CleanText(body.Error.Code, 64), tunnel.CleanText(body.Error.Message, 256)
			}
		}
		if de.Code == "" {
			de.Message = http.StatusText(resp.StatusCode)
		}
	}
	return nil, de
}

// IsRefused reports whether err is a refusal with an HTTP status (as opposed to an unreachable relay).
func IsRefused(err error) bool {
	var de *DialError
	return errors.As(err, &de) && de.Status != 0
}
