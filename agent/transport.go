package agent

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/coder/websocket"

	"github.com/switchboard-relay/switchboard/internal/tunnel"
)

// Transports of the tunnel (Config.Transport).
const (
	// TransportAuto tries the raw transport first and falls back to WebSocket, for good, on a relay where the
	// raw upgrade does not come through (a proxy on the path that passes only WebSockets).
	TransportAuto = "auto"
	// TransportWebSocket always uses WebSocket: it passes every HTTP proxy, at some cost in throughput.
	TransportWebSocket = "websocket"
	// TransportRaw always uses the raw upgrade: yamux directly on the connection after the 101.
	TransportRaw = "raw"
)

// conn is an upgraded tunnel connection, before the multiplexer starts.
type conn struct {
	nc    net.Conn // what yamux runs on
	epoch uint64
	// closeWith ends the transport with a close code (WebSocket), or does nothing (raw: the relay sends codes).
	closeWith func(code websocket.StatusCode, msg string)
	raw       bool
}

// errNoRaw means the raw upgrade did not come through to the relay; WebSocket may.
var errNoRaw = errors.New("raw upgrade not passed through")

// connect upgrades a connection to relay with headers h, on the transport the config and past attempts choose.
func (l *Listener) connect(ctx context.Context, relay string, h http.Header) (c *conn, err error) {
	defer func() {
		if de, ok := err.(*DialError); ok {
			de.Relay = relay
		}
	}()
	mode := l.cfg.Transport
	l.mu.Lock()
	if mode == TransportAuto && l.wsOnly[relay] {
		mode = TransportWebSocket
	}
	l.mu.Unlock()
	if mode != TransportWebSocket {
		c, err = l.dialRaw(ctx, relay, h)
		if err == nil || mode == TransportRaw || !errors.Is(err, errNoRaw) {
			return c, err
		}
		l.log.Info("raw transport not passed through; using WebSocket for this relay", "relay", relay, "err", err)
		l.mu.Lock()
		l.wsOnly[relay] = true
		l.mu.Unlock()
	}
	return l.dialWebSocket(ctx, relay, h)
}

// dialWebSocket upgrades to a WebSocket carrying binary messages.
func (l *Listener) dialWebSocket(ctx context.Context, relay string, h http.Header) (*conn, error) {
	u, err := tunnelURL(relay)
	if err != nil {
		return nil, err
	}
	opts := &websocket.DialOptions{
		HTTPHeader:      h,
		Subprotocols:    []string{tunnel.Subprotocol},
		CompressionMode: websocket.CompressionDisabled,
	}
	if l.cfg.Dial != nil || l.cfg.TLSConfig != nil {
		opts.HTTPClient = &http.Client{Transport: &http.Transport{DialContext: l.cfg.Dial, TLSClientConfig: l.cfg.TLSConfig}}
	}
	ws, resp, err := websocket.Dial(ctx, u, opts)
	if err != nil {
		return nil, dialError(resp, err)
	}
	ws.SetReadLimit(-1) // NetConn streams each message; yamux bounds what is buffered.
	epoch, _ := strconv.ParseUint(resp.Header.Get(tunnel.HeaderEpoch), 10, 64)
	return &conn{
		nc:        tunnel.NetConn(l.ctx, ws),
		epoch:     epoch,
		closeWith: func(code websocket.StatusCode, msg string) { _ = ws.Close(code, msg) },
	}, nil
}

// dialRaw sends GET /v1/tunnel with Upgrade: switchboard.v1 on a plain (or TLS) connection. A 101 with that
// token means the relay now speaks yamux on the connection. Any answer that is not the relay's own refusal is
// errNoRaw, so the caller can fall back to WebSocket.
func (l *Listener) dialRaw(ctx context.Context, relay string, h http.Header) (*conn, error) {
	u, err := url.Parse(relay)
	if err != nil {
		return nil, err
	}
	secure := u.Scheme == "https" || u.Scheme == "wss"
	addr := u.Host
	if u.Port() == "" {
		addr = net.JoinHostPort(u.Hostname(), map[bool]string{false: "80", true: "443"}[secure])
	}
	dial := l.cfg.Dial
	if dial == nil {
		dial = (&net.Dialer{}).DialContext
	}
	nc, err := dial(ctx, "tcp", addr)
	if err != nil {
		return nil, &DialError{Err: err}
	}
	ok := false
	defer func() {
		if !ok {
			_ = nc.Close()
		}
	}()
	if dl, has := ctx.Deadline(); has {
		_ = nc.SetDeadline(dl)
	}
	// The handshake blocks on the connection, which knows only the deadline: end it as soon as ctx ends (the
	// listener closing), not when the connect timeout passes.
	tcp := nc
	stop := context.AfterFunc(ctx, func() { _ = tcp.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	if secure {
		cfg := &tls.Config{}
		if l.cfg.TLSConfig != nil {
			cfg = l.cfg.TLSConfig.Clone()
		}
		if cfg.ServerName == "" {
			cfg.ServerName = u.Hostname()
		}
		cfg.NextProtos = []string{"http/1.1"}
		tc := tls.Client(nc, cfg)
		if err := tc.HandshakeContext(ctx); err != nil {
			return nil, &DialError{Err: err}
		}
		nc = tc
	}
	path := strings.TrimSuffix(u.Path, "/") + tunnel.Path
	req := &http.Request{
		Method:     http.MethodGet,
		URL:        &url.URL{Path: path},
		Host:       u.Host,
		Header:     h.Clone(),
		Proto:      "HTTP/1.1",
		ProtoMajor: 1,
		ProtoMinor: 1,
	}
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", tunnel.RawUpgrade)
	if err := req.Write(nc); err != nil {
		return nil, &DialError{Err: err}
	}
	br := bufio.NewReader(nc)
	resp, err := http.ReadResponse(br, req)
	if err != nil {
		// No answer at all (a relay restarting, a dropped connection) says nothing about whether the path passes
		// the raw upgrade: fail this attempt, do not give up on raw for good. Proxies that refuse the upgrade
		// answer with an HTTP status, handled below.
		return nil, &DialError{Err: fmt.Errorf("read the relay's answer to the raw upgrade: %w", err)}
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		defer resp.Body.Close()
		de := &DialError{Status: resp.StatusCode, Err: errNoRaw}
		var body struct {
			Error struct{ Code, Message string } `json:"error"`
		}
		if json.NewDecoder(io.LimitReader(resp.Body, 1024)).Decode(&body) == nil && body.Error.Code != "" &&
			body.Error.Code != "websocket_required" {
			// The relay itself refused (auth, limits, draining): WebSocket would get the same answer.
			de.Code, de.Message, de.Err = body.Error.Code, body.Error.Message, nil
		}
		if de.Message == "" {
			de.Message = http.StatusText(resp.StatusCode)
		}
		return nil, de
	}
	if !strings.EqualFold(resp.Header.Get("Upgrade"), tunnel.RawUpgrade) {
		return nil, &DialError{Status: resp.StatusCode, Message: "101 without the raw upgrade", Err: errNoRaw}
	}
	_ = nc.SetDeadline(time.Time{})
	epoch, _ := strconv.ParseUint(resp.Header.Get(tunnel.HeaderEpoch), 10, 64)
	ok = true
	return &conn{
		nc:        tunnel.Coalesce(&tunnel.BufferedConn{Conn: nc, R: br}),
		epoch:     epoch,
		closeWith: func(websocket.StatusCode, string) {},
		raw:       true,
	}, nil
}
