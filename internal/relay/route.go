package relay

import (
	"context"
	"errors"
	"net/url"

	"github.com/switchboard-relay/switchboard/internal/directory"
)

// This file holds the decision where a request for a host without a tunnel serving here goes (resolveRoute), from
// what the directory, the directory's health state and the peers say (routeView). The decision has no side effects;
// routeMiss (forward.go) gathers the view and carries the decision out.
//
//	what is known                                              → where the request goes
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
// A directory known down is not read at all (dirhealth.go): the request goes straight to asking the peers.

// routeKind is where a request goes.
type routeKind uint8

const (
	routeRemote  routeKind = iota + 1 // forward to (or have Fly replay at) replica
	routeClaimed                      // the directory names this replica: wait for the tunnel to register here
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

// routeView is what is known about a host that has no tunnel serving here.
type routeView struct {
	self    string // this replica's id
	dirDown bool   // the directory is known down: it was not read

	// The directory's answer, if it was read.
	owner     string   // the replica it names; "" if none
	ownerURL  *url.URL // owner's internal URL; nil if unknown (or forwarding is off)
	lookupErr bool     // the directory did not answer
	movedTo   string   // a tunnel here retiring because its host moved to movedTo (eviction notice); "" if none
	movedURL  *url.URL // movedTo's internal URL; nil if unknown

	asked     bool     // the peers were asked
	holder    string   // the peer that said it holds the tunnel; "" if none did
	holderURL *url.URL // its internal URL
	mayWait   bool     // the hold-on-miss wait has time left
}

// resolveRoute decides where a request goes from v (see the table above).
func resolveRoute(v routeView) route {
	switch {
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

// viewRoute learns what the directory says about id, unless it is known down.
func (s *Server) viewRoute(ctx context.Context, id string, mayWait bool) routeView {
	v := routeView{self: s.cfg.Replica, dirDown: s.health.isDown(), mayWait: mayWait}
	if v.dirDown {
		return v
	}
	e, err := s.dir.Lookup(ctx, id)
	switch {
	case errors.Is(err, directory.ErrNotFound):
	case err != nil:
		v.lookupErr = true
	case e.Replica != s.cfg.Replica:
		v.owner = e.Replica
		v.ownerURL, _ = s.peer(ctx, e.Replica)
	default:
		v.owner = e.Replica
		if old := s.lookup(id); old != nil && old.retiring.Load() {
			if replica, ok := s.evictions.newOwner(id, old.epoch); ok {
				v.movedTo = replica
				v.movedURL, _ = s.peer(ctx, replica)
			}
		}
	}
	return v
}

// askView completes v with the peers' answer for id.
func (s *Server) askView(v routeView, id string) routeView {
	v.asked = true
	unknown := !v.dirDown && !v.lookupErr && v.owner == "" // the directory answered: connected nowhere
	v.holder, v.holderURL, _ = s.askPeers(id, unknown)
	return v
}
