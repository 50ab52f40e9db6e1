package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/coder/websocket"

	"github.com/switchboard-relay/switchboard/internal/tcpstream"
	"github.com/switchboard-relay/switchboard/internal/tunnel"
)

// tcpDialTimeout bounds the agent's connection attempt to a published TCP service.
const tcpDialTimeout = 10 * time.Second

// CheckTCPServices validates published TCP services: names per tunnel.CheckServiceName, addresses host:port.
func CheckTCPServices(services map[string]string) error {
	for name, addr := range services {
		if err := tunnel.CheckServiceName(name); err != nil {
			return fmt.Errorf("agent: tcp service: %w", err)
		}
		if _, port, err := net.SplitHostPort(addr); err != nil || port == "" {
			return fmt.Errorf("agent: tcp service %s: address %q: want host:port", name, addr)
		}
	}
	return nil
}

// TCPLabelValue is the value of the tunnel.TCPLabel metadata label for services: their names, sorted and
// comma-separated.
func TCPLabelValue(services map[string]string) string {
	return strings.Join(slices.Sorted(maps.Keys(services)), ",")
}

// TCPHandler serves the published TCP services: a WebSocket upgrade of tunnel.TCPPathPrefix+name is answered by
// the agent itself and bridged to services[name] (tcpstream.Bridge). Nothing else on the host is reachable this
// way: the client names a service, never an address. Every other request goes to next; if next is nil it is
// answered 404. Wait waits for the bridges in flight (http.Server.Shutdown does not wait for hijacked streams).
type TCPHandler struct {
	// Immutable after NewTCPHandler.
	services map[string]string
	next     http.Handler
	log      *slog.Logger

	wg sync.WaitGroup // one per bridge in flight
}

// NewTCPHandler returns a handler for services (name → host:port), in front of next (nil for none). A nil
// logger discards.
func NewTCPHandler(services map[string]string, next http.Handler, log *slog.Logger) (*TCPHandler, error) {
	if err := CheckTCPServices(services); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &TCPHandler{services: maps.Clone(services), next: next, log: log}, nil
}

// Wait blocks until every bridge in flight has ended.
func (h *TCPHandler) Wait() { h.wg.Wait() }

func (h *TCPHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	name, ok, err := tunnel.TCPService(r.URL.EscapedPath())
	switch {
	case !ok && h.next != nil:
		h.next.ServeHTTP(w, r)
		return
	case !ok:
		tcpError(w, http.StatusNotFound, "not_found", "this host serves no HTTP upstream, only TCP services")
		return
	case err != nil:
		tcpError(w, http.StatusBadRequest, "invalid_service", err.Error())
		return
	}
	addr, found := h.services[name]
	if !found {
		tcpError(w, http.StatusNotFound, "unknown_service", "this host publishes no TCP service of that name")
		return
	}
	if !strings.EqualFold(r.Header.Get("Upgrade"), "websocket") {
		tcpError(w, http.StatusBadRequest, "websocket_required", "a TCP service is reached by a WebSocket upgrade")
		return
	}
	h.wg.Add(1)
	defer h.wg.Done()
	log := h.log.With("service", name)
	dctx, cancel := context.WithTimeout(r.Context(), tcpDialTimeout)
	nc, err := (&net.Dialer{}).DialContext(dctx, "tcp", addr)
	cancel()
	if err != nil {
		log.Warn("tcp service unreachable", "err", err)
		w.Header().Set(tunnel.HeaderUpstreamError, tunnel.UpstreamUnreachable)
		tcpError(w, http.StatusBadGateway, "service_unreachable", "the host agent could not connect to the service")
		return
	}
	tc, _ := nc.(*net.TCPConn)
	ws, err := websocket.Accept(w, r, &websocket.AcceptOptions{
		// The relay authenticated the client and applies its own origin rules; the agent sees the relay's Host.
		InsecureSkipVerify: true,
		CompressionMode:    websocket.CompressionDisabled,
	})
	if err != nil {
		_ = nc.Close()
		return
	}
	start := time.Now()
	res, err := tcpstream.Bridge(context.WithoutCancel(r.Context()), ws, tc)
	attrs := []any{"sent", res.Sent, "received", res.Received, "duration", time.Since(start).Round(time.Millisecond).String()}
	if err != nil && !errors.Is(err, context.Canceled) {
		log.Info("tcp stream aborted", append(attrs, "err", err)...)
		return
	}
	log.Debug("tcp stream ended", attrs...)
}

// tcpError answers with the relay's JSON error shape, which `switchboard connect` shows.
func tcpError(w http.ResponseWriter, status int, code, message string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{"error": map[string]string{"code": code, "message": message}})
}
