package relay

import (
	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the relay's Prometheus series. Label values are closed enums: never host ids or user input.
type metrics struct {
	tunnels         prometheus.Gauge
	registrations   *prometheus.CounterVec // outcome
	exchanges       *prometheus.CounterVec // kind, outcome, class
	latency         *prometheus.HistogramVec
	bytes           *prometheus.CounterVec // direction
	activeStreams   prometheus.Gauge
	draining        prometheus.Gauge
	tunnelsClosed   *prometheus.CounterVec // reason
	upgradesLimited *prometheus.CounterVec // bucket
	clientStreams   prometheus.Counter     // exchanges refused by MaxStreamsPerClient
	replaceCut      prometheus.Counter     // replaced tunnels closed with exchanges still in flight (expiry.go)
	tcpBytes        *prometheus.CounterVec // direction; raw TCP streams only (tcp.go)
}

// Buckets of the per-IP tunnel upgrade limits.
const (
	limitUpgrades   = "upgrades"    // upgrades with a valid token: UpgradeRate, UpgradeBurst
	limitAuthFailed = "auth_failed" // failed upgrades: AuthFailRate, AuthFailBurst
)

// Registration outcomes.
const (
	regOK           = "ok"
	regReplaced     = "replaced_older"
	regUnauthorized = "unauthorized"
	regForbidden    = "forbidden"
	regBadRequest   = "bad_request"
	regRateLimited  = "rate_limited"
	regFull         = "full"
	regDraining     = "draining"
	regFailed       = "failed"
	regRefused      = "refused" // banned host or agent older than --min-agent-version (admin.go)
)

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		tunnels: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "switchboard", Name: "tunnels",
			Help: "Tunnels currently registered on this relay.",
		}),
		registrations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "switchboard", Name: "tunnel_registrations_total",
			Help: "Tunnel registration attempts by outcome.",
		}, []string{"outcome"}),
		exchanges: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "switchboard", Name: "exchanges_total",
			Help: "Client exchanges by kind (http, websocket, tcp), outcome and status class.",
		}, []string{"kind", "outcome", "class"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "switchboard", Name: "exchange_header_latency_seconds",
			Help:    "Time from a client request to the response header from the host.",
			Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}, []string{"kind"}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "switchboard", Name: "exchange_bytes_total",
			Help: "Body bytes carried, by direction (to_host, to_client).",
		}, []string{"direction"}),
		activeStreams: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "switchboard", Name: "active_exchanges",
			Help: "Client exchanges in flight.",
		}),
		draining: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "switchboard", Name: "draining",
			Help: "1 while the relay drains, else 0.",
		}),
		tunnelsClosed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "switchboard", Name: "tunnels_closed_total",
			Help: "Tunnels that ended, by reason.",
		}, []string{"reason"}),
		upgradesLimited: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "switchboard", Name: "tunnel_upgrades_rate_limited_total",
			Help: "Tunnel upgrades refused by a per-IP rate limit, by bucket: upgrades (with a valid token), auth_failed.",
		}, []string{"bucket"}),
		clientStreams: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "switchboard", Name: "client_stream_limit_refused_total",
			Help: "Exchanges refused 429 because their caller had its per-host share (MaxStreamsPerClient) in flight.",
		}),
	}
	reg.MustRegister(m.clientStreams)
	reg.MustRegister(m.tunnels, m.registrations, m.exchanges, m.latency, m.bytes, m.activeStreams, m.draining,
		m.tunnelsClosed, m.upgradesLimited)
	m.replaceCut = prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: "switchboard", Name: "replaced_tunnels_cut_total",
		Help: "Tunnels replaced by a newer registration of their host that were closed with exchanges still in flight, after the replace grace.",
	})
	reg.MustRegister(m.replaceCut)
	m.tcpBytes = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "switchboard", Name: "tcp_bytes_total",
		Help: "Bytes of raw TCP streams (as WebSocket frames), by direction (to_host, to_client). Their streams are counted in exchanges_total{kind=\"tcp\"} by outcome.",
	}, []string{"direction"})
	reg.MustRegister(m.tcpBytes)
	return m
}

// statusClass maps an HTTP status to its class label.
func statusClass(code int) string {
	switch {
	case code < 200:
		return "1xx"
	case code < 300:
		return "2xx"
	case code < 400:
		return "3xx"
	case code < 500:
		return "4xx"
	default:
		return "5xx"
	}
}
