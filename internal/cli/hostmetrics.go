package cli

import (
	"bufio"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/switchboard-relay/switchboard/agent"
	"github.com/switchboard-relay/switchboard/internal/tunnel"
	"github.com/switchboard-relay/switchboard/internal/version"
)

// hostMetrics are the agent's own series (`switchboard host --metrics-listen`), on a registry of their own.
type hostMetrics struct {
	reg       *prometheus.Registry
	ln        atomic.Pointer[agent.Listener] // set once agent.Host created it
	exchanges *prometheus.CounterVec         // kind, outcome
	active    prometheus.Gauge
}

func newHostMetrics() *hostMetrics {
	m := &hostMetrics{reg: prometheus.NewRegistry()}
	stats := func(f func(agent.Stats) float64) func() float64 {
		return func() float64 {
			ln := m.ln.Load()
			if ln == nil {
				return 0
			}
			return f(ln.Stats())
		}
	}
	m.exchanges = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "switchboard", Subsystem: "agent", Name: "exchanges_total",
		Help: "Exchanges (streams) the relay opened to this agent, by kind (http, websocket, tcp) and outcome (ok, upstream_unreachable, client_gone).",
	}, []string{"kind", "outcome"})
	for _, k := range []string{"http", "websocket", "tcp"} {
		for _, o := range []string{agent.OutcomeOK, agent.OutcomeUnreachable, agent.OutcomeClientGone} {
			m.exchanges.WithLabelValues(k, o)
		}
	}
	m.active = prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: "switchboard", Subsystem: "agent", Name: "exchanges_active",
		Help: "Exchanges in flight through this agent.",
	})
	m.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		version.NewCollector(), m.exchanges, m.active,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: "switchboard", Subsystem: "agent", Name: "tunnel_up",
			Help: "1 while a tunnel to the relay is up, else 0.",
		}, stats(func(s agent.Stats) float64 { return float64(min(s.Tunnels, 1)) })),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: "switchboard", Subsystem: "agent", Name: "tunnels",
			Help: "Tunnels up: 2 while a drain move or a token renewal holds the old and the new one.",
		}, stats(func(s agent.Stats) float64 { return float64(s.Tunnels) })),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Namespace: "switchboard", Subsystem: "agent", Name: "reconnects_total",
			Help: "Tunnels opened after the first: reconnects after a loss, drain moves and token renewals.",
		}, stats(func(s agent.Stats) float64 { return float64(max(s.Connects, 1) - 1) })),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Namespace: "switchboard", Subsystem: "agent", Name: "connect_failures_total",
			Help: "Tunnel connection attempts that failed (relay unreachable or refusing, token refused).",
		}, stats(func(s agent.Stats) float64 { return float64(s.FailedAttempts) })),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: "switchboard", Subsystem: "agent", Name: "ping_rtt_seconds",
			Help: "Round trip of the last ping to the relay on the newest tunnel, measured every --ping-interval; 0 before the first.",
		}, stats(func(s agent.Stats) float64 { return s.PingRTT.Seconds() })),
	)
	return m
}

// tunnelUp reports whether a tunnel is up.
func (m *hostMetrics) tunnelUp() bool {
	ln := m.ln.Load()
	return ln != nil && ln.Tunnels() > 0
}

// handler serves /metrics, and /healthz: 200 while a tunnel is up, 503 otherwise.
func (m *hostMetrics) handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		if !m.tunnelUp() {
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = w.Write([]byte("tunnel down\n"))
			return
		}
		_, _ = w.Write([]byte("tunnel up\n"))
	})
	return mux
}

// exchange counts one exchange of the agent's bridge (agent.UpstreamOptions.Exchange).
func (m *hostMetrics) exchange(kind string) func(outcome string) {
	m.active.Inc()
	return func(outcome string) {
		m.active.Dec()
		m.exchanges.WithLabelValues(kind, outcome).Inc()
	}
}

// wrap counts the exchanges h serves (the streams the bridge hands to the TCP services).
func (m *hostMetrics) wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		kind := "http"
		if _, isTCP, _ := tunnel.TCPService(r.URL.EscapedPath()); isTCP {
			kind = "tcp"
		} else if strings.EqualFold(r.Header.Get("Upgrade"), "websocket") {
			kind = "websocket"
		}
		m.active.Inc()
		defer m.active.Dec()
		sw := &statusWriter{ResponseWriter: w}
		h.ServeHTTP(sw, r)
		outcome := agent.OutcomeOK
		switch {
		case sw.unreachable:
			outcome = agent.OutcomeUnreachable
		case sw.status == 0 && r.Context().Err() != nil:
			outcome = agent.OutcomeClientGone
		}
		m.exchanges.WithLabelValues(kind, outcome).Inc()
	})
}

// statusWriter notes whether an answer was sent and whether it was the agent's own upstream failure.
type statusWriter struct {
	http.ResponseWriter
	status      int
	unreachable bool
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 && (code >= 200 || code == http.StatusSwitchingProtocols) {
		w.status = code
		w.unreachable = code >= 500 && w.Header().Get(tunnel.HeaderUpstreamError) != ""
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(p []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(p)
}

// Unwrap lets http.ResponseController reach Flush and deadlines.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// Hijack hands over the stream of an upgrade (WebSocket, TCP service).
func (w *statusWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	c, brw, err := http.NewResponseController(w.ResponseWriter).Hijack()
	if err == nil && w.status == 0 {
		w.status = http.StatusSwitchingProtocols
	}
	return c, brw, err
}

// serveHostMetrics serves m on ln until the returned stop is called.
func serveHostMetrics(m *hostMetrics, ln net.Listener, log *slog.Logger) (stop func()) {
	srv := &http.Server{Handler: m.handler(), ReadHeaderTimeout: 10 * time.Second, IdleTimeout: time.Minute}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("metrics listener failed", "addr", ln.Addr().String(), "err", err)
		}
	}()
	return func() {
		_ = srv.Close()
		<-done
	}
}
