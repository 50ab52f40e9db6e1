package webhook

import "github.com/prometheus/client_golang/prometheus"

// The result label of switchboard_webhook_attempts_total: one value per way an HTTP attempt can end.
const (
	resultOK          = "ok"            // 2xx
	resultTimeout     = "timeout"       // no complete response within Config.Timeout, or a 408
	resultNetwork     = "network_error" // dial, TLS, reset, malformed response
	resultServerError = "server_error"  // 5xx
	resultRateLimited = "rate_limited"  // 429
	resultRejected    = "rejected"      // any other 4xx
	resultRedirect    = "redirect"      // 3xx: redirects are never followed
	outcomeDelivered  = "delivered"
	outcomeDropped    = "dropped"
)

type metrics struct {
	deliveries *prometheus.CounterVec
	attempts   *prometheus.CounterVec
	gaps       prometheus.Counter
	leader     prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer, lag func() float64) *metrics {
	m := &metrics{
		deliveries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "switchboard_webhook_deliveries_total",
			Help: "Events finished per webhook URL, by outcome: delivered (a 2xx) or dropped (rejected too often).",
		}, []string{"outcome"}),
		attempts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "switchboard_webhook_attempts_total",
			Help: "HTTP attempts to deliver webhook events, by result.",
		}, []string{"result"}),
		gaps: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "switchboard_webhook_gaps_total",
			Help: "Times a webhook cursor pointed before the oldest retained presence event, so events were skipped.",
		}),
		leader: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "switchboard_webhook_leader",
			Help: "1 while this replica is the one delivering webhooks, 0 while it stands by.",
		}),
	}
	for _, o := range []string{outcomeDelivered, outcomeDropped} {
		m.deliveries.WithLabelValues(o)
	}
	for _, r := range []string{resultOK, resultTimeout, resultNetwork, resultServerError, resultRateLimited,
		resultRejected, resultRedirect} {
		m.attempts.WithLabelValues(r)
	}
	reg.MustRegister(m.deliveries, m.attempts, m.gaps, m.leader,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "switchboard_webhook_lag_seconds",
			Help: "Age of the oldest presence event not yet delivered to every webhook URL; 0 when all are caught up.",
		}, lag))
	return m
}

// RegisterUnused registers the webhook families at 0 for a relay that delivers no webhooks, so that they exist on
// every relay (dashboards and alerts need not special-case their absence).
func RegisterUnused(reg prometheus.Registerer) {
	newMetrics(reg, func() float64 { return 0 })
}
