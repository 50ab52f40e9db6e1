package relay

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/switchboard-relay/switchboard/internal/directory"
)

// Headers of a request sent from one replica to another (see docs/scaling.md).
//
//	Switchboard-Hop: <sending replica id>,<unix seconds>,<nonce: 32 hex digits>,<hex HMAC-SHA256>
//	Switchboard-Hop-Subject: <verified client subject, query-escaped>   (absent if none)
//
// The HMAC is keyed with the cluster secret over the length-prefixed fields (see hopMAC)
//
//	"switchboard-hop-v2", replica, unix, nonce, method, request-URI, Host, subject,
//	and for X-Forwarded-For, X-Forwarded-Host, X-Forwarded-Proto: the number of header lines, then each line
//
// so a hop cannot be forged without the secret, nor moved to another method, path, host or subject, nor carry
// forwarding headers other than those its sender set. The receiver accepts it for hopMaxAge either side of its own
// clock, and once: the nonce of every accepted hop is remembered until its timestamp leaves the window (hopNonces).
// The body (and trailers) are not covered: whoever can alter a hop in flight can change them (Config.PeerTLS and a
// TLS internal listener prevent that), but a captured hop cannot be sent again, with any body. Both headers are
// removed before a request reaches a host.
const (
	headerHop        = "Switchboard-Hop"
	headerHopSubject = "Switchboard-Hop-Subject"
)

// hopMaxAge bounds how far a hop's timestamp may be from the receiver's clock (replay window and clock skew).
const hopMaxAge = 30 * time.Second

// evictPath is the internal endpoint by which a replica that claimed a host tells the previous owner to close its
// older tunnel: POST /internal/v1/evict?host=ID&epoch=N.
const evictPath = "/internal/v1/evict"

// errHop is the cause of every refused hop; the errors below wrap it and name the reason
// (switchboard_hop_rejections_total).
var (
	errHop          = errors.New("hop not authenticated")
	errHopNoSecret  = fmt.Errorf("%w: no cluster secret configured", errHop)
	errHopMalformed = fmt.Errorf("%w: missing or malformed %s", errHop, headerHop)
	errHopExpired   = fmt.Errorf("%w: timestamp outside the acceptance window", errHop)
	errHopSignature = fmt.Errorf("%w: bad signature", errHop)
	errHopReplayed  = fmt.Errorf("%w: nonce already used", errHop)
	errHopCacheFull = fmt.Errorf("%w: nonce cache full", errHop)
)

// hopReason names the cause of a refused hop for switchboard_hop_rejections_total.
func hopReason(err error) string {
	switch {
	case errors.Is(err, errHopNoSecret):
		return "no_secret"
	case errors.Is(err, errHopExpired):
		return "expired"
	case errors.Is(err, errHopSignature):
		return "bad_signature"
	case errors.Is(err, errHopReplayed):
		return "replayed"
	case errors.Is(err, errHopCacheFull):
		return "nonce_cache_full"
	default:
		return "malformed"
	}
}

// hopMAC computes the hop signature. Every field is written as its length, ':', the field and '\n', so no two
// different requests feed the HMAC the same bytes. fwd is the header the forwarding headers are read from.
func hopMAC(secret []byte, replica, unix, nonce, method, requestURI, host, subject string, fwd http.Header) string {
	// The input is framed in one buffer and written once: writing each piece to the hash would copy every string
	// into a []byte of its own (hash.Hash has no WriteString), some fifty allocations per hop.
	var stack [512]byte
	in := stack[:0]
	field := func(v string) {
		in = strconv.AppendInt(in, int64(len(v)), 10)
		in = append(in, ':')
		in = append(in, v...)
		in = append(in, '\n')
	}
	for _, v := range []string{"switchboard-hop-v2", replica, unix, nonce, method, requestURI, host, subject} {
		field(v)
	}
	for _, k := range forwardedHeaders {
		vs := fwd[k]
		field(strconv.Itoa(len(vs)))
		for _, v := range vs {
			field(v)
		}
	}
	m := hmac.New(sha256.New, secret)
	_, _ = m.Write(in)
	var sum [sha256.Size]byte
	return hex.EncodeToString(m.Sum(sum[:0]))
}

// hopHost is the Host a request carries on the wire (as Request.Write picks it).
func hopHost(r *http.Request) string {
	if r.Host != "" {
		return r.Host
	}
	if r.URL != nil {
		return r.URL.Host
	}
	return ""
}

// signHop sets the hop headers on out, a request from this replica to a peer. out.URL, out.Host and the forwarding
// headers must be final: the signature covers them.
func (s *Server) signHop(out *http.Request, subject string) {
	unix := strconv.FormatInt(time.Now().Unix(), 10)
	var n [16]byte
	_, _ = rand.Read(n[:]) // never fails (crypto/rand)
	nonce := hex.EncodeToString(n[:])
	mac := hopMAC(s.cfg.ClusterSecret, s.cfg.Replica, unix, nonce, out.Method, out.URL.RequestURI(), hopHost(out), subject,
		out.Header)
	out.Header.Set(headerHop, s.cfg.Replica+","+unix+","+nonce+","+mac)
	if subject != "" {
		out.Header.Set(headerHopSubject, url.QueryEscape(subject))
	} else {
		out.Header.Del(headerHopSubject)
	}
}

// verifyHop checks the hop headers of r, a request on the internal listener, and returns the sending replica and
// the client subject it vouches for. A hop that verifies is remembered, and refused if it comes again.
func (s *Server) verifyHop(r *http.Request, now time.Time) (from, subject string, err error) {
	if len(s.cfg.ClusterSecret) == 0 {
		return "", "", errHopNoSecret
	}
	if len(r.Header[headerHop]) != 1 || len(r.Header[headerHopSubject]) > 1 {
		return "", "", errHopMalformed
	}
	// <replica>,<unix>,<nonce>,<mac>, split from the right: the replica id is the rest.
	v := r.Header.Get(headerHop)
	var parts [3]string
	for i := 2; i >= 0; i-- {
		j := strings.LastIndexByte(v, ',')
		if j < 0 {
			return "", "", errHopMalformed
		}
		v, parts[i] = v[:j], v[j+1:]
	}
	from, unix, nonce, mac := v, parts[0], parts[1], parts[2]
	var n [16]byte
	if from == "" || len(nonce) != 2*len(n) {
		return "", "", errHopMalformed
	}
	if _, err := hex.Decode(n[:], []byte(nonce)); err != nil {
		return "", "", errHopMalformed
	}
	ts, err := strconv.ParseInt(unix, 10, 64)
	if err != nil {
		return "", "", errHopMalformed
	}
	if d := now.Sub(time.Unix(ts, 0)); d > hopMaxAge || d < -hopMaxAge {
		return "", "", fmt.Errorf("%w (%v away from this replica's clock)", errHopExpired, d.Round(time.Second))
	}
	if raw := r.Header.Get(headerHopSubject); raw != "" {
		if subject, err = url.QueryUnescape(raw); err != nil {
			return "", "", errHopMalformed
		}
	}
	want := hopMAC(s.cfg.ClusterSecret, from, unix, nonce, r.Method, r.RequestURI, r.Host, subject, r.Header)
	if !hmac.Equal([]byte(mac), []byte(want)) {
		return "", "", errHopSignature
	}
	// Only a signed hop reaches the cache, so only the cluster can fill it.
	if err := s.hopNonces.admit(n, ts+int64(hopMaxAge/time.Second), now.Unix()); err != nil {
		return "", "", err
	}
	return from, subject, nil
}

// InternalHandler serves requests from peer replicas: forwarded client exchanges for hosts whose tunnels are here,
// and eviction notices. Every request must carry a valid hop signature (Config.ClusterSecret); others get 403.
// A forwarded request is never forwarded again: if the host's tunnel is not here it is answered 503. Serve it on a
// listener that only peers can reach (Config.InternalURL names it to them).
func (s *Server) InternalHandler() http.Handler { return http.HandlerFunc(s.serveInternal) }

func (s *Server) serveInternal(w http.ResponseWriter, r *http.Request) {
	from, subject, err := s.verifyHop(r, time.Now())
	if err != nil {
		s.cluster.forwards.WithLabelValues(fwdRejected).Inc()
		s.cluster.hopRejections.WithLabelValues(hopReason(err)).Inc()
		s.log.Warn("internal request refused", "err", err, "remote", clientIP(r))
		if errors.Is(err, errHopCacheFull) {
			writeError(w, http.StatusServiceUnavailable, codeReplicaBusy, "too many requests between replicas to remember; retry")
			return
		}
		writeError(w, http.StatusForbidden, codeForbidden, "requests between replicas must be signed with the cluster secret, fresh and sent once")
		return
	}
	switch {
	case strings.HasPrefix(r.URL.Path, hostsPrefix) || s.isHostModeRequest(r):
		s.handleForwarded(w, r, subject)
	case r.URL.Path == evictPath && r.Method == http.MethodPost:
		s.handleEvict(w, r, from)
	case r.URL.Path == hasPath && r.Method == http.MethodGet:
		s.handleHas(w, r)
	case strings.HasPrefix(r.URL.Path, "/internal/v1/admin/") && s.serveAdminInternal(w, r, from):
	default:
		writeError(w, http.StatusNotFound, codeNotFound, "no such internal endpoint")
	}
}

// handleForwarded serves an exchange a peer forwarded here because the directory named this replica as the owner.
func (s *Server) handleForwarded(w http.ResponseWriter, r *http.Request, subject string) {
	// The peer forwarded the request as the client sent it (Host and path, both signed): find the host the same
	// way, by name in host mode or by path.
	tg, found, valid := s.resolve(r)
	if !found || !valid {
		writeError(w, http.StatusBadRequest, codeInvalidHostID, "host id must be 1-128 printable bytes")
		return
	}
	kind := exchangeKind(r, tg) // the first replica checked a TCP stream's service against the token (tcp.go)
	if !s.admitExchange(w, kind) {
		return
	}
	defer s.exchanges.Add(-1)
	s.routeExchange(w, r, tg, kind, subject, true) // forward.go
}

// passOn forwards a forwarded exchange once more, to the replica at peer, as resolveHop (route.go) decides: this
// replica is draining and its tunnel for the host retired because the host moved there after the peer looked it
// up. The forwarding headers the first replica set and signed are kept.
func (s *Server) passOn(w http.ResponseWriter, r *http.Request, peer *url.URL, subject string) {
	fw := &forwardEx{peer: peer, subject: subject, passedOn: true}
	s.fwd.ServeHTTP(s.newStallResponseWriter(w), r.WithContext(context.WithValue(r.Context(), forwardKey{}, fw)))
	if fw.outcome == "" {
		fw.outcome = fwdOK
	}
	s.cluster.forwards.WithLabelValues(fw.outcome).Inc()
}

// awaitLocal waits for hostID's tunnel to register here while the directory names this replica as its owner with
// a claim younger than registerWindow, for at most registerWindow. Otherwise it repairs a stale entry naming this
// replica and returns nil at once. A directory known down is not read (dirhealth.go): it returns at once.
func (s *Server) awaitLocal(ctx context.Context, hostID string) *tunnelConn {
	if s.health.isDown() {
		return s.serving(hostID)
	}
	ctx, cancel := context.WithTimeout(ctx, registerWindow)
	defer cancel()
	tick := time.NewTicker(missPoll)
	defer tick.Stop()
	for {
		e, err := s.dir.Lookup(ctx, hostID)
		if err != nil || e.Replica != s.cfg.Replica {
			return s.serving(hostID)
		}
		if time.Since(e.ConnectedAt) >= registerWindow {
			s.repairStale(e)
			return s.serving(hostID)
		}
		select {
		case <-ctx.Done():
			return s.serving(hostID)
		case <-tick.C:
		}
		if t := s.serving(hostID); t != nil {
			return t
		}
	}
}

// registerWindow bounds the time between a tunnel's directory claim and its local registration (the upgrade and
// the agent's control stream): an entry naming this replica without a local tunnel is stale only when older.
const registerWindow = controlAcceptTimeout + 5*time.Second

// repairStale releases e, an entry naming this replica that is older than registerWindow, if no tunnel here holds
// its host: a release that failed, or a crash between claim and cleanup, left it behind.
func (s *Server) repairStale(e directory.Entry) {
	if e.Replica != s.cfg.Replica || time.Since(e.ConnectedAt) < registerWindow || s.lookup(e.HostID) != nil {
		return
	}
	ctx, cancel := context.WithTimeout(s.ctx, 5*time.Second)
	defer cancel()
	ok, err := s.dir.Release(ctx, e.HostID, e.Epoch)
	if err != nil {
		s.log.Warn("stale directory entry not repaired", "host_id", e.HostID, "epoch", e.Epoch, "err", err)
		return
	}
	if ok {
		s.log.Info("stale directory entry released: it named this replica, which holds no such tunnel",
			"host_id", e.HostID, "epoch", e.Epoch)
	}
}

// handleEvict closes the local tunnel of a host that another replica has claimed with a newer epoch.
func (s *Server) handleEvict(w http.ResponseWriter, r *http.Request, from string) {
	q := r.URL.Query()
	id := q.Get("host")
	epoch, err := strconv.ParseUint(q.Get("epoch"), 10, 64)
	if !validHostID(id) || err != nil {
		writeError(w, http.StatusBadRequest, codeBadRequest, "evict needs host and epoch")
		return
	}
	// Noted before the lookup, so a tunnel registering meanwhile sees the note or is found (see serveTunnel).
	s.evictions.note(id, from, epoch)
	// A draining replica keeps the old tunnel until its exchanges finished (make-before-break: the agent opened the
	// newer tunnel because this replica asked it to move); Drain closes it.
	if t := s.lookup(id); t != nil && t.epoch < epoch && !s.draining.Load() {
		s.evictLocal(t, from, epoch)
	}
	w.WriteHeader(http.StatusNoContent)
}

// evictions remembers, for registerWindow, eviction notices for hosts whose tunnel had not registered here yet: a
// tunnel that registers afterwards with an older epoch is closed as replaced.
type evictions struct {
	mu sync.Mutex
	m  map[string]evictNote
}

type evictNote struct {
	replica string // the replica that claimed the host
	epoch   uint64
	until   time.Time
}

// note records that replica claimed hostID with epoch.
func (e *evictions) note(hostID, replica string, epoch uint64) {
	now := time.Now()
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.m == nil {
		e.m = make(map[string]evictNote)
	}
	if len(e.m) >= 1024 {
		for id, n := range e.m {
			if now.After(n.until) {
				delete(e.m, id)
			}
		}
	}
	if n, ok := e.m[hostID]; !ok || n.epoch < epoch || now.After(n.until) {
		e.m[hostID] = evictNote{replica: replica, epoch: epoch, until: now.Add(registerWindow)}
	}
}

// supersedes reports whether a recent eviction notice for hostID carries an epoch newer than epoch.
func (e *evictions) supersedes(hostID string, epoch uint64) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	n, ok := e.m[hostID]
	return ok && n.epoch > epoch && time.Now().Before(n.until)
}

// newOwner returns the replica named by a recent eviction notice for hostID with an epoch newer than epoch.
func (e *evictions) newOwner(hostID string, epoch uint64) (string, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	n, ok := e.m[hostID]
	if !ok || n.epoch <= epoch || !time.Now().Before(n.until) {
		return "", false
	}
	return n.replica, true
}

// evictLocal retires t as replaced by a newer tunnel on replica from (retireReplaced: requests landing here are
// forwarded to the new owner while t's exchanges in flight finish), then closes it.
func (s *Server) evictLocal(t *tunnelConn, from string, epoch uint64) {
	if !s.spawn(func() { s.retireReplaced(t) }) {
		return // Close has begun and closes t
	}
	s.metrics.registrations.WithLabelValues(regReplaced).Inc()
	t.log.Info("tunnel replaced by a newer registration on another replica", "new_epoch", epoch, "new_replica", from)
}

// notifyEvict tells replica, the previous owner of hostID, that this replica now holds it with epoch. A notice
// that fails (the peer unreachable for a moment, a refused answer) is sent again, up to evictAttempts times with
// growing pauses; if all fail, the old tunnel lingers on that replica (serving only requests that land there) until
// it ends or that replica's drain finds the newer entry in the directory.
func (s *Server) notifyEvict(replica, hostID string, epoch uint64) {
	pause := evictRetryPause
	for attempt := 1; ; attempt++ {
		err := s.sendEvict(replica, hostID, epoch)
		if err == nil {
			return
		}
		if attempt == evictAttempts {
			s.log.Warn("previous owner not told of the newer tunnel", "host_id", hostID, "previous_replica", replica,
				"attempts", attempt, "err", err)
			return
		}
		select {
		case <-s.ctx.Done():
			return
		case <-time.After(jitter(pause)):
		}
		pause *= 3
	}
}

// Retries of an eviction notice: evictAttempts sends, the pause between them growing 3× from evictRetryPause
// (0.2 s, 0.6 s, 1.8 s: up to 2.6 s in all, within a replica's restart or a brief partition), each pause drawn
// from its upper half (jitter) so that the notices of many moved hosts do not retry in step.
const (
	evictAttempts   = 4
	evictRetryPause = 200 * time.Millisecond
)

// sendEvict sends one eviction notice.
func (s *Server) sendEvict(replica, hostID string, epoch uint64) error {
	ctx, cancel := context.WithTimeout(s.ctx, 5*time.Second)
	defer cancel()
	base, err := s.peer(ctx, replica)
	if err != nil {
		return err
	}
	u := *base
	u.Path = evictPath
	u.RawQuery = url.Values{"host": {hostID}, "epoch": {strconv.FormatUint(epoch, 10)}}.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u.String(), nil)
	if err != nil {
		return err
	}
	s.signHop(req, "")
	resp, err := s.peerTransport.RoundTrip(req)
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4<<10))
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		return fmt.Errorf("eviction notice refused: %s", resp.Status)
	}
	return nil
}

// Owned returns an entry for every tunnel registered here: what this replica re-asserts when the directory lost
// its data (directory.RedisConfig.Owned).
func (s *Server) Owned() []directory.Entry {
	ts := s.snapshot()
	out := make([]directory.Entry, 0, len(ts))
	for _, t := range ts {
		out = append(out, directory.Entry{HostID: t.hostID, Replica: s.cfg.Replica, Epoch: t.epoch,
			ConnectedAt: t.connectedAt, Metadata: t.meta})
	}
	return out
}
