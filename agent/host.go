package agent

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"sync"
	"time"

	"github.com/switchboard-relay/switchboard/internal/tunnel"
)

// Host header modes (UpstreamOptions.HostHeader); any other non-empty value is sent as the Host itself.
const (
	// HostHeaderUpstream sends the upstream URL's host:port as Host (the default).
	HostHeaderUpstream = "upstream"
	// HostHeaderPreserve passes on the Host the client sent to the relay (the public name).
	HostHeaderPreserve = "preserve"
)

// UpstreamOptions tune UpstreamHandlerWith. The zero value is UpstreamHandler's behaviour.
type UpstreamOptions struct {
	// Fixed headers are added to every upstream request (for example a secret the upstream checks). If nil, none.
	Fixed http.Header
	// HostHeader is HostHeaderUpstream, HostHeaderPreserve or a fixed host name to send as Host. If empty,
	// HostHeaderUpstream. X-Forwarded-Host always carries the client's Host.
	HostHeader string
	// TLS configures connections to an https:// upstream (a private CA, or InsecureSkipVerify). If nil, the
	// system's roots verify the upstream's certificate.
	TLS *tls.Config
	// Logger receives a WARN line per exchange the upstream failed. If nil, failures are not logged.
	Logger *slog.Logger
	// TCP are the named TCP services Host publishes (name → host:port; see TCPHandler and tcp.go). If nil, none.
	TCP map[string]string
	// Wrap, if set, wraps the handler that serves Host's streams that are not bridged: the TCP services (for
	// example to count exchanges; the agent's own 502s carry tunnel.HeaderUpstreamError). If nil, the handler
	// serves as is.
	Wrap func(http.Handler) http.Handler
	// Exchange, if set, is called as the bridge (NewBridge, Host) starts each exchange, with its kind ("http", or
	// "websocket" for an upgrade); the function it returns is called when the exchange ends, with its outcome:
	// OutcomeOK, OutcomeUnreachable or OutcomeClientGone.
	Exchange func(kind string) (done func(outcome string))
	// Listening, if set, is called with Host's listener once it is created (for example to export its Stats).
	Listening func(*Listener)
}

// UpstreamHandler returns the handler that serves tunnel streams from upstream: a reverse proxy that keeps the
// relay's forwarding headers and adds the fixed headers given (for example a secret the upstream checks).
func UpstreamHandler(upstream *url.URL, fixed http.Header) http.Handler {
	return UpstreamHandlerWith(upstream, UpstreamOptions{Fixed: fixed})
}

// UpstreamHandlerWith is UpstreamHandler with options. A redirect whose Location names the upstream's own origin
// is turned to the public origin the client used (X-Forwarded-Proto and -Host), which the relay then places under
// its path prefix in path mode: the browser never sees the private upstream address.
func UpstreamHandlerWith(upstream *url.URL, opts UpstreamOptions) http.Handler {
	fixed := opts.Fixed
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	transport := &http.Transport{
		Proxy:                 nil,
		DialContext:           (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:          1024,
		MaxIdleConnsPerHost:   1024, // one per concurrent exchange: a small pool throttles busy hosts
		IdleConnTimeout:       90 * time.Second,
		DisableCompression:    true,
		ExpectContinueTimeout: time.Second,
		WriteBufferSize:       32 << 10,
		ReadBufferSize:        32 << 10,
		TLSClientConfig:       opts.TLS.Clone(),
	}
	if upstream.Scheme == "https" {
		transport.ForceAttemptHTTP2 = false // HTTP/1.1 keeps upgrades (WebSocket) working
	}
	return &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			// Rewrite strips X-Forwarded-*: the relay set them, so carry them over as they came.
			for _, k := range []string{"X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto"} {
				if v := pr.In.Header[k]; len(v) > 0 {
					pr.Out.Header[k] = v
				}
			}
			pr.SetURL(upstream)
			switch opts.HostHeader {
			case "", HostHeaderUpstream:
			case HostHeaderPreserve:
				pr.Out.Host = pr.In.Host
			default:
				pr.Out.Host = opts.HostHeader
			}
			if len(pr.Out.Header["X-Forwarded-Host"]) == 0 {
				pr.Out.Header.Set("X-Forwarded-Host", pr.In.Host)
			}
			for k, v := range fixed {
				pr.Out.Header[k] = v
			}
			// Request trailers arrive in the incoming map when its body ends; the transport writes the outgoing
			// map after the body, so share the map (Clone gave Out an empty copy).
			pr.Out.Trailer = pr.In.Trailer
		},
		Transport:     transport,
		BufferPool:    bufferPool{},
		FlushInterval: 5 * time.Millisecond, // SSE and chunked bodies: at once (ReverseProxy); sized ones: within 5 ms
		ModifyResponse: func(resp *http.Response) error {
			if loc := resp.Header.Get("Location"); loc != "" {
				resp.Header.Set("Location", publicLocation(loc, upstream, resp.Request))
			}
			return nil
		},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			if r.Context().Err() != nil {
				return // the client went away; nobody is listening
			}
			log.Warn("upstream failed", "method", r.Method, "path", r.URL.Path, "err", err)
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set(tunnel.HeaderUpstreamError, tunnel.UpstreamUnreachable)
			w.WriteHeader(http.StatusBadGateway)
			_ = json.NewEncoder(w).Encode(map[string]any{"error": map[string]string{
				"code":    "upstream_unreachable",
				"message": "the host agent could not reach its upstream",
			}})
		},
	}
}

// publicLocation turns loc, an upstream's Location, to the public origin of out (the request sent upstream, whose
// X-Forwarded-Proto and -Host the relay set) when it names the upstream's own origin; otherwise it returns loc.
func publicLocation(loc string, upstream *url.URL, out *http.Request) string {
	return publicLocationFor(loc, upstream, out.Header.Get("X-Forwarded-Host"), out.Header.Get("X-Forwarded-Proto"))
}

// Host keeps a tunnel and serves upstream (an http:// or https:// URL) through it until ctx ends, when it returns
// nil. It is what `switchboard host` runs. upstream may be empty when opts.TCP publishes TCP services: the host
// then serves those only. It returns early with an error matching ErrAuth if the relay refuses the token for good
// (see Config.Token).
func Host(ctx context.Context, cfg Config, upstream string, opts UpstreamOptions) error {
	if opts.Logger == nil && cfg.Logger != nil {
		opts.Logger = cfg.Logger.With("host_id", cfg.HostID)
	}
	var (
		bridge  *Bridge
		handler http.Handler // what an http.Server serves: the TCP services (and the streams the bridge hands over)
	)
	if upstream != "" || len(opts.TCP) == 0 {
		u, err := url.Parse(upstream)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("agent: upstream %q must be an http:// or https:// URL", upstream)
		}
		if bridge, err = NewBridge(u, opts); err != nil {
			return err
		}
		defer bridge.Close()
		handler = UpstreamHandlerWith(u, opts)
	}
	var tcp *TCPHandler
	if len(opts.TCP) > 0 {
		var err error
		if tcp, err = NewTCPHandler(opts.TCP, handler, opts.Logger); err != nil {
			return err
		}
		handler = tcp
		cfg.Labels = maps.Clone(cfg.Labels)
		if cfg.Labels == nil {
			cfg.Labels = map[string]string{}
		}
		cfg.Labels[tunnel.TCPLabel] = TCPLabelValue(opts.TCP)
	}
	if opts.Wrap != nil {
		handler = opts.Wrap(handler)
	}
	ln, err := Listen(ctx, cfg)
	if err != nil {
		return err
	}
	if opts.Listening != nil {
		opts.Listening(ln)
	}
	// Streams of HTTP exchanges go through the bridge; a stream whose first request opens a TCP service goes to an
	// http.Server with the TCP handler (which passes any later plain request to the reverse proxy).
	var srv *http.Server
	var handoff *handoffListener
	if tcp != nil {
		srv = &http.Server{Handler: handler, ReadHeaderTimeout: time.Minute}
	}
	if bridge != nil && tcp != nil {
		handoff = newHandoffListener(ln.Addr())
		bridge.fallback = handoff.push
	}
	var wg sync.WaitGroup
	var serveErr error
	served := make(chan struct{})
	wg.Go(func() {
		defer close(served)
		switch {
		case bridge == nil:
			serveErr = srv.Serve(ln)
		default:
			serveErr = bridge.Serve(ln)
		}
	})
	if handoff != nil {
		wg.Go(func() { _ = srv.Serve(handoff) })
	}
	select {
	case <-ctx.Done():
	case <-served: // the listener stopped by itself
	}
	shutdownCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	_ = ln.Close()
	if handoff != nil {
		_ = handoff.Close()
	}
	if srv != nil {
		_ = srv.Shutdown(shutdownCtx)
	}
	wg.Wait()
	if bridge != nil {
		_ = bridge.Close() // the closed tunnel ended their streams
	}
	if tcp != nil {
		tcp.Wait()
	}
	if errors.Is(serveErr, http.ErrServerClosed) || errors.Is(serveErr, net.ErrClosed) {
		return nil
	}
	return serveErr
}

// handoffListener is a net.Listener fed by the bridge with streams it hands over.
type handoffListener struct {
	addr   net.Addr
	conns  chan net.Conn
	done   chan struct{}
	closer sync.Once
}

func newHandoffListener(addr net.Addr) *handoffListener {
	return &handoffListener{addr: addr, conns: make(chan net.Conn), done: make(chan struct{})}
}

// push hands c to Accept, or closes it once the listener is closed.
func (l *handoffListener) push(c net.Conn) {
	select {
	case l.conns <- c:
	case <-l.done:
		_ = c.Close()
	}
}

func (l *handoffListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *handoffListener) Close() error {
	l.closer.Do(func() { close(l.done) })
	return nil
}

func (l *handoffListener) Addr() net.Addr { return l.addr }

// copyBuffers lend large buffers to the reverse proxy: each write becomes one multiplexer frame, so big buffers
// mean fewer frames and goroutine hand-offs per byte on bulk transfers.
var copyBuffers = sync.Pool{New: func() any { b := make([]byte, 256<<10); return &b }}

type bufferPool struct{}

func (bufferPool) Get() []byte  { return *copyBuffers.Get().(*[]byte) }
func (bufferPool) Put(b []byte) { copyBuffers.Put(&b) }
