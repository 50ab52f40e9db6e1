package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"sync"
	"time"
)

// UpstreamHandler returns the handler that serves tunnel streams from upstream: a reverse proxy that keeps the
// relay's forwarding headers and adds the fixed headers given (for example a secret the upstream checks).
func UpstreamHandler(upstream *url.URL, fixed http.Header) http.Handler {
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
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			if r.Context().Err() != nil {
				return // the client went away; nobody is listening
			}
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusBadGateway)
			_ = json.NewEncoder(w).Encode(map[string]any{"error": map[string]string{
				"code":    "upstream_unreachable",
				"message": "the host agent could not reach its upstream",
			}})
		},
	}
}

// Host keeps a tunnel and serves upstream through it until ctx ends. It is `switchboard host`.
func Host(ctx context.Context, cfg Config, upstream string, fixed http.Header) error {
	u, err := url.Parse(upstream)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("agent: upstream %q must be an http:// or https:// URL", upstream)
	}
	ln, err := Listen(ctx, cfg)
	if err != nil {
		return err
	}
	srv := &http.Server{
		Handler:           UpstreamHandler(u, fixed),
		ReadHeaderTimeout: time.Minute,
		ErrorLog:          nil,
	}
	var wg sync.WaitGroup
	var serveErr error
	wg.Go(func() { serveErr = srv.Serve(ln) })
	<-ctx.Done()
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_ = ln.Close()
	_ = srv.Shutdown(shutdownCtx)
	wg.Wait()
	if errors.Is(serveErr, http.ErrServerClosed) || errors.Is(serveErr, net.ErrClosed) {
		return nil
	}
	return serveErr
}

// copyBuffers lend large buffers to the reverse proxy: each write becomes one multiplexer frame, so big buffers
// mean fewer frames and goroutine hand-offs per byte on bulk transfers.
var copyBuffers = sync.Pool{New: func() any { b := make([]byte, 256<<10); return &b }}

type bufferPool struct{}

func (bufferPool) Get() []byte  { return *copyBuffers.Get().(*[]byte) }
func (bufferPool) Put(b []byte) { copyBuffers.Put(&b) }
