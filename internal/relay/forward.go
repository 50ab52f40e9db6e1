package relay

import (
	"context"
	"errors"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"slices"
	"time"

	"github.com/switchboard-relay/switchboard/internal/auth"
	"github.com/switchboard-relay/switchboard/internal/directory"
	"github.com/switchboard-relay/switchboard/internal/httphead"
)

// Route modes (Config.RouteMode).
const (
	// RouteForward forwards every request for a host held by another replica to that replica's internal listener.
	RouteForward = "forward"
	// RouteFlyReplay answers plain HTTP requests for a host held by another replica with the header
	// "fly-replay: instance=<replica id>", so that Fly.io's proxy replays them there; WebSocket upgrades and
	// streaming requests (Accept: text/event-stream) are still forwarded.
	RouteFlyReplay = "fly-replay"
)

// missPoll is how often a request held on a miss looks for its host again.
const missPoll = 25 * time.Millisecond

// forwardKey carries a forwarded exchange in its request's context.
type forwardKey struct{}

// forwardEx is one client exchange forwarded to the replica that holds the host's tunnel.
type forwardEx struct {
	peer    *url.URL
	subject string
	status  int    // status of the peer's answer; 0 if none
	outcome string // set by forwardError
	// passedOn marks an exchange a peer forwarded here and this replica passes on (passOn): its forwarding
	// headers, set and signed by that peer, are kept rather than set again from this replica's view.
	passedOn bool
}

// routeExchange carries an exchange for tg's host where resolveRoute (route.go) decides: over the tunnel serving
// it here; forwarded to the replica that holds it (or replayed there by Fly); held up to MissWait for the host to
// connect anywhere; or answered 503. hop marks an exchange a peer forwarded here: it is served here or answered,
// and passed on only from a tunnel retiring here (passOn).
func (s *Server) routeExchange(w http.ResponseWriter, r *http.Request, tg target, kind, subject string, hop bool) {
	id := tg.id
	var deadline time.Time
	var tick *time.Ticker // set when a hold-on-miss wait begins
	defer func() {
		if tick != nil {
			tick.Stop()
		}
	}()
	tried := false // serving it here was tried and failed (resolveHop)
	for {
		mayWait := !hop && s.cfg.MissWait > 0 && (tick == nil || time.Now().Before(deadline))
		v, t := s.viewHere(id, hop, tried, mayWait)
		d := resolveRoute(v)
		for d.kind == routeLookup || d.kind == routeAsk { // gather what the decision asks for, then decide again
			if d.kind == routeLookup {
				v = s.viewDirectory(r.Context(), v, id)
			} else {
				v = s.askView(v, id)
			}
			d = resolveRoute(v)
		}
		switch d.kind {
		case routeServe:
			if s.serveLocal(w, r, t, kind, tg, subject, hop) {
				s.countServedHere(tick, hop)
				return
			}
			tried = true
			continue // t began retiring meanwhile: route the exchange as if it were gone
		case routeRemote:
			if hop {
				s.passOn(w, r, d.peer, subject)
				return
			}
			if v.asked {
				s.cluster.forwards.WithLabelValues(fwdAskedPeers).Inc()
			}
			s.countMissWait(tick, missAppeared)
			s.routeRemote(w, r, d.replica, d.peer, kind, subject)
			return
		case routeClaimed:
			// A tunnel between its claim and its registration here is waited for, whatever MissWait says.
			tried = true
			if t := s.awaitLocal(r.Context(), id); t != nil && s.serveLocal(w, r, t, kind, tg, subject, hop) {
				s.countServedHere(tick, hop)
				return
			}
			if hop {
				continue
			}
			if !mayWait {
				s.countMissWait(tick, missTimedOut)
				s.answerOffline(w, kind)
				return
			}
		case routeOffline:
			if hop {
				s.cluster.forwards.WithLabelValues(fwdReceivedMiss).Inc()
			} else {
				s.countMissWait(tick, missTimedOut)
			}
			s.answerOffline(w, kind)
			return
		}
		if tick == nil {
			deadline = time.Now().Add(s.cfg.MissWait)
			tick = time.NewTicker(missPoll)
		}
		select {
		case <-r.Context().Done():
			s.countMissWait(tick, missClientGone)
			s.countExchange(kind, "client_gone", 499)
			return
		case <-tick.C:
		}
	}
}

// countServedHere counts an exchange served over a tunnel here: a hop received, or the end of a client's
// hold-on-miss wait if one began (tick is its ticker).
func (s *Server) countServedHere(tick *time.Ticker, hop bool) {
	if hop {
		s.cluster.forwards.WithLabelValues(fwdReceived).Inc()
		return
	}
	s.countMissWait(tick, missAppeared)
}

// answerOffline answers 503 host_offline.
func (s *Server) answerOffline(w http.ResponseWriter, kind string) {
	s.countExchange(kind, "host_offline", http.StatusServiceUnavailable)
	writeError(w, http.StatusServiceUnavailable, codeHostOffline, "host is not connected")
}

// Hold-on-miss outcomes (switchboard_miss_waits_total).
const (
	missAppeared   = "appeared"
	missTimedOut   = "timed_out"
	missClientGone = "client_gone"
)

// countMissWait counts the end of a hold-on-miss wait, if one began (tick is its ticker).
func (s *Server) countMissWait(tick *time.Ticker, outcome string) {
	if tick != nil {
		s.cluster.missWaits.WithLabelValues(outcome).Inc()
	}
}

// routeRemote sends a request for a host held by replica: a fly-replay answer, or a forward to its internal URL.
func (s *Server) routeRemote(w http.ResponseWriter, r *http.Request, replica string, peer *url.URL, kind, subject string) {
	if s.cfg.RouteMode == RouteFlyReplay && kind == "http" && !headerHasToken(r.Header, "Accept", "text/event-stream") &&
		r.Header.Get("Fly-Replay-Src") == "" {
		// A request Fly already replayed (Fly-Replay-Src) is forwarded instead: the directory may have moved on,
		// and replaying again could loop.
		s.cluster.forwards.WithLabelValues(fwdFlyReplay).Inc()
		s.setAccessRoute(w, routeReplayed, kind)
		w.Header().Set("Fly-Replay", "instance="+replica)
		writeError(w, http.StatusConflict, codeWrongReplica, "this replica does not hold the host's tunnel; replay at instance "+replica)
		return
	}
	s.setAccessRoute(w, routeForwarded, kind)
	fw := &forwardEx{peer: peer, subject: subject}
	r = r.WithContext(context.WithValue(r.Context(), forwardKey{}, fw))
	if r.Body != nil && r.Body != http.NoBody {
		r.Body = &clientBody{ReadCloser: r.Body, cuts: s.bounds.cuts.WithLabelValues(cutClientBody)}
	}
	w = s.newStallResponseWriter(w) // a client that stops reading is cut as on the local path
	if peer.Scheme == "http" && leanForwardable(r) {
		s.leanForward(w, r, fw)
	} else {
		s.fwd.ServeHTTP(w, r)
	}
	if fw.outcome == "" {
		fw.outcome = fwdOK
	}
	s.cluster.forwards.WithLabelValues(fw.outcome).Inc()
}

// newForwardProxy builds the proxy that forwards client exchanges (HTTP, streams and WebSocket upgrades alike) to
// peers; the peer of each request travels in its context. Bodiless GET, HEAD, OPTIONS and TRACE take the lean
// forward instead (leanforward.go), whose leanRequest repeats what ReverseProxy does to the outbound request before
// rewriteForward (which then restores the query ReverseProxy cleaned: both pass it on as the client wrote it).
func (s *Server) newForwardProxy() *httputil.ReverseProxy {
	return &httputil.ReverseProxy{
		Rewrite:   s.rewriteForward,
		Transport: peerRoundTripper{s},
		// SSE and chunked answers are flushed at once by ReverseProxy itself; sized ones within flushLatency.
		FlushInterval: flushLatency,
		ErrorHandler:  s.forwardError,
		ModifyResponse: func(resp *http.Response) error {
			if fw, ok := resp.Request.Context().Value(forwardKey{}).(*forwardEx); ok {
				fw.status = resp.StatusCode
			}
			return modifyResponse(resp) // the owner did so already; a peer of another release may not have
		},
		BufferPool: bufferPool{},
		ErrorLog:   slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
}

// peerRoundTripper sends forwarded exchanges on the peer transport, telling a head too large from other failures.
type peerRoundTripper struct{ s *Server }

func (p peerRoundTripper) RoundTrip(req *http.Request) (*http.Response, error) {
	return roundTripCapped(p.s.peerTransport, req)
}

// newPeerTransport is the HTTP client of the internal listeners of peers.
func (s *Server) newPeerTransport() *http.Transport {
	d := &net.Dialer{Timeout: 2 * time.Second, KeepAlive: 15 * time.Second}
	return &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := d.DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			return &countedConn{Conn: c}, nil // for roundTripCapped
		},
		// The owner already bounds the host's head; a peer adds only its own few headers.
		MaxResponseHeaderBytes: int64(s.cfg.MaxResponseHeaderBytes + peerHeadSlack),
		MaxIdleConnsPerHost:    256,
		IdleConnTimeout:        90 * time.Second,
		// The owner answers 504 itself after its idle timeout; this only catches an owner that hangs.
		ResponseHeaderTimeout: s.cfg.IdleTimeout + 10*time.Second,
		DisableCompression:    true,
		WriteBufferSize:       32 << 10,
		ReadBufferSize:        32 << 10,
		TLSClientConfig:       s.cfg.PeerTLS.Clone(), // https:// peers; HTTP/1.1 only (upgrades), as no NextProtos
	}
}

// rewriteForward prepares a forwarded request: same path and query (token removed), forwarding headers set by this
// replica's trust rules, credentials removed, the verified subject and the hop signature in.
func (s *Server) rewriteForward(pr *httputil.ProxyRequest) {
	fw := pr.In.Context().Value(forwardKey{}).(*forwardEx)
	out := pr.Out
	out.URL.Scheme = fw.peer.Scheme
	out.URL.Host = fw.peer.Host
	// The query as the client wrote it: ReverseProxy drops what it cannot parse (a ';', a bad escape), but the lean
	// forward and an exchange served here pass it on unchanged, and the host must see the same request whichever
	// replica the client reached.
	out.URL.RawQuery = pr.In.URL.RawQuery
	auth.StripQueryToken(out.URL)
	stripReserved(out.Header) // every look-alike too (headerpolicy.go); the peer strips again
	// A request passed on keeps the forwarding headers the first replica set and signed.
	s.setForwarding(out.Header, pr.In, fw.passedOn)
	out.Host = pr.In.Host
	s.hops.Sign(out, fw.subject)
	out.Trailer = pr.In.Trailer
	guardTrailers(out)
}

// forwardError answers a forward that failed before the peer answered.
func (s *Server) forwardError(w http.ResponseWriter, r *http.Request, err error) {
	fw, _ := r.Context().Value(forwardKey{}).(*forwardEx)
	set := func(o string) {
		if fw != nil {
			fw.outcome = o
		}
	}
	var op *net.OpError
	var bodyErr *clientBodyError
	switch {
	case r.Context().Err() != nil:
		set(fwdClientGone)
	case errors.As(err, &bodyErr):
		set(fwdBadRequest)
		writeError(w, http.StatusBadRequest, codeBadRequest, "the request body could not be read (malformed or cut short)")
	case errors.Is(err, httphead.ErrTooLarge):
		set(fwdPeerFailed)
		s.bounds.cuts.WithLabelValues(cutResponseHead).Inc()
		writeError(w, http.StatusBadGateway, codeUpstreamHeaderTooLarge, "the answer of the replica holding the host's tunnel has a header larger than the relay accepts")
	case errors.As(err, &op) && op.Op == "dial":
		set(fwdPeerUnreachable)
		s.log.Warn("owner replica unreachable", "err", err)
		writeError(w, http.StatusServiceUnavailable, codeHostOffline, "the replica holding the host's tunnel is unreachable")
	case isTimeout(err):
		set(fwdPeerTimeout)
		writeError(w, http.StatusGatewayTimeout, codeUpstreamTimeout, "the replica holding the host's tunnel did not answer in time")
	default:
		set(fwdPeerFailed)
		s.log.Debug("forward failed", "err", err)
		writeError(w, http.StatusBadGateway, codeUpstreamFailed, "forwarding to the replica holding the host's tunnel failed")
	}
}

// claim claims hostID for this replica and returns the other replica whose entry it replaced, to be told to close
// its older tunnel ("" if none, or if forwarding is off), and the host's state before the claim for presence events.
// The directory reports the replaced entry atomically with the claim, so a claim racing this one is never missed.
func (s *Server) claim(ctx context.Context, hostID string, meta directory.Metadata) (directory.Entry, string, *directory.Prior, error) {
	e, prior, err := s.dir.Claim(ctx, hostID, s.cfg.Replica, meta)
	if err != nil {
		return e, "", nil, err
	}
	if len(s.cfg.ClusterSecret) == 0 || prior.Replica == s.cfg.Replica {
		return e, "", &prior, nil
	}
	return e, prior.Replica, &prior, nil
}

// claimLocally accepts a tunnel while the directory is unreachable: the entry gets an epoch from this replica's
// clock (Unix microseconds, the directory's own floor) and is written behind by the cluster loop (ReassertEach).
func (s *Server) claimLocally(id string, meta directory.Metadata) directory.Entry {
	now := time.Now()
	s.behindMu.Lock()
	defer s.behindMu.Unlock()
	epoch := max(uint64(now.UnixMicro()), s.lastLocalEpoch+1)
	s.lastLocalEpoch = epoch
	e := directory.Entry{HostID: id, Replica: s.cfg.Replica, Epoch: epoch, ConnectedAt: now, Metadata: meta}
	s.behind[id] = e
	return e
}

// writeBehind writes the entries accepted while the directory was unreachable, for tunnels still registered here,
// and announces each host online once its entry is written. (The claim's prior state is not known then, so a host
// that moved here from another replica during the outage reads "online", not "moved"; either way it is online.)
func (s *Server) writeBehind(ctx context.Context) {
	// behindMu is never held with mu (see the lock order in the package doc): the entries are copied out, looked
	// up in the registry without behindMu, and those found stale are deleted only if no newer claim took their place.
	s.behindMu.Lock()
	claims := slices.Collect(maps.Values(s.behind))
	s.behindMu.Unlock()
	pending := make([]directory.Entry, 0, len(claims))
	var stale []directory.Entry
	for _, e := range claims {
		if t := s.lookup(e.HostID); t != nil && t.epoch == e.Epoch {
			pending = append(pending, e)
		} else if t == nil || t.epoch > e.Epoch {
			stale = append(stale, e) // the tunnel ended or was replaced: nothing to write
		}
	}
	if len(stale) > 0 {
		s.behindMu.Lock()
		for _, e := range stale {
			if cur, ok := s.behind[e.HostID]; ok && cur.Epoch == e.Epoch {
				delete(s.behind, e.HostID)
			}
		}
		s.behindMu.Unlock()
	}
	if len(pending) == 0 {
		return
	}
	written, err := s.dir.ReassertEach(ctx, pending)
	if err != nil {
		s.log.Debug("write-behind of directory entries failed; will retry", "entries", len(pending), "err", err)
	}
	n := 0
	for i, e := range pending {
		if i >= len(written) || !written[i] {
			continue
		}
		n++
		s.behindMu.Lock()
		mine := s.behind[e.HostID].Epoch == e.Epoch
		if mine {
			delete(s.behind, e.HostID)
		}
		s.behindMu.Unlock()
		if mine {
			s.announceClaim(e, directory.Prior{}) // an unknown prior reads as online
		}
	}
	if n > 0 {
		s.log.Info("directory entries written behind", "entries", n)
	}
}

// releaseBehind retries the releases that failed while the directory was unreachable. A release may have reached
// the directory after all (a timeout is not a refusal), so the host's offline is owed whether or not the retry
// itself removed the entry: MarkOffline announces it only if the host is still offline at that epoch.
func (s *Server) releaseBehind(ctx context.Context) {
	s.behindMu.Lock()
	pending := maps.Clone(s.unreleased)
	s.behindMu.Unlock()
	for id, rel := range pending {
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		_, err := s.dir.Release(rctx, id, rel.epoch)
		cancel()
		if err != nil {
			s.log.Debug("directory release still failing; will retry", "host_id", id, "epoch", rel.epoch, "err", err)
			return // the directory is still unreachable: the others would fail too
		}
		s.behindMu.Lock()
		if s.unreleased[id] == rel {
			delete(s.unreleased, id)
		}
		s.behindMu.Unlock()
		s.scheduleOffline(id, rel.epoch, rel.at)
	}
}

// advertiseEvery is how often the cluster loop re-advertises this replica's internal URL.
const advertiseEvery = 2 * time.Second

// clusterLoop advertises this replica's internal URL and writes entries behind, until ctx ends.
func (s *Server) clusterLoop(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	var advertised, listed time.Time
	for {
		if s.cfg.InternalURL != "" && time.Since(advertised) >= advertiseEvery && s.advertise(ctx) {
			advertised = time.Now()
		}
		if time.Since(listed) >= advertiseEvery {
			lctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			s.refreshPeers(lctx)
			cancel()
			listed = time.Now()
		}
		s.writeBehind(ctx)
		s.releaseBehind(ctx)
		s.lean.Prune()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
