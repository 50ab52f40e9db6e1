package connlimit

import (
	"errors"
	"io"
	"net"
	"sync"
)

// conn is an accepted connection that gives its place back once, on its first Close. The http.Server hijacks
// connections for WebSockets and tunnels; they keep their place until whoever took them closes them.
type conn struct {
	net.Conn
	l    *Listener
	key  string
	once sync.Once
}

func newConn(c net.Conn, l *Listener, key string) *conn { return &conn{Conn: c, l: l, key: key} }

// Close closes the connection and gives its place back.
func (c *conn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { c.l.release(c.key) })
	return err
}

// errNoHalfClose reports a connection that cannot close only its write side.
var errNoHalfClose = errors.New("connlimit: connection cannot half-close")

// CloseWrite half-closes a TCP connection, as the raw tunnel transport does before it closes.
func (c *conn) CloseWrite() error {
	if hc, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return hc.CloseWrite()
	}
	return errNoHalfClose
}

// Unwrap returns the accepted connection.
func (c *conn) Unwrap() net.Conn { return c.Conn }

// ReadFrom lets io.Copy into the connection use the accepted connection's own ReadFrom (splice on Linux), as it
// would without the wrapper.
func (c *conn) ReadFrom(r io.Reader) (int64, error) { return io.Copy(c.Conn, r) }
