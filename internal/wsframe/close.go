package wsframe

import (
	"encoding/binary"
	"math/rand/v2"
	"unicode/utf8"
)

// Close status codes used by this package (RFC 6455 §7.4.1).
const (
	// CodeNoStatus (1005) means a close frame carried no status code. It must
	// never be sent on the wire; [CloseFrame] encodes it as an empty payload.
	CodeNoStatus uint16 = 1005
	// CodeInternalError (1011) is what unsendable codes are mapped to.
	CodeInternalError uint16 = 1011
)

// maxCloseReason is the room for a reason in a close payload: 125 bytes minus
// the 2-byte status code.
const maxCloseReason = maxControlPayload - 2

// SendableCode returns code if an endpoint may send it in a close frame, and
// 1011 (internal error) otherwise. Sendable are 1000–1003, 1007–1014 (1012–1014
// are registered with IANA) and 3000–4999 (libraries, frameworks and
// applications). Everything else is reserved, local-only (1005, 1006, 1015),
// unassigned (1016–2999) or invalid (below 1000, 5000 and up).
func SendableCode(code uint16) uint16 {
	switch {
	case code >= 1000 && code <= 1003,
		code >= 1007 && code <= 1014,
		code >= 3000 && code <= 4999:
		return code
	default:
		return CodeInternalError
	}
}

// CloseFrame returns a complete close frame with FIN set carrying code and
// reason. The reason is truncated to 123 bytes at a UTF-8 character boundary.
// code is written as given (map it with [SendableCode] first if it comes from
// elsewhere), except that [CodeNoStatus] produces an empty payload, which is how
// "no status code" is expressed on the wire. With mask true (frames from a
// client) the payload is masked with a fresh random key.
func CloseFrame(code uint16, reason string, mask bool) []byte {
	reason = truncateUTF8(reason, maxCloseReason)
	plen := 2 + len(reason)
	if code == CodeNoStatus {
		plen = 0
	}
	hs := 2
	if mask {
		hs += maskKeySize
	}
	b := make([]byte, hs+plen)
	b[0] = finBit | opClose
	b[1] = byte(plen)
	if plen > 0 {
		binary.BigEndian.PutUint16(b[hs:], code)
		copy(b[hs+2:], reason)
	}
	if mask {
		b[1] |= maskBit
		key := b[2:hs]
		binary.BigEndian.PutUint32(key, rand.Uint32())
		for i := range b[hs:] {
			b[hs+i] ^= key[i%maskKeySize]
		}
	}
	return b
}

// truncateUTF8 cuts s to at most n bytes without splitting a UTF-8 encoded
// character. For invalid UTF-8 it backs off at most utf8.UTFMax-1 bytes.
func truncateUTF8(s string, n int) string {
	if len(s) <= n {
		return s
	}
	cut := n
	for back := 0; back < utf8.UTFMax-1 && cut > 0 && !utf8.RuneStart(s[cut]); back++ {
		cut--
	}
	if !utf8.RuneStart(s[cut]) {
		cut = n // not UTF-8 here; cut where asked
	}
	return s[:cut]
}
