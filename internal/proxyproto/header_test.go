package proxyproto

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net/netip"
	"strings"
	"testing"
)

// v2 builds a v2 header: command, family/transport byte, payload.
func v2(cmd, famTrans byte, payload []byte) []byte {
	b := append([]byte{}, v2sig...)
	b = append(b, 0x20|cmd, famTrans)
	b = binary.BigEndian.AppendUint16(b, uint16(len(payload)))
	return append(b, payload...)
}

// inet4 is an AF_INET payload for src:sport → dst:dport, then tlvs.
func inet4(src, dst string, sport, dport uint16, tlvs ...[]byte) []byte {
	s, d := netip.MustParseAddr(src).As4(), netip.MustParseAddr(dst).As4()
	b := append(s[:], d[:]...)
	b = binary.BigEndian.AppendUint16(b, sport)
	b = binary.BigEndian.AppendUint16(b, dport)
	for _, t := range tlvs {
		b = append(b, t...)
	}
	return b
}

func tlv(typ byte, v []byte) []byte {
	b := []byte{typ}
	b = binary.BigEndian.AppendUint16(b, uint16(len(v)))
	return append(b, v...)
}

// sslTLV is PP2_TYPE_SSL with client bits and a PP2_SUBTYPE_SSL_VERSION sub-TLV, as HAProxy sends it.
func sslTLV(client byte) []byte {
	return tlv(tlvSSL, append([]byte{client, 0, 0, 0, 0}, tlv(0x21, []byte("TLSv1.3"))...))
}

func TestRead(t *testing.T) {
	ap := netip.MustParseAddrPort
	six := func() []byte {
		s, d := netip.MustParseAddr("2001:db8::1").As16(), netip.MustParseAddr("2001:db8::2").As16()
		b := append(s[:], d[:]...)
		return append(b, 0x1f, 0x90, 0x01, 0xbb)
	}()
	for _, tc := range []struct {
		name string
		in   string
		want Header
		err  bool
	}{
		{"v1 tcp4", "PROXY TCP4 203.0.113.7 192.0.2.1 51000 443\r\n", Header{Version: 1, Source: ap("203.0.113.7:51000"), Destination: ap("192.0.2.1:443")}, false},
		{"v1 tcp6", "PROXY TCP6 2001:db8::1 2001:db8::2 8080 443\r\n", Header{Version: 1, Source: ap("[2001:db8::1]:8080"), Destination: ap("[2001:db8::2]:443")}, false},
		{"v1 unknown", "PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n", Header{Version: 1, Local: true}, false},
		{"v1 family mismatch", "PROXY TCP4 2001:db8::1 192.0.2.1 1 2\r\n", Header{}, true},
		{"v1 port overflow", "PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n", Header{}, true},
		{"v1 leading zero port", "PROXY TCP4 1.2.3.4 5.6.7.8 080 2\r\n", Header{}, true},
		{"v1 missing field", "PROXY TCP4 1.2.3.4 5.6.7.8 80\r\n", Header{}, true},
		{"v1 bare LF", "PROXY TCP4 1.2.3.4 5.6.7.8 80 81\n", Header{}, true},
		{"v1 too long", "PROXY TCP4 " + strings.Repeat("1", 120) + "\r\n", Header{}, true},
		{"v1 zone", "PROXY TCP6 fe80::1%eth0 fe80::2 1 2\r\n", Header{}, true},
		{"not a header", "GET / HTTP/1.1\r\n\r\n", Header{}, true},
		{"v2 tcp4", string(v2(cmdProxy, 0x11, inet4("203.0.113.7", "192.0.2.1", 51000, 443))), Header{Version: 2, Source: ap("203.0.113.7:51000"), Destination: ap("192.0.2.1:443")}, false},
		{"v2 tcp4 ssl", string(v2(cmdProxy, 0x11, inet4("203.0.113.7", "192.0.2.1", 1, 2, tlv(0x01, []byte("http/1.1")), sslTLV(sslClient)))), Header{Version: 2, Source: ap("203.0.113.7:1"), Destination: ap("192.0.2.1:2"), TLS: true}, false},
		{"v2 ssl tlv without client bit", string(v2(cmdProxy, 0x11, inet4("203.0.113.7", "192.0.2.1", 1, 2, sslTLV(0)))), Header{Version: 2, Source: ap("203.0.113.7:1"), Destination: ap("192.0.2.1:2")}, false},
		{"v2 tcp6", string(v2(cmdProxy, 0x21, six)), Header{Version: 2, Source: ap("[2001:db8::1]:8080"), Destination: ap("[2001:db8::2]:443")}, false},
		{"v2 local", string(v2(cmdLocal, 0x00, nil)), Header{Version: 2, Local: true}, false},
		{"v2 unspec", string(v2(cmdProxy, 0x00, nil)), Header{Version: 2, Local: true}, false},
		{"v2 version 1", string(append(append([]byte{}, v2sig...), 0x11, 0x11, 0, 0)), Header{}, true},
		{"v2 command 2", string(v2(2, 0x11, inet4("1.2.3.4", "5.6.7.8", 1, 2))), Header{}, true},
		{"v2 udp", string(v2(cmdProxy, 0x12, inet4("1.2.3.4", "5.6.7.8", 1, 2))), Header{}, true},
		{"v2 unix", string(v2(cmdProxy, 0x31, make([]byte, lenUnix))), Header{}, true},
		{"v2 short addresses", string(v2(cmdProxy, 0x11, make([]byte, 11))), Header{}, true},
		{"v2 tlv overrun", string(v2(cmdProxy, 0x11, inet4("1.2.3.4", "5.6.7.8", 1, 2, []byte{0x01, 0x00, 0x09, 'x'}))), Header{}, true},
		{"v2 tlv cut", string(v2(cmdProxy, 0x11, inet4("1.2.3.4", "5.6.7.8", 1, 2, []byte{0x01, 0x00}))), Header{}, true},
		{"v2 short ssl tlv", string(v2(cmdProxy, 0x11, inet4("1.2.3.4", "5.6.7.8", 1, 2, tlv(tlvSSL, []byte{1})))), Header{}, true},
		{"v2 too large", string(v2(cmdProxy, 0x11, make([]byte, MaxV2Payload+1))), Header{}, true},
		{"v2 bad signature", "\r\n\r\n\x00\r\nQUIX\n\x21\x11\x00\x00", Header{}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := bufio.NewReaderSize(strings.NewReader(tc.in+"after"), v2FixedLen+MaxV2Payload)
			h, err := Read(r)
			if tc.err {
				if !errors.Is(err, ErrHeader) {
					t.Fatalf("err %v, want ErrHeader (header %+v)", err, h)
				}
				return
			}
			if err != nil || h != tc.want {
				t.Fatalf("got %+v %v, want %+v", h, err, tc.want)
			}
			if rest, _ := io.ReadAll(r); string(rest) != "after" {
				t.Fatalf("read past the header: rest %q", rest)
			}
		})
	}
}

// TestReadTruncated: a header cut anywhere is an error, never a header.
func TestReadTruncated(t *testing.T) {
	for _, full := range [][]byte{
		[]byte("PROXY TCP4 203.0.113.7 192.0.2.1 51000 443\r\n"),
		v2(cmdProxy, 0x11, inet4("203.0.113.7", "192.0.2.1", 1, 2, sslTLV(sslClient))),
	} {
		for i := range len(full) {
			if h, err := Read(bufio.NewReader(bytes.NewReader(full[:i]))); err == nil {
				t.Fatalf("%q cut at %d: header %+v", full, i, h)
			}
		}
	}
}

// FuzzRead: Read never panics, never reads more than one maximal header, and what it accepts is well formed.
func FuzzRead(f *testing.F) {
	f.Add([]byte("PROXY TCP4 203.0.113.7 192.0.2.1 51000 443\r\nGET / HTTP/1.1\r\n"))
	f.Add([]byte("PROXY TCP6 2001:db8::1 2001:db8::2 8080 443\r\n"))
	f.Add([]byte("PROXY UNKNOWN\r\n"))
	f.Add(v2(cmdProxy, 0x11, inet4("203.0.113.7", "192.0.2.1", 1, 2, sslTLV(sslClient))))
	f.Add(v2(cmdLocal, 0x00, nil))
	f.Add(v2(cmdProxy, 0x21, make([]byte, lenInet6+3)))
	f.Fuzz(func(t *testing.T, data []byte) {
		src := bytes.NewReader(data)
		h, err := Read(bufio.NewReaderSize(src, v2FixedLen+MaxV2Payload))
		if consumed := len(data) - src.Len(); consumed > v2FixedLen+MaxV2Payload {
			t.Fatalf("consumed %d bytes", consumed)
		}
		if err != nil {
			return
		}
		if h.Version != 1 && h.Version != 2 {
			t.Fatalf("version %d", h.Version)
		}
		if !h.Local && (!h.Source.IsValid() || !h.Destination.IsValid() || h.Source.Addr().Is4In6()) {
			t.Fatalf("accepted header without valid addresses: %+v", h)
		}
		if h.Version == 1 && h.TLS {
			t.Fatalf("v1 cannot say TLS: %+v", h)
		}
	})
}
