// Package proxyproto reads the PROXY protocol header (versions 1 and 2, haproxy.org/download/2.9/doc/proxy-protocol.txt)
// that an L4 load balancer sends first on each connection to say who the client is, and serves the connections of
// a net.Listener with the client's address in place of the balancer's. Only configured networks may send a header;
// a connection from anywhere else is refused, so no client can claim an address it does not have.
package proxyproto

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"strconv"
	"strings"
)

// Header is a parsed PROXY header.
type Header struct {
	// Version is 1 or 2.
	Version int
	// Local is true for a v2 LOCAL command (the balancer's own connection, e.g. a health check) and for v1
	// "UNKNOWN": Source and Destination are then invalid and the connection's own addresses stand.
	Local bool
	// Source and Destination are the client's address and the address it connected to.
	Source, Destination netip.AddrPort
	// TLS is true when a v2 header's PP2_TYPE_SSL says the client's side was TLS (PP2_CLIENT_SSL).
	TLS bool
}

// ErrHeader is wrapped by every error about a malformed or unsupported header.
var ErrHeader = errors.New("bad PROXY header")

// Limits of what Read accepts.
const (
	// maxV1 is the longest v1 line, "\r\n" included (spec §2.1).
	maxV1 = 107
	// MaxV2Payload bounds the v2 payload after the 16-byte fixed part (addresses and TLVs). The protocol allows
	// 65,535; balancers send at most a few hundred bytes (addresses, ALPN, TLS version and cipher, an endpoint
	// id), so a larger one is refused rather than buffered.
	MaxV2Payload = 2048
)

// v2sig is the 12-byte signature that starts a v2 header.
var v2sig = []byte("\r\n\r\n\x00\r\nQUIT\n")

// v2 fixed part (16 bytes):
//
//	0..11  signature v2sig
//	12     version (high nibble, 2) | command (low nibble: 0 LOCAL, 1 PROXY)
//	13     address family (high nibble: 0 UNSPEC, 1 INET, 2 INET6, 3 UNIX) | transport (low: 0 UNSPEC, 1 STREAM, 2 DGRAM)
//	14..15 payload length, big endian
//
// payload: addresses (INET: src 4, dst 4, sport 2, dport 2; INET6: 16, 16, 2, 2; UNIX: 108, 108), then TLVs:
// type 1 byte, length 2 bytes big endian, value.
const (
	cmdLocal   = 0x0
	cmdProxy   = 0x1
	famUnspec  = 0x0
	famInet    = 0x1
	famInet6   = 0x2
	famUnix    = 0x3
	transUnsp  = 0x0
	transTCP   = 0x1
	tlvSSL     = 0x20 // PP2_TYPE_SSL: client (1 byte), verify (4 bytes), sub-TLVs
	sslClient  = 0x01 // PP2_CLIENT_SSL bit of client
	lenInet    = 12
	lenInet6   = 36
	lenUnix    = 216
	v2FixedLen = 16
)

// Read reads one PROXY header, v1 or v2, from r and nothing past it. It reads at most 16+MaxV2Payload bytes; the
// caller bounds the time (a deadline on the connection under r). Any error wraps ErrHeader, or is the reader's.
func Read(r *bufio.Reader) (Header, error) {
	first, err := r.Peek(1)
	if err != nil {
		return Header{}, err
	}
	switch first[0] {
	case 'P':
		return readV1(r)
	case '\r':
		return readV2(r)
	}
	return Header{}, fmt.Errorf("%w: the connection does not start with one", ErrHeader)
}

func readV1(r *bufio.Reader) (Header, error) {
	var line []byte
	for len(line) < maxV1 {
		b, err := r.ReadByte()
		if err != nil {
			return Header{}, err
		}
		line = append(line, b)
		if b == '\n' {
			break
		}
	}
	s, ok := strings.CutSuffix(string(line), "\r\n")
	if !ok {
		return Header{}, fmt.Errorf("%w: v1 line not ended by CRLF within %d bytes", ErrHeader, maxV1)
	}
	f := strings.Split(s, " ")
	if f[0] != "PROXY" || len(f) < 2 {
		return Header{}, fmt.Errorf("%w: v1 line does not start with \"PROXY \"", ErrHeader)
	}
	h := Header{Version: 1}
	switch f[1] {
	case "UNKNOWN":
		h.Local = true
		return h, nil
	case "TCP4", "TCP6":
	default:
		return Header{}, fmt.Errorf("%w: v1 protocol %q", ErrHeader, clip(f[1]))
	}
	if len(f) != 6 {
		return Header{}, fmt.Errorf("%w: v1 %s wants 4 fields after it, got %d", ErrHeader, f[1], len(f)-2)
	}
	src, err1 := v1Addr(f[1], f[2], f[4])
	dst, err2 := v1Addr(f[1], f[3], f[5])
	if err := errors.Join(err1, err2); err != nil {
		return Header{}, err
	}
	h.Source, h.Destination = src, dst
	return h, nil
}

// v1Addr parses one v1 address and port of family fam (TCP4 or TCP6).
func v1Addr(fam, addr, port string) (netip.AddrPort, error) {
	a, err := netip.ParseAddr(addr)
	if err != nil || a.Zone() != "" || (fam == "TCP4") != a.Is4() {
		return netip.AddrPort{}, fmt.Errorf("%w: v1 %s address %q", ErrHeader, fam, clip(addr))
	}
	p, err := strconv.ParseUint(port, 10, 16)
	if err != nil || (len(port) > 1 && port[0] == '0') {
		return netip.AddrPort{}, fmt.Errorf("%w: v1 port %q", ErrHeader, clip(port))
	}
	return netip.AddrPortFrom(a, uint16(p)), nil
}

func readV2(r *bufio.Reader) (Header, error) {
	var fixed [v2FixedLen]byte
	if _, err := io.ReadFull(r, fixed[:]); err != nil {
		return Header{}, err
	}
	if !bytes.Equal(fixed[:12], v2sig) {
		return Header{}, fmt.Errorf("%w: no v2 signature", ErrHeader)
	}
	if fixed[12]>>4 != 2 {
		return Header{}, fmt.Errorf("%w: v2 version %d", ErrHeader, fixed[12]>>4)
	}
	cmd := fixed[12] & 0xf
	fam, trans := fixed[13]>>4, fixed[13]&0xf
	n := int(binary.BigEndian.Uint16(fixed[14:]))
	if n > MaxV2Payload {
		return Header{}, fmt.Errorf("%w: v2 payload of %d bytes (at most %d)", ErrHeader, n, MaxV2Payload)
	}
	payload := make([]byte, n)
	if _, err := io.ReadFull(r, payload); err != nil {
		return Header{}, err
	}
	h := Header{Version: 2}
	switch cmd {
	case cmdLocal:
		h.Local = true
		return h, nil // the payload, if any, is ignored (spec §2.2)
	case cmdProxy:
	default:
		return Header{}, fmt.Errorf("%w: v2 command %d", ErrHeader, cmd)
	}
	if trans != transTCP && !(fam == famUnspec && trans == transUnsp) {
		return Header{}, fmt.Errorf("%w: v2 transport %d (only TCP is served)", ErrHeader, trans)
	}
	var addrLen int
	switch fam {
	case famUnspec:
		h.Local = true // no addresses: the connection's own stand
	case famInet:
		addrLen = lenInet
	case famInet6:
		addrLen = lenInet6
	case famUnix:
		return Header{}, fmt.Errorf("%w: v2 AF_UNIX addresses (only TCP is served)", ErrHeader)
	default:
		return Header{}, fmt.Errorf("%w: v2 address family %d", ErrHeader, fam)
	}
	if n < addrLen {
		return Header{}, fmt.Errorf("%w: v2 payload of %d bytes is shorter than its addresses (%d)", ErrHeader, n, addrLen)
	}
	switch fam {
	case famInet:
		src, _ := netip.AddrFromSlice(payload[0:4])
		dst, _ := netip.AddrFromSlice(payload[4:8])
		h.Source = netip.AddrPortFrom(src, binary.BigEndian.Uint16(payload[8:]))
		h.Destination = netip.AddrPortFrom(dst, binary.BigEndian.Uint16(payload[10:]))
	case famInet6:
		src, _ := netip.AddrFromSlice(payload[0:16])
		dst, _ := netip.AddrFromSlice(payload[16:32])
		h.Source = netip.AddrPortFrom(src.Unmap(), binary.BigEndian.Uint16(payload[32:]))
		h.Destination = netip.AddrPortFrom(dst.Unmap(), binary.BigEndian.Uint16(payload[34:]))
	}
	tls, err := parseTLVs(payload[addrLen:])
	if err != nil {
		return Header{}, err
	}
	h.TLS = tls
	return h, nil
}

// parseTLVs walks the TLVs after the addresses and reports whether PP2_TYPE_SSL says the client used TLS.
func parseTLVs(b []byte) (tls bool, err error) {
	for len(b) > 0 {
		if len(b) < 3 {
			return false, fmt.Errorf("%w: v2 TLV cut short", ErrHeader)
		}
		typ, n := b[0], int(binary.BigEndian.Uint16(b[1:3]))
		if len(b)-3 < n {
			return false, fmt.Errorf("%w: v2 TLV 0x%02x of %d bytes overruns the header", ErrHeader, typ, n)
		}
		v := b[3 : 3+n]
		if typ == tlvSSL {
			if n < 5 {
				return false, fmt.Errorf("%w: v2 SSL TLV of %d bytes (at least 5)", ErrHeader, n)
			}
			tls = v[0]&sslClient != 0
		}
		b = b[3+n:]
	}
	return tls, nil
}

// clip shortens a value quoted in an error: the header is the peer's input.
func clip(s string) string {
	if len(s) > 40 {
		return s[:40] + "…"
	}
	return s
}
