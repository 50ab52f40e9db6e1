package relay

import (
	"time"

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

// Exchange kinds (the kind label).
const (
	kindHTTP      = "http"
	kindWebSocket = "websocket"
	// kindTCP = "tcp" (tcp.go)
)

// Exchange outcomes (the outcome label of switchboard_exchanges_total).
const (
	outcomeOK                  = "ok"
	outcomeUpstreamUnreachable = "upstream_unreachable" // the agent answered that it could not reach its service
)

// exchangeSeries lists every (outcome, kinds, classes) that switchboard_exchanges_total can count, so that each
// series exists at 0 from the start: an alert on rate(...{outcome="timeout"}) needs no "or vector(0)". A label
// combination missing here still counts (the series then appears on first use); TestLabelledSeriesExistAtStart
// checks that the paths it drives stay within this table.
var exchangeSeries = []struct {
	outcome string
	kinds   []string
	classes []string
}{
	// The host's answer, whatever its status; 1xx is a 101 (WebSocket, TCP) or a response cut before its head.
	{outcomeOK, allKinds, allClasses},
	// The client left: 499, or after a 101 / a host's head (the class of what was sent).
	{"client_gone", allKinds, allClasses},
	// No progress within --idle-timeout (504), or a client that took no bytes for --stall-timeout mid-body.
	{"timeout", allKinds, []string{"2xx", "3xx", "4xx", "5xx"}},
	{"upstream_failed", allKinds, []string{"5xx"}},
	{outcomeUpstreamUnreachable, allKinds, []string{"5xx"}},
	{"upstream_header_too_large", allKinds, []string{"5xx"}},
	{"host_offline", allKinds, []string{"5xx"}},
	{"relay_busy", allKinds, []string{"5xx"}},
	{"too_many_streams", allKinds, []string{"4xx"}},
	{"bad_request", allKinds, []string{"4xx"}},
	{"forbidden", allKinds, []string{"4xx"}},
	{"unauthorized", []string{kindHTTP}, []string{"4xx"}},
	{"not_found", []string{kindHTTP}, []string{"4xx"}},
	{outcomeSession, []string{kindHTTP}, []string{"3xx"}},
	// A WebSocket or TCP upgrade the host answered without 101: its status.
	{"refused", []string{kindWebSocket, kindTCP}, []string{"2xx", "3xx", "4xx", "5xx"}},
	{"hijack_failed", []string{kindWebSocket, kindTCP}, []string{"5xx"}},
}

var (
	allKinds   = []string{kindHTTP, kindWebSocket, kindTCP}
	allClasses = []string{"1xx", "2xx", "3xx", "4xx", "5xx"}
)

// tunnel close reasons (switchboard_tunnels_closed_total): tunnelConn.close and abort callers.
var closeReasons = []string{"session_ended", "replaced", "drain", "shutdown", "protocol", "ping_timeout",
	closeTokenExpired, "setup_failed", "revoked", "kicked", "refused"}

// latencyBuckets are the header latency buckets: fixed ones from 100 µs, cut at idle (the idle timeout, past which
// no header is waited for), with idle itself the last finite bucket.
func latencyBuckets(idle time.Duration) []float64 {
	fixed := []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60,
		120, 300, 600, 1800, 3600}
	top := idle.Seconds()
	var b []float64
	for _, v := range fixed {
		if v < top {
			b = append(b, v)
		}
	}
	return append(b, top)
}

func newMetrics(reg prometheus.Registerer, idle time.Duration, al *AccessLog) *metrics {
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
			Buckets: latencyBuckets(idle),
		}, []string{"kind"}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "switchboard", Name: "exchange_bytes_total",
			Help: "Body bytes carried, by direction (to_host, to_client).",
		}, []string{"direction"}),
		activeStreams: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "switchboard", Name: "exchanges_active",
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
	m.initSeries()
	lines := func(f func(*AccessLog) uint64) func() float64 {
		return func() float64 {
			if al == nil {
				return 0
			}
			return float64(f(al))
		}
	}
	reg.MustRegister(
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Namespace: "switchboard", Name: "access_log_lines_total",
			Help: "Lines written to the access log (0 without --access-log).",
		}, lines((*AccessLog).Written)),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Namespace: "switchboard", Name: "access_log_dropped_total",
			Help: "Access log lines dropped because the write buffer was full (a slow disk) or a write failed.",
		}, lines((*AccessLog).Dropped)),
	)
	return m
}

// initSeries creates every labelled series that can occur, at 0.
func (m *metrics) initSeries() {
	for _, e := range exchangeSeries {
		for _, k := range e.kinds {
			for _, c := range e.classes {
				m.exchanges.WithLabelValues(k, e.outcome, c)
			}
		}
	}
	for _, k := range allKinds {
		m.latency.WithLabelValues(k)
	}
	for _, o := range []string{regOK, regReplaced, regUnauthorized, regForbidden, regBadRequest, regRateLimited,
		regFull, regDraining, regFailed, regRefused} {
		m.registrations.WithLabelValues(o)
	}
	for _, d := range []string{"to_host", "to_client"} {
		m.bytes.WithLabelValues(d)
		m.tcpBytes.WithLabelValues(d)
	}
	for _, r := range closeReasons {
		m.tunnelsClosed.WithLabelValues(r)
	}
	for _, b := range []string{limitUpgrades, limitAuthFailed} {
		m.upgradesLimited.WithLabelValues(b)
	}
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
