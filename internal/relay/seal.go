package relay

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
)

// The relay hands callers positions they hand back: GET /v1/hosts's next_cursor and the ids of presence events.
// Both are sealed (AES-256-GCM under a key only the relay knows) so that a caller can neither read them (a log
// position counts every tenant's events; a listing position is a host id) nor forge one that points where it
// chooses. A sealed value is base64url(nonce || ciphertext); its plaintext is a purpose byte and the position, so
// an event id is never taken for a cursor or the other way round.

// Purposes of sealed values.
const (
	sealCursor byte = 'c' // a GET /v1/hosts position: the last host id examined
	sealEvent  byte = 'e' // a presence log position: an event id of the log
)

// errUnsealable is returned for a value this relay (or its cluster) did not seal, or sealed for another purpose.
var errUnsealable = errors.New("not a value this relay issued")

// sealer seals and opens positions. The zero value is not usable; see newSealer.
type sealer struct {
	aead cipher.AEAD
}

// newSealer keys a sealer from the cluster secret, so that every replica opens what another sealed (a client's
// next page or resumed stream may land anywhere), or from random bytes if there is none: positions then open
// only on this process.
func newSealer(clusterSecret []byte) (*sealer, error) {
	key := make([]byte, 32)
	if len(clusterSecret) > 0 {
		mac := hmac.New(sha256.New, clusterSecret)
		mac.Write([]byte("switchboard sealed positions v1"))
		key = mac.Sum(nil)
	} else if _, err := rand.Read(key); err != nil {
		return nil, fmt.Errorf("seal key: %w", err)
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("seal key: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("seal key: %w", err)
	}
	return &sealer{aead: aead}, nil
}

// seal returns the sealed form of position for purpose.
func (s *sealer) seal(purpose byte, position string) string {
	ns := s.aead.NonceSize()
	buf := make([]byte, ns, ns+1+len(position)+s.aead.Overhead())
	_, _ = rand.Read(buf) // crypto/rand.Read never fails
	plain := append([]byte{purpose}, position...)
	return base64.RawURLEncoding.EncodeToString(s.aead.Seal(buf, buf[:ns], plain, nil))
}

// maxSealed bounds a sealed value before it is decoded: a host id or log id is far shorter.
const maxSealed = 1024

// open returns the position sealed in v for purpose, or errUnsealable.
func (s *sealer) open(purpose byte, v string) (string, error) {
	if len(v) > maxSealed {
		return "", errUnsealable
	}
	b, err := base64.RawURLEncoding.DecodeString(v)
	ns := s.aead.NonceSize()
	if err != nil || len(b) < ns+1+s.aead.Overhead() {
		return "", errUnsealable
	}
	plain, err := s.aead.Open(nil, b[:ns], b[ns:], nil)
	if err != nil || len(plain) == 0 || plain[0] != purpose {
		return "", errUnsealable
	}
	return string(plain[1:]), nil
}
