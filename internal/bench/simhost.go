package bench

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
	"github.com/hashicorp/yamux"

	"github.com/switchboard-relay/switchboard/internal/tunnel"
)

// fleet dials simulated hosts: the agent's side of the tunnel protocol, kept lean so that one bench process can hold
// tens of thousands of tunnels. Per tunnel it runs four goroutines (yamux's reader and writer, the HTTP accept loop
// and the control-stream reader) and no keepalive timer: the relay pings and yamux answers in its reader.
type fleet struct {
	url    string // ws://relay/v1/tunnel
	raw    bool   // dial the raw transport (the agent's default) instead of WebSocket
	dialer func(ctx context.Context, network, addr string) (net.Conn, error)
	token  func(id string) (string, error)
	client *http.Client // dials the upgrade; rotates source addresses
	srv    *http.Server // answers every stream; shared by all tunnels
	ycfg   *yamux.Config

	// active counts open tunnels.
	active atomic.Int64
}

// newFleet prepares to dial tunnels to r. Source addresses rotate over sources loopback addresses (127.0.0.1,
// 127.0.0.2, …) so that more tunnels than one address has ephemeral ports can be held.
func newFleet(r *relayProc, token func(string) (string, error), sources int) *fleet {
	sources = max(sources, 1)
	var next atomic.Uint32
	d := &net.Dialer{Timeout: 10 * time.Second}
	tr := &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			if sources > 1 {
				i := next.Add(1) % uint32(sources)
				dd := *d
				dd.LocalAddr = &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(1+i))}
				return dd.DialContext(ctx, network, addr)
			}
			return d.DialContext(ctx, network, addr)
		},
		MaxIdleConns:      -1,
		DisableKeepAlives: true,
		ForceAttemptHTTP2: false,
	}
	ycfg := tunnel.Options{}.YamuxConfig()
	ycfg.EnableKeepAlive = false
	return &fleet{
		url:    r.tunnelURL(),
		raw:    true,
		dialer: tr.DialContext,
		token:  token,
		client: &http.Client{Transport: tr},
		srv: &http.Server{
			Handler:           http.HandlerFunc(simHandler),
			ReadHeaderTimeout: 30 * time.Second,
		},
		ycfg: ycfg,
	}
}

// simHandler answers every request a simulated host gets.
func simHandler(w http.ResponseWriter, _ *http.Request) {
	w.Header()["Content-Length"] = []string{"3"}
	_, _ = w.Write([]byte("ok\n"))
}

// close releases the fleet's idle resources; tunnels must be closed first.
func (f *fleet) close() {
	f.client.CloseIdleConnections()
}

// simTunnel is one simulated host's tunnel.
type simTunnel struct {
	id   string
	ws   *websocket.Conn // nil on the raw transport
	conn net.Conn        // the connection under yamux
	sess *yamux.Session
	ctrl net.Conn
	done chan struct{} // closed when the tunnel's goroutines have ended

	// Guarded by mu: the streams the relay opened that are still open.
	mu      sync.Mutex
	streams []net.Conn
}

// dial opens a tunnel for host id: WebSocket upgrade, yamux server, the control stream, and an HTTP/1.1 server on
// the streams the relay opens.
func (f *fleet) dial(ctx context.Context, id string) (*simTunnel, error) {
	tok, err := f.token(id)
	if err != nil {
		return nil, err
	}
	dctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	var (
		c    *websocket.Conn
		conn net.Conn
	)
	if f.raw {
		conn, err = f.dialRaw(dctx, id, tok)
		if err != nil {
			return nil, err
		}
	} else {
		var resp *http.Response
		c, resp, err = websocket.Dial(dctx, f.url, &websocket.DialOptions{
			HTTPClient:   f.client,
			Subprotocols: []string{tunnel.Subprotocol},
			HTTPHeader: http.Header{
				"Authorization":     {"Bearer " + tok},
				tunnel.HeaderHostID: {id},
			},
		})
		if err != nil {
			if resp != nil {
				return nil, fmt.Errorf("dial tunnel %s: status %d: %w", id, resp.StatusCode, err)
			}
			return nil, fmt.Errorf("dial tunnel %s: %w", id, err)
		}
		c.SetReadLimit(-1)
		// The tunnel lives until closed, not until ctx: its NetConn gets a background context.
		conn = abruptConn{Conn: websocket.NetConn(context.Background(), c, websocket.MessageBinary), ws: c}
	}
	sess, err := yamux.Server(conn, f.ycfg)
	if err != nil {
		_ = conn.Close()
		return nil, fmt.Errorf("start yamux for %s: %w", id, err)
	}
	ctrl, err := sess.OpenStream()
	if err != nil {
		sess.Close()
		_ = conn.Close()
		return nil, fmt.Errorf("open control stream for %s: %w", id, err)
	}
	t := &simTunnel{id: id, ws: c, conn: conn, sess: sess, ctrl: ctrl, done: make(chan struct{})}
	f.active.Add(1)
	go t.run(f)
	return t, nil
}

// Accept makes the tunnel the net.Listener its HTTP server serves: the relay's streams, tracked until closed.
func (t *simTunnel) Accept() (net.Conn, error) {
	c, err := t.sess.Accept()
	if err != nil {
		return nil, err
	}
	tc := &trackedConn{Conn: c, t: t}
	t.mu.Lock()
	t.streams = append(t.streams, tc)
	t.mu.Unlock()
	return tc, nil
}

// Close closes the session (net.Listener).
func (t *simTunnel) Close() error { return t.sess.Close() }

// Addr is the session's address (net.Listener).
func (t *simTunnel) Addr() net.Addr { return t.sess.Addr() }

// unblockReads makes every blocked read on the tunnel's streams return now (see abruptConn).
func (t *simTunnel) unblockReads() {
	past := time.Unix(1, 0)
	_ = t.ctrl.SetReadDeadline(past)
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, c := range t.streams {
		_ = c.SetReadDeadline(past)
	}
}

// trackedConn is a stream that leaves its tunnel's list when closed.
type trackedConn struct {
	net.Conn
	t    *simTunnel
	once sync.Once
}

func (c *trackedConn) Close() error {
	c.once.Do(func() {
		c.t.mu.Lock()
		defer c.t.mu.Unlock()
		for i, s := range c.t.streams {
			if s == c {
				c.t.streams = slices.Delete(c.t.streams, i, i+1)
				break
			}
		}
	})
	return c.Conn.Close()
}

// run owns the tunnel: it serves streams and reads control messages until the session ends, then waits for the
// server loop.
func (t *simTunnel) run(f *fleet) {
	defer close(t.done)
	defer f.active.Add(-1)
	served := make(chan struct{})
	go func() {
		defer close(served)
		_ = f.srv.Serve(t) // returns when the session closes
	}()
	br := bufio.NewReaderSize(t.ctrl, 512)
	for {
		line, err := br.ReadSlice('\n')
		if err != nil {
			break
		}
		// The only message today is a drain notice; a simulated host treats it like the relay closing.
		if c, err := tunnel.ParseControl(line[:len(line)-1]); err == nil && c.Type == tunnel.ControlDrain {
			break
		}
	}
	t.unblockReads()
	_ = t.conn.Close()
	t.sess.Close()
	<-served
}

// dialRaw upgrades a connection to the raw transport (see tunnel.RawUpgrade).
func (f *fleet) dialRaw(ctx context.Context, id, tok string) (net.Conn, error) {
	u, err := url.Parse(f.url)
	if err != nil {
		return nil, err
	}
	nc, err := f.dialer(ctx, "tcp", u.Host)
	if err != nil {
		return nil, fmt.Errorf("dial tunnel %s: %w", id, err)
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = nc.SetDeadline(dl)
	}
	req := fmt.Sprintf("GET %s HTTP/1.1\r\nHost: %s\r\nConnection: Upgrade\r\nUpgrade: %s\r\nAuthorization: Bearer %s\r\n%s: %s\r\n\r\n",
		u.Path, u.Host, tunnel.RawUpgrade, tok, tunnel.HeaderHostID, id)
	if _, err := io.WriteString(nc, req); err != nil {
		_ = nc.Close()
		return nil, fmt.Errorf("dial tunnel %s: %w", id, err)
	}
	br := bufio.NewReaderSize(nc, 512)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		_ = nc.Close()
		return nil, fmt.Errorf("dial tunnel %s: %w", id, err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		_ = nc.Close()
		return nil, fmt.Errorf("dial tunnel %s: status %d", id, resp.StatusCode)
	}
	_ = nc.SetDeadline(time.Time{})
	return &tunnel.BufferedConn{Conn: nc, R: br}, nil
}

// abruptConn is the connection yamux runs on: its Close drops the WebSocket at once instead of running the close
// handshake that a NetConn's Close runs.
//
// yamux's Session.Close closes its shutdown channel, then closes the connection and waits for its reader, and only
// then marks the streams closed; in that window every blocked Stream.Read spins (it wakes on the shutdown channel
// and finds its stream still open). With a NetConn the window lasted a whole close handshake, and profiles showed
// the bench burning whole cores in Stream.Read during churn. So the bench also unblocks every stream reader (a
// read deadline in the past) before it closes a tunnel.
type abruptConn struct {
	net.Conn
	ws *websocket.Conn
}

func (c abruptConn) Close() error {
	c.ws.CloseNow()
	_ = c.Conn.Close() // releases the NetConn's timers; the WebSocket is already closed
	return nil
}

// close ends the tunnel the way an exiting agent does (normal closure) and waits for its goroutines.
func (t *simTunnel) close() {
	t.unblockReads()
	if t.ws != nil {
		_ = t.ws.Close(tunnel.CloseNormal, "bench done")
	}
	_ = t.conn.Close()
	t.sess.Close()
	<-t.done
}

// abort ends the tunnel at once, without a close handshake, and waits for its goroutines.
func (t *simTunnel) abort() {
	t.unblockReads()
	_ = t.conn.Close()
	t.sess.Close()
	<-t.done
}

// abortAll ends tunnels at once (tearing down after a measurement, where a close handshake per tunnel only costs
// time).
func abortAll(ts []*simTunnel) {
	for _, t := range ts {
		if t != nil {
			t.abort()
		}
	}
}

// dialMany opens n tunnels with ids prefix-0 … prefix-(n-1), par at a time, and returns them in order. On error
// it closes what it opened.
func (f *fleet) dialMany(ctx context.Context, prefix string, n, par int, progress func(done int)) ([]*simTunnel, error) {
	ts := make([]*simTunnel, n)
	var (
		next    atomic.Int64
		done    atomic.Int64
		errOnce sync.Once
		first   error
		wg      sync.WaitGroup
	)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for range min(par, n) {
		wg.Go(func() {
			for ctx.Err() == nil {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				t, err := f.dial(ctx, prefix+"-"+strconv.Itoa(i))
				if err != nil {
					errOnce.Do(func() { first = err; cancel() })
					return
				}
				ts[i] = t
				if d := done.Add(1); progress != nil {
					progress(int(d))
				}
			}
		})
	}
	wg.Wait()
	if first == nil && ctx.Err() != nil {
		first = ctx.Err()
	}
	if first != nil {
		abortAll(ts)
		return nil, first
	}
	return ts, nil
}

// backoff is the agent's reconnect policy: full jitter, exponential from base to cap.
type backoff struct {
	base, cap time.Duration
	attempt   int
}

// next returns the wait before the next attempt.
func (b *backoff) next() time.Duration {
	d := b.base << min(b.attempt, 16)
	if d > b.cap || d <= 0 {
		d = b.cap
	}
	b.attempt++
	return rand.N(d) + time.Millisecond
}
