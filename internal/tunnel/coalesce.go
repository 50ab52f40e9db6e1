package tunnel

import (
	"bufio"
	"context"
	"encoding/binary"
	"net"

	"github.com/coder/websocket"
)

// yamux frame header layout (12 bytes, big endian):
//
//	0      1      2      4          8          12
//	+------+------+------+----------+----------+
//	| ver  | type | flags| streamID |  length  |
//	+------+------+------+----------+----------+
//
// For a data frame (type 0) with length > 0, yamux's send loop writes the header and then, at once, the body.
const (
	yamuxHeaderSize = 12
	yamuxTypeData   = 0
	// coalesceMax bounds the body copied behind a held header; larger bodies go as their own message.
	coalesceMax = 64 << 10
)

// NetConn is the byte stream yamux runs on over ws: binary messages, with data frames coalesced (see Coalesce)
// and an abrupt Close. yamux closes its connection when a session ends and only afterwards marks its streams
// closed; a NetConn's Close would first run a WebSocket close handshake (up to 5 s with a dead peer), during which
// blocked stream readers spin. Callers that want to send a close code call ws.Close themselves first.
func NetConn(ctx context.Context, ws *websocket.Conn) net.Conn {
	return &abruptConn{Conn: Coalesce(websocket.NetConn(ctx, ws, websocket.MessageBinary)), ws: ws}
}

type abruptConn struct {
	net.Conn
	ws *websocket.Conn
}

func (c *abruptConn) Close() error {
	_ = c.ws.CloseNow()
	_ = c.Conn.Close() // releases the NetConn's timers; the WebSocket is already closed
	return nil
}

// Coalesce wraps the connection yamux writes to so that a data frame's header and body leave as one write: over
// a WebSocket each write is a message with its own frame header and syscall, and yamux writes the 12-byte header
// and the body separately. The wrapper holds a data frame's header until the body's write arrives, which yamux's
// single send loop always does next. It must be the only writer of c, as yamux's send loop is.
func Coalesce(c net.Conn) net.Conn { return &coalescingConn{Conn: c} }

type coalescingConn struct {
	net.Conn
	// Owned by the single writer.
	held    [yamuxHeaderSize]byte
	holding bool
	buf     []byte
}

func (c *coalescingConn) Write(p []byte) (int, error) {
	if !c.holding {
		if len(p) == yamuxHeaderSize && p[1] == yamuxTypeData && binary.BigEndian.Uint32(p[8:12]) > 0 {
			copy(c.held[:], p)
			c.holding = true
			return len(p), nil
		}
		return c.Conn.Write(p)
	}
	c.holding = false
	if len(p) > coalesceMax {
		if _, err := c.Conn.Write(c.held[:]); err != nil {
			return 0, err
		}
		return c.Conn.Write(p)
	}
	c.buf = append(append(c.buf[:0], c.held[:]...), p...)
	if _, err := c.Conn.Write(c.buf); err != nil {
		return 0, err
	}
	return len(p), nil
}

// BufferedConn reads first what R holds already buffered from the connection (after an HTTP upgrade), then from
// the connection directly, dropping R so its buffer is not kept for the life of the connection. Writes go to the
// connection. Reads must not be concurrent (yamux has one reader).
type BufferedConn struct {
	net.Conn
	R *bufio.Reader
}

func (c *BufferedConn) Read(p []byte) (int, error) {
	if c.R != nil {
		if c.R.Buffered() > 0 {
			return c.R.Read(p)
		}
		c.R = nil
	}
	return c.Conn.Read(p)
}
