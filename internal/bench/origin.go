package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/coder/websocket"

	"github.com/switchboard-relay/switchboard/internal/listen"
)

// The origin is the upstream every scenario measures, reached directly and through the relay. Its paths:
//
//	GET  /small                  a 64-byte body with Content-Length (the rps and latency scenarios)
//	GET  /bytes?n=N              N bytes with Content-Length, written in 256 KiB slices (bulk download)
//	POST /sink                   reads and discards the body, answers its length (bulk upload)
//	GET  /sse?interval=D&n=N     N server-sent events, one every D, each "data: <unix nanoseconds>" (sse)
//	GET  /ws                     WebSocket echo of every message (ws)
const smallBody = "switchboard bench origin: a small keep-alive response body, 64 B\n"

// originHandler returns the origin's handler.
func originHandler() http.Handler {
	mux := http.NewServeMux()
	small := []byte(smallBody)
	mux.HandleFunc("GET /small", func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h["Content-Type"] = []string{"text/plain"}
		h["Content-Length"] = []string{strconv.Itoa(len(small))}
		_, _ = w.Write(small)
	})
	chunk := make([]byte, 256<<10)
	for i := range chunk {
		chunk[i] = byte(i * 7)
	}
	mux.HandleFunc("GET /bytes", func(w http.ResponseWriter, r *http.Request) {
		n, err := strconv.ParseInt(r.URL.Query().Get("n"), 10, 64)
		if err != nil || n < 0 {
			http.Error(w, "bad n", http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("Content-Length", strconv.FormatInt(n, 10))
		for n > 0 {
			m := min(n, int64(len(chunk)))
			if _, err := w.Write(chunk[:m]); err != nil {
				return
			}
			n -= m
		}
	})
	mux.HandleFunc("POST /sink", func(w http.ResponseWriter, r *http.Request) {
		buf := make([]byte, 256<<10)
		n, err := io.CopyBuffer(io.Discard, r.Body, buf)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		fmt.Fprintf(w, "%d\n", n)
	})
	mux.HandleFunc("GET /sse", serveSSE)
	mux.HandleFunc("GET /ws", serveEcho)
	return mux
}

// serveSSE writes n timestamped events, one per interval, flushing each.
func serveSSE(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	interval, err := time.ParseDuration(q.Get("interval"))
	if err != nil || interval <= 0 {
		interval = 100 * time.Millisecond
	}
	n, err := strconv.Atoi(q.Get("n"))
	if err != nil || n <= 0 || n > 1_000_000 {
		n = 100
	}
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	if err := rc.Flush(); err != nil {
		return
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	buf := make([]byte, 0, 64)
	for range n {
		select {
		case <-r.Context().Done():
			return
		case <-t.C:
		}
		buf = append(buf[:0], "data: "...)
		buf = strconv.AppendInt(buf, time.Now().UnixNano(), 10)
		buf = append(buf, "\n\n"...)
		if _, err := w.Write(buf); err != nil {
			return
		}
		if err := rc.Flush(); err != nil {
			return
		}
	}
}

// serveEcho echoes WebSocket messages until the client closes.
func serveEcho(w http.ResponseWriter, r *http.Request) {
	c, err := websocket.Accept(w, r, nil)
	if err != nil {
		return
	}
	defer c.CloseNow()
	c.SetReadLimit(1 << 20)
	ctx := r.Context()
	for {
		typ, b, err := c.Read(ctx)
		if err != nil {
			return
		}
		if err := c.Write(ctx, typ, b); err != nil {
			return
		}
	}
}

// origin is a running origin server.
type origin struct {
	Addr string // host:port
	// PID is the origin's process when it runs as a child; 0 when it runs inside the bench process.
	PID   int
	close func() error
}

// Close stops the origin.
func (o *origin) Close() error { return o.close() }

// startLocalOrigin serves the origin inside this process on a free loopback port.
func startLocalOrigin() (*origin, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("listen origin: %w", err)
	}
	srv := &http.Server{Handler: originHandler(), ReadHeaderTimeout: 10 * time.Second}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	return &origin{Addr: ln.Addr().String(), close: func() error {
		srv.Close()
		if err := <-done; err != nil && !errors.Is(err, http.ErrServerClosed) {
			return err
		}
		return nil
	}}, nil
}

// ServeOrigin serves the bench origin on addr (a listen address, or fd:N for a socket the parent passed down) until
// ctx ends. Run calls it when Config.OriginServe is set, which is how the bench starts the origin as a child process
// of its own.
func ServeOrigin(ctx context.Context, addr string) error {
	ln, err := listen.Open(addr)
	if err != nil {
		return fmt.Errorf("listen origin: %w", err)
	}
	srv := &http.Server{Handler: originHandler(), ReadHeaderTimeout: 10 * time.Second}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	select {
	case err := <-done:
		return fmt.Errorf("serve origin: %w", err)
	case <-ctx.Done():
		srv.Close()
		<-done
		return nil
	}
}
