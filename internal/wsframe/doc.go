// Package wsframe follows the frame boundaries of one direction of a WebSocket
// byte stream (RFC 6455 §5.2) that the relay forwards as raw bytes after the
// 101 response. The relay does not terminate WebSocket; it only needs to
//
//   - keep close codes, but replace codes that must never appear on the wire
//     (1005, 1006, 1015 and every code RFC 6455 §7.4 forbids) with 1011, and
//   - know whether what it forwarded so far ends at a frame boundary and whether
//     a close frame already went out, so that when the other leg vanishes it can
//     write a proper close frame (1011) instead of leaving the peer with 1006.
//
// A [Follower] does this without buffering data payloads: payload bytes of
// text, binary, continuation, ping and pong frames go straight from the
// caller's buffer to the destination. Only a header that straddles two Write
// calls and close frames (at most 131 bytes) are held back until complete.
//
// A relay copying the upstream→client direction would use it like this
// (mask is true only for frames written towards a server):
//
//	f := wsframe.NewFollower(client, false)
//	_, err := io.Copy(f, upstream)
//	if !errors.Is(err, wsframe.ErrProtocol) && f.AtBoundary() && !f.SawClose() {
//		_, _ = client.Write(wsframe.CloseFrame(wsframe.CodeInternalError, "upstream gone", false))
//	}
//
// # Frame header
//
// Every frame starts with a 2-byte header, followed by an extended payload
// length (0, 2 or 8 bytes, big endian) and a masking key (0 or 4 bytes):
//
//	 0                   1                   2                   3
//	 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//	+-+-+-+-+-------+-+-------------+-------------------------------+
//	|F|R|R|R| opcode|M| Payload len |    Extended payload length    |
//	|I|S|S|S|  (4)  |A|     (7)     |             (16/64)           |
//	|N|V|V|V|       |S|             |   (if payload len==126/127)   |
//	| |1|2|3|       |K|             |                               |
//	+-+-+-+-+-------+-+-------------+ - - - - - - - - - - - - - - - +
//	|     Extended payload length continued, if payload len == 127  |
//	+ - - - - - - - - - - - - - - - +-------------------------------+
//	|                               |Masking-key, if MASK set to 1  |
//	+-------------------------------+-------------------------------+
//	| Masking-key (continued)       |          Payload Data         |
//	+-------------------------------- - - - - - - - - - - - - - - - +
//
// Byte 0: FIN (0x80), RSV1–3 (0x70, left to extensions and passed
// unchanged), opcode (0x0F): 0x0 continuation, 0x1 text, 0x2 binary,
// 0x8 close, 0x9 ping, 0xA pong; 0x3–0x7 and 0xB–0xF are reserved.
// Byte 1: MASK (0x80), payload length (0x7F): 0–125 is the length itself,
// 126 means a 16-bit length follows, 127 a 64-bit length whose top bit must
// be 0. Header sizes are therefore 2, 4 or 10 bytes, plus 4 when masked
// (at most 14). Frames from a client to a server are masked; frames from a
// server are not.
//
// Control frames (opcode ≥ 0x8) have FIN set and a payload of at most 125
// bytes, so a whole control frame is at most 2+4+125 = 131 bytes. A close
// payload is empty or starts with a 2-byte big-endian status code followed by
// an optional UTF-8 reason; a payload of 1 byte is malformed. When masked,
// payload byte i is XORed with masking-key byte i%4, so the code bytes are
// masked with key bytes 0 and 1.
//
// # Close codes
//
// [SendableCode] keeps 1000–1003, 1007–1014 and 3000–4999 and maps every other
// code to 1011 (internal error): 1004 is reserved, 1005, 1006 and 1015 are
// reserved for reporting locally and must not be sent, 1016–2999 are
// unassigned, and codes below 1000 or from 5000 up are invalid.
package wsframe
