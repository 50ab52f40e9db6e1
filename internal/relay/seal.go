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
	sealStatus byte = 's' // a status page session: an admin token's subject, id and end (status.go)
)

// errUnsealable is returned for a value this relay (or its cluster) did not seal, or sealed for another purpose.
var errUnsealable = errors.New("not a value this relay issued")

// sealer seals and opens positions. The zero value is not usable; see newSealer.
type sealer struct {
	aead  cipher.AEAD
	nonce []byte // keys the HMAC that derives a deterministic nonce (seal)
}

// newSealer keys a sealer from the cluster secret, so that every replica opens what another sealed (a client's
// next page or resumed stream may land anywhere), or from random bytes if there is none: positions then open
// only on this process.
func newSealer(clusterSecret []byte) (*sealer, error) {
	seed := make([]byte, 32)
	if len(clusterSecret) > 0 {
		seed = clusterSecret
	} else if _, err := rand.Read(seed); err != nil {
		return nil, fmt.Errorf("seal key: %w", err)
	}
	derive := func(label string) []byte {
		mac := hmac.New(sha256.New, seed)
		mac.Write([]byte(label))
		return mac.Sum(nil)
	}
	block, err := aes.NewCipher(derive("switchboard sealed positions v1: key"))
	if err != nil {
		return nil, fmt.Errorf("seal key: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("seal key: %w", err)
	}
	return &sealer{aead: aead, nonce: derive("switchboard sealed positions v1: nonce")}, nil
}

// seal returns the sealed form of position for purpose. It is deterministic (the nonce is an HMAC of the
// plaintext, as in SIV): one event has one id on every stream and replica. Equal sealed values tell only that two
// positions are equal, and a caller only ever gets positions of its own hosts this way.
func (s *sealer) seal(purpose byte, position string) string {
	plain := append([]byte{purpose}, position...)
	mac := hmac.New(sha256.New, s.nonce)
	mac.Write(plain)
	return s.sealWith(mac.Sum(nil)[:s.aead.NonceSize()], plain)
}

// sealRandom is seal with a random nonce, for a position the caller must not be able to compare with others: the
// present of the log, which may be another tenant's event, or the last event the caller saw.
func (s *sealer) sealRandom(purpose byte, position string) string {
	nonce := make([]byte, s.aead.NonceSize())
	_, _ = rand.Read(nonce) // crypto/rand.Read never fails
	return s.sealWith(nonce, append([]byte{purpose}, position...))
}

func (s *sealer) sealWith(nonce, plain []byte) string {
	out := make([]byte, len(nonce), len(nonce)+len(plain)+s.aead.Overhead())
	copy(out, nonce)
	return base64.RawURLEncoding.EncodeToString(s.aead.Seal(out, nonce, plain, nil))
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
