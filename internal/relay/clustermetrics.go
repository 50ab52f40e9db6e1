package relay

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/switchboard-relay/switchboard/internal/directory"
	"github.com/switchboard-relay/switchboard/internal/peering"
)

// clusterMetrics are the series of routing between replicas and of the directory.
type clusterMetrics struct {
	dirSeconds *prometheus.HistogramVec // op
	dirErrors  *prometheus.CounterVec   // op
	forwards   *prometheus.CounterVec   // outcome
	missWaits  *prometheus.CounterVec   // outcome
	drainMoves prometheus.Counter
	dirUp      prometheus.Gauge       // the directory's health state (dirhealth.go)
	asks       *prometheus.CounterVec // result (peering.AskFound, …)

	hopRejections *prometheus.CounterVec // reason (peering.Reason)
}

// Forward outcomes (switchboard_forwards_total). The first group is counted by the replica that forwards, the
// second by the replica that receives.
const (
	fwdOK              = "ok"
	fwdFlyReplay       = "fly_replay"
	fwdPeerUnreachable = "peer_unreachable"
	fwdPeerTimeout     = "peer_timeout"
	fwdPeerFailed      = "peer_failed"
	fwdClientGone      = "client_gone"
	fwdBadRequest      = "bad_request" // the client's request body failed
	fwdAskedPeers      = "asked_peers" // the directory was unreachable and a peer said it holds the host

	fwdReceived     = "received"
	fwdReceivedMiss = "received_miss"
	fwdRejected     = "rejected"
)

func newClusterMetrics(reg prometheus.Registerer) *clusterMetrics {
	m := &clusterMetrics{
		dirSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "switchboard", Name: "directory_op_seconds",
			Help:    "Latency of directory operations by op (claim, release, lookup, records, advertise, peer_url, reassert, list_peers, probe).",
			Buckets: []float64{.00001, .00005, .0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
		}, []string{"op"}),
		dirErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "switchboard", Name: "directory_errors_total",
			Help: "Directory operations that failed, by op (not found is not an error).",
		}, []string{"op"}),
		forwards: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "switchboard", Name: "forwards_total",
			Help: "Exchanges routed between replicas by outcome: sent (ok, fly_replay, peer_unreachable, peer_timeout, " +
				"peer_failed, client_gone; asked_peers counts owners found by asking peers while the directory was " +
				"unreachable) and received (received, received_miss, rejected).",
		}, []string{"outcome"}),
		missWaits: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "switchboard", Name: "miss_waits_total",
			Help: "Requests held for a host connected nowhere, by outcome (appeared, timed_out, client_gone).",
		}, []string{"outcome"}),
		drainMoves: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "switchboard", Name: "drain_moved_tunnels_total",
			Help: "Tunnels of a draining replica whose host opened its new tunnel on another replica before the old one closed.",
		}),
	}
	m.dirUp = prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: "switchboard", Name: "directory_up",
		Help: "1 while the directory answers, 0 while it is known down (a call found it unreachable or the health " +
			"probe failed; a probe that succeeds sets it back to 1). While 0, requests for hosts without a tunnel " +
			"here are routed by asking the peers, without waiting for the directory.",
	})
	m.dirUp.Set(1)
	m.asks = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "switchboard", Name: "ask_peers_total",
		Help: "Requests routed by asking the peers which holds the host (the directory was down or did not know the " +
			"host): rounds of questions that found the host (found) or not (not_found), answers reused from the " +
			"per-host cache (cached), rounds not started because too many were in flight or, for hosts the directory " +
			"does not know, too many were asked for this second (busy). Requests that " +
			"joined a round in flight for the same host are not counted.",
	}, []string{"result"})
	for _, r := range []string{peering.AskFound, peering.AskNotFound, peering.AskCached, peering.AskBusy} {
		m.asks.WithLabelValues(r)
	}
	m.hopRejections = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "switchboard", Name: "hop_rejections_total",
		Help: "Requests on the internal listener refused, by reason (no_secret, malformed, expired, bad_signature, " +
			"replayed, nonce_cache_full).",
	}, []string{"reason"})
	reg.MustRegister(m.dirSeconds, m.dirErrors, m.forwards, m.missWaits, m.drainMoves, m.hopRejections, m.dirUp, m.asks)
	for _, op := range directory.Ops() {
		m.dirSeconds.WithLabelValues(op)
		m.dirErrors.WithLabelValues(op)
	}
	for _, o := range []string{fwdOK, fwdFlyReplay, fwdPeerUnreachable, fwdPeerTimeout, fwdPeerFailed, fwdClientGone,
		fwdBadRequest, fwdAskedPeers, fwdReceived, fwdReceivedMiss, fwdRejected} {
		m.forwards.WithLabelValues(o)
	}
	for _, o := range []string{missAppeared, missTimedOut, missClientGone} {
		m.missWaits.WithLabelValues(o)
	}
	for _, r := range []string{"no_secret", "malformed", "expired", "bad_signature", "replayed", "nonce_cache_full"} {
		m.hopRejections.WithLabelValues(r)
	}
	return m
}

// registerHopMetrics exposes the size of the hop nonce cache.
func registerHopMetrics(reg prometheus.Registerer, s *Server) {
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Namespace: "switchboard", Name: "hop_nonces",
		Help: "Nonces of accepted hops remembered to refuse replays (capped by --hop-nonce-cache).",
	}, func() float64 { return float64(s.hops.Nonces()) }))
}

// registerCacheMetrics exposes the directory's lookup cache hits and misses; 0 if it has no cache (Memory), so
// the family exists on every replica.
func registerCacheMetrics(reg prometheus.Registerer, c directory.Directory) {
	const name, help = "directory_cache_lookups_total", "Directory lookups by result: hit (answered from the client-side cache) or miss (read from Redis)."
	reg.MustRegister(
		prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: "switchboard", Name: name, Help: help,
			ConstLabels: prometheus.Labels{"result": "hit"}}, func() float64 { h, _ := c.CacheStats(); return float64(h) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: "switchboard", Name: name, Help: help,
			ConstLabels: prometheus.Labels{"result": "miss"}}, func() float64 { _, m := c.CacheStats(); return float64(m) }),
	)
}
