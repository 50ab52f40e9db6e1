package relay

import (
	"context"
	"net/http"

	"github.com/switchboard-relay/switchboard/internal/auth"
	"github.com/switchboard-relay/switchboard/internal/hostsapi"
)

// newHostsAPI builds the hosts and presence API (GET /v1/hosts, /v1/hosts/{id}, /v1/presence/events; package
// hostsapi) on this Server's directory, event fan-out, sealer and verifier.
func (s *Server) newHostsAPI() (*hostsapi.API, error) {
	return hostsapi.New(hostsapi.Config{
		Verifier:        s.cfg.Verifier,
		Directory:       s.dir,
		Lister:          s.dir,
		Events:          s.hub,
		Cursors:         sealedAs{s.seal, sealCursor},
		EventIDs:        sealedAs{s.seal, sealEvent},
		Relay:           hostsRelay{s},
		Logger:          s.log,
		Registerer:      s.cfg.Registerer,
		MaxBatchIDs:     s.cfg.MaxBatchIDs,
		EventsHeartbeat: s.cfg.EventsHeartbeat,
		StallTimeout:    s.cfg.StallTimeout,
		Stalled:         s.bounds.cuts.WithLabelValues(cutStalledReader),
	})
}

// hostsRelay is the Server as the hosts API sees it (hostsapi.Relay).
type hostsRelay struct{ s *Server }

func (h hostsRelay) HostURLs(r *http.Request, id string) (hostURL, pathURL string) {
	return h.s.hostURLs(r, id)
}

func (h hostsRelay) Stopping() bool { return h.s.draining.Load() || h.s.closed.Load() }

// Hold ends ctx when c's token is revoked (liveUses, revoke.go) or the Server closes.
func (h hostsRelay) Hold(ctx context.Context, c auth.Claims) (context.Context, func()) {
	ctx, done := h.s.live.track(ctx, c)
	ctx, cancel := context.WithCancel(ctx)
	stop := context.AfterFunc(h.s.ctx, cancel)
	return ctx, func() {
		stop()
		cancel()
		done()
	}
}

// sealedAs seals the positions of one purpose (hostsapi.Sealer).
type sealedAs struct {
	s       *sealer
	purpose byte
}

func (p sealedAs) Seal(position string) string       { return p.s.seal(p.purpose, position) }
func (p sealedAs) SealRandom(position string) string { return p.s.sealRandom(p.purpose, position) }
func (p sealedAs) Open(v string) (string, error)     { return p.s.open(p.purpose, v) }
