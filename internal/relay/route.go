package relay

import (
	"context"
	"errors"
	"net/url"

	"github.com/switchboard-relay/switchboard/internal/directory"
)

// This file holds the one decision where every request for a host goes (resolveRoute), from what the local
// registry, the directory, the directory's health state and the peers say (routeView). The decision has no side
// effects; route (forward.go) gathers the view and carries the decision out, for a client's request and for one a
// peer forwarded here (a hop) alike. The view is gathered lazily: what is cheap (the registry, the directory's
// health) first, and the directory and the peers only when the decision asks for them (lookup, ask).
//
//	what is known                                              → where the request goes
//	a tunnel serving the host is registered here               → serve: carry it over that tunnel
//
//	forwarded by a peer (a hop), and not yet tried here        → claimed: wait for a tunnel registering here
//	a hop tried here; a tunnel retiring here (or retired, with
//	  a recent eviction notice naming another replica), and the
//	  directory neither read nor known down                    → lookup: read the directory, decide again
//	a hop tried here; a tunnel retiring (or retired, as above)
//	  here, and the directory names another replica, whose
//	  URL is known                                             → remote: pass it on to that replica, once
//	a hop, otherwise                                           → offline: 503 host_offline (never forwarded)
//
//	the directory neither read nor known down                  → lookup: read the directory, decide again
//	the directory names another replica, whose URL is known    → remote: that replica
//	the directory names this replica, and a tunnel retiring
//	  here was replaced on another replica (eviction notice)   → remote: that replica
//	the directory names this replica                           → claimed: wait for the tunnel registering here
//	the directory is known down, did not answer, does not know
//	  the host, or names a replica whose URL is unknown        → ask: ask the peers (cached, single-flighted)
//	a peer said it holds the tunnel                            → remote: that peer
//	nothing, and the hold-on-miss wait has time left           → wait: look again after missPoll
//	nothing                                                    → offline: 503 host_offline
//
// A hop is passed on only from a replica whose tunnel for the host retired because the host moved (a drain): the
// new owner never forwards a forwarded exchange, and a draining replica accepts no tunnel, so the directory cannot
// name it again and a hop cannot loop. A directory known down is not read at all (dirhealth.go): a client's
// request goes straight to asking the peers, and a hop is answered.

// routeKind is where a request goes.
type routeKind uint8

const (
	routeServe   routeKind = iota + 1 // carry the exchange over the tunnel serving the host here
	routeLookup                       // read the directory, then decide again with its answer
	routeRemote                       // forward to (or have Fly replay at) replica; pass a hop on
	routeClaimed                      // wait for a tunnel to register here
	routeAsk                          // ask the peers, then decide again with their answer
	routeWait                         // hold the request and look again
	routeOffline                      // answer 503 host_offline
)

// route is a decision of resolveRoute.
type route struct {
	kind    routeKind
	replica string   // routeRemote: the replica that holds the tunnel
	peer    *url.URL // routeRemote: its internal URL
}

// routeView is what is known about a host when a request for it arrives.
type routeView struct {
	self string // this replica's id

	// What this replica knows without asking anyone.
	serving  bool // a tunnel serving the host (not retiring) is registered here
	retiring bool // a tunnel of the host is retiring here
	// movedAway: no tunnel of the host is here, and a recent eviction notice says another replica claimed it: the
	// tunnel here retired (a drain, a replacement) before this request arrived.
	movedAway bool
	hop       bool // the request was forwarded here by a peer
	tried     bool // a hop: serving it here was tried (a tunnel here, or the wait for one registering) and failed
	dirDown   bool // the directory is known down: it is not read
	mayWait   bool // the hold-on-miss wait has time left

	// The directory's answer, once read (viewDirectory).
	read      bool     // the directory was read
	owner     string   // the replica it names; "" if none
	ownerURL  *url.URL // owner's internal URL; nil if unknown (or forwarding is off)
	lookupErr bool     // the directory did not answer
	movedTo   string   // a tunnel here retiring because its host moved to movedTo (eviction notice); "" if none
	movedURL  *url.URL // movedTo's internal URL; nil if unknown

	// The peers' answer, once asked (askView).
	asked     bool     // the peers were asked
	holder    string   // the peer that said it holds the tunnel; "" if none did
	holderURL *url.URL // its internal URL
}

// resolveRoute decides where a request goes from v (see the table above).
func resolveRoute(v routeView) route {
	switch {
	case v.serving:
		return route{kind: routeServe}
	case v.hop:
		return resolveHop(v)
	case !v.read && !v.dirDown:
		return route{kind: routeLookup}
	case v.owner != "" && v.owner != v.self && v.ownerURL != nil:
		return route{kind: routeRemote, replica: v.owner, peer: v.ownerURL}
	case v.owner != "" && v.owner == v.self && v.movedTo != "" && v.movedURL != nil:
		return route{kind: routeRemote, replica: v.movedTo, peer: v.movedURL}
	case v.owner != "" && v.owner == v.self:
		return route{kind: routeClaimed}
	case !v.asked:
		return route{kind: routeAsk}
	case v.holder != "" && v.holderURL != nil:
		return route{kind: routeRemote, replica: v.holder, peer: v.holderURL}
	case v.mayWait:
		return route{kind: routeWait}
	default:
		return route{kind: routeOffline}
	}
}

// resolveHop is resolveRoute for a hop with no tunnel serving here: it is served here or answered, never forwarded
// again, except passed on once from a tunnel retiring here (see the table above).
func resolveHop(v routeView) route {
	switch {
	case !v.tried:
		return route{kind: routeClaimed}
	case !v.retiring && !v.movedAway:
		return route{kind: routeOffline}
	case !v.read && !v.dirDown:
		return route{kind: routeLookup}
	case v.owner != "" && v.owner != v.self && v.ownerURL != nil:
		return route{kind: routeRemote, replica: v.owner, peer: v.ownerURL}
	default:
		return route{kind: routeOffline}
	}
}

// viewHere is the view of id from this replica alone, and the tunnel serving it here (nil if none). hop and
// tried are the request's, and mayWait says whether its hold-on-miss wait has time left.
func (s *Server) viewHere(id string, hop, tried, mayWait bool) (routeView, *tunnelConn) {
	v := routeView{self: s.cfg.Replica, hop: hop, tried: tried, mayWait: mayWait, dirDown: s.health.isDown()}
	t := s.lookup(id)
	if t != nil && t.retiring.Load() {
		v.retiring, t = true, nil
	}
	v.serving = t != nil
	if hop && tried && !v.serving && !v.retiring { // no tunnel here at all
		_, v.movedAway = s.evictions.MovedTo(id)
	}
	return v, t
}

// viewDirectory completes v with what the directory says about id.
func (s *Server) viewDirectory(ctx context.Context, v routeView, id string) routeView {
	v.read = true
	e, err := s.dir.Lookup(ctx, id)
	switch {
	case errors.Is(err, directory.ErrNotFound):
	case err != nil:
		v.lookupErr = true
	case e.Replica != s.cfg.Replica:
		v.owner = e.Replica
		v.ownerURL, _ = s.peers.URL(ctx, e.Replica)
	default:
		v.owner = e.Replica
		if old := s.lookup(id); old != nil && old.retiring.Load() && !v.hop {
			if replica, ok := s.evictions.NewOwner(id, old.epoch); ok {
				v.movedTo = replica
				v.movedURL, _ = s.peers.URL(ctx, replica)
			}
		}
	}
	return v
}

// askView completes v with the peers' answer for id.
func (s *Server) askView(v routeView, id string) routeView {
	v.asked = true
	unknown := !v.dirDown && !v.lookupErr && v.owner == "" // the directory answered: connected nowhere
	// A round runs under the Server's lifetime, not the request's: other requests may be waiting for its answer.
	var result string
	v.holder, v.holderURL, result = s.peers.Ask(s.ctx, id, unknown)
	if result != "" {
		s.cluster.asks.WithLabelValues(result).Inc()
	}
	return v
}
