// Package tcpstream carries one TCP connection over a WebSocket, the way Switchboard's raw TCP services travel
// through the relay (docs/protocol.md, "Raw TCP"): bytes as binary messages, a half-close as the text message
// tunnel.TCPEOF, the end of the stream as a close with 1000 once both directions announced their end, and any
// other close as an abort. Both ends use Bridge: the agent between the WebSocket and the service, the client
// (`switchboard connect` and `forward`) between the WebSocket and its stdin/stdout or a local connection.
package tcpstream

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"

	"github.com/coder/websocket"

	"github.com/switchboard-relay/switchboard/internal/tunnel"
)

// chunk is the most bytes one binary message carries; readLimit bounds what a peer may send in one message.
const (
	chunk     = 256 << 10
	readLimit = 1 << 20
)

// ErrProtocol reports a message that breaks the stream's rules (a text message other than tunnel.TCPEOF, bytes
// after it, a message larger than the read limit).
var ErrProtocol = errors.New("tcpstream: protocol error")

// ErrAborted reports that the peer ended the stream with a close other than a normal one after both ends' EOF.
var ErrAborted = errors.New("tcpstream: stream aborted by the peer")

// Local is the local side of a bridge: a TCP connection, or stdin and stdout.
type Local interface {
	io.Reader
	io.Writer
	// CloseWrite ends the local write direction (TCP FIN; closing stdout) once the peer announced its end.
	CloseWrite() error
	// Close ends both directions and must unblock a pending Read.
	Close() error
}

// Result counts what a bridge carried.
type Result struct {
	Sent     int64 // bytes read locally and sent as binary messages
	Received int64 // bytes received and written locally
}

// Bridge carries bytes between ws and local until both directions have ended (or one fails, or ctx ends), then
// closes ws (1000 when both ends announced their end, 1011 otherwise) and local. It returns nil for a complete
// stream; ErrAborted, ErrProtocol, ctx's error or a local I/O error otherwise. It waits for its goroutines.
func Bridge(ctx context.Context, ws *websocket.Conn, local Local) (Result, error) {
	ws.SetReadLimit(readLimit + 1) // down counts the bytes itself, so that a message over readLimit is ErrProtocol
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	b := &bridge{ws: ws, local: local, eof: make(chan struct{})}
	upErr := make(chan error, 1)
	downErr := make(chan error, 1)
	var wg sync.WaitGroup
	wg.Go(func() { upErr <- b.up(ctx) })
	wg.Go(func() { downErr <- b.down(ctx) })

	var err error
	upDone, gotEOF, downDone := false, false, false
	// peerEOF passes the peer's EOF on to the local side, once.
	peerEOF := func() {
		gotEOF, b.eof = true, nil
		if e := local.CloseWrite(); e != nil && err == nil {
			err = fmt.Errorf("local half-close: %w", e)
		}
	}
	for err == nil && !(upDone && gotEOF) {
		select {
		case e := <-upErr:
			upDone, err = true, e
		case <-b.eof:
			peerEOF()
		case e := <-downErr:
			downDone = true
			switch {
			case e != nil:
				err = e
			case !b.eofSending.Load():
				err = ErrAborted // closed normally before our own end went out
			default:
				// The peer closes normally only after both ends' EOF, so its close can be seen before up reported
				// that ours went out, and before the case above saw its EOF: take both in that order.
				if !gotEOF {
					peerEOF()
				}
				if !upDone {
					upDone = true
					if e := <-upErr; err == nil {
						err = e
					}
				}
			}
		case <-ctx.Done():
			err = ctx.Err()
		}
	}
	if err == nil {
		_ = ws.Close(websocket.StatusNormalClosure, "")
	} else {
		_ = local.Close() // the service or the user sees the end at once
		_ = ws.Close(websocket.StatusInternalError, "stream aborted")
	}
	_ = local.Close()
	cancel()
	if !downDone {
		<-downErr
	}
	if !upDone {
		<-upErr
	}
	wg.Wait()
	return Result{Sent: b.sent, Received: b.received}, err
}

type bridge struct {
	ws    *websocket.Conn
	local Local
	eof   chan struct{} // closed by down when the peer's EOF arrived; owned by Bridge after that

	sent     int64 // owned by up
	received int64 // owned by down

	eofSending atomic.Bool // set by up just before it sends our EOF; a normal close before that is an abort
}

// up reads the local side and sends it as binary messages, then the EOF text message.
func (b *bridge) up(ctx context.Context) error {
	buf := make([]byte, chunk)
	for {
		n, err := b.local.Read(buf)
		if n > 0 {
			if werr := b.ws.Write(ctx, websocket.MessageBinary, buf[:n]); werr != nil {
				return fmt.Errorf("send: %w", werr)
			}
			b.sent += int64(n)
		}
		if errors.Is(err, io.EOF) {
			b.eofSending.Store(true)
			if werr := b.ws.Write(ctx, websocket.MessageText, []byte(tunnel.TCPEOF)); werr != nil {
				return fmt.Errorf("send eof: %w", werr)
			}
			return nil
		}
		if err != nil {
			return fmt.Errorf("local read: %w", err)
		}
	}
}

// down receives messages and writes binary ones locally. After the peer's EOF it keeps reading, so that an abort
// (or the peer vanishing) is seen while the other direction is still sending; a normal close then returns nil.
func (b *bridge) down(ctx context.Context) error {
	gotEOF := false
	for {
		typ, r, err := b.ws.Reader(ctx)
		if err != nil {
			if gotEOF && websocket.CloseStatus(err) == websocket.StatusNormalClosure {
				return nil
			}
			return fmt.Errorf("%w: %w", ErrAborted, err)
		}
		if typ == websocket.MessageText {
			msg, err := io.ReadAll(io.LimitReader(r, 16))
			if err != nil {
				return fmt.Errorf("%w: %w", ErrAborted, err)
			}
			if string(msg) != tunnel.TCPEOF || gotEOF {
				return fmt.Errorf("%w: unexpected text message", ErrProtocol)
			}
			gotEOF = true
			close(b.eof)
			continue
		}
		if gotEOF {
			return fmt.Errorf("%w: bytes after eof", ErrProtocol)
		}
		src := &readErr{r: r}
		n, err := io.Copy(b.local, io.LimitReader(src, readLimit+1))
		b.received += n
		switch {
		case src.err != nil:
			return fmt.Errorf("%w: %w", ErrAborted, src.err)
		case err != nil:
			return fmt.Errorf("local write: %w", err)
		case n > readLimit:
			return fmt.Errorf("%w: message over %d bytes", ErrProtocol, readLimit)
		}
	}
}

// readErr remembers a read error other than io.EOF, to tell a broken WebSocket from a failing local write.
type readErr struct {
	r   io.Reader
	err error
}

func (e *readErr) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	if err != nil && !errors.Is(err, io.EOF) {
		e.err = err
	}
	return n, err
}
