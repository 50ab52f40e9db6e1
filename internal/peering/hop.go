package peering

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Headers of a request sent from one replica to another (see docs/scaling.md).
//
//	Switchboard-Hop: <sending replica id>,<unix seconds>,<nonce: 32 hex digits>,<hex HMAC-SHA256>
//	Switchboard-Hop-Subject: <verified client subject, query-escaped>   (absent if none)
//
// The HMAC is keyed with the cluster secret over the length-prefixed fields (see hopMAC)
//
//	"switchboard-hop-v2", replica, unix, nonce, method, request-URI, Host, subject,
//	and for X-Forwarded-For, X-Forwarded-Host, X-Forwarded-Proto: the number of header lines, then each line
//
// so a hop cannot be forged without the secret, nor moved to another method, path, host or subject, nor carry
// forwarding headers other than those its sender set. The receiver accepts it for HopMaxAge either side of its own
// clock, and once: the nonce of every accepted hop is remembered until its timestamp leaves the window (nonces).
// The body (and trailers) are not covered: whoever can alter a hop in flight can change them (TLS between replicas
// prevents that), but a captured hop cannot be sent again, with any body. Both headers are removed before a
// request reaches a host.
const (
	HeaderHop        = "Switchboard-Hop"
	HeaderHopSubject = "Switchboard-Hop-Subject"
)

// ForwardedHeaders are the forwarding headers a replica sets on a request it forwards; the hop signature covers
// them.
var ForwardedHeaders = []string{"X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto"}

// HopMaxAge bounds how far a hop's timestamp may be from the receiver's clock (replay window and clock skew).
const HopMaxAge = 30 * time.Second

// ErrHop is the cause of every refused hop; the errors below wrap it and name the reason (Reason).
var (
	ErrHop          = errors.New("hop not authenticated")
	ErrHopNoSecret  = fmt.Errorf("%w: no cluster secret configured", ErrHop)
	ErrHopMalformed = fmt.Errorf("%w: missing or malformed %s", ErrHop, HeaderHop)
	ErrHopExpired   = fmt.Errorf("%w: timestamp outside the acceptance window", ErrHop)
	ErrHopSignature = fmt.Errorf("%w: bad signature", ErrHop)
	ErrHopReplayed  = fmt.Errorf("%w: nonce already used", ErrHop)
	ErrHopCacheFull = fmt.Errorf("%w: nonce cache full", ErrHop)
)

// Reason names the cause of a refused hop, a closed set of values for a metric label
// (switchboard_hop_rejections_total).
func Reason(err error) string {
	switch {
	case errors.Is(err, ErrHopNoSecret):
		return "no_secret"
	case errors.Is(err, ErrHopExpired):
		return "expired"
	case errors.Is(err, ErrHopSignature):
		return "bad_signature"
	case errors.Is(err, ErrHopReplayed):
		return "replayed"
	case errors.Is(err, ErrHopCacheFull):
		return "nonce_cache_full"
	default:
		return "malformed"
	}
}

// Signer signs the hops this replica sends and verifies those it receives. Its methods are safe for concurrent
// use.
type Signer struct {
	// Immutable after NewSigner.
	replica string
	secret  []byte

	nonces nonces    // has its own lock
	macs   sync.Pool // of hash.Hash: HMAC-SHA256 keyed with secret (mac)
}

// NewSigner returns the Signer of replica, keyed with the cluster secret (none: every hop it verifies is refused
// with ErrHopNoSecret), remembering up to nonceCache nonces of accepted hops.
func NewSigner(replica string, secret []byte, nonceCache int) *Signer {
	return &Signer{replica: replica, secret: secret, nonces: nonces{max: nonceCache}}
}

// Enabled reports whether a cluster secret is configured: without one a replica neither sends nor accepts hops.
func (s *Signer) Enabled() bool { return len(s.secret) > 0 }

// Nonces returns the number of nonces of accepted hops held.
func (s *Signer) Nonces() int { return s.nonces.len() }

// mac computes the hop signature, HMAC-SHA256 over hopInput in hex, with a keyed HMAC from s's pool: keying one
// costs two SHA-256 blocks and half a dozen allocations, twice per forwarded exchange (the sender's Sign and the
// receiver's Verify). The tests check it against a freshly keyed HMAC (hopMAC).
func (s *Signer) mac(replica, unix, nonce, method, requestURI, host, subject string, fwd http.Header) string {
	var stack [512]byte
	in := hopInput(stack[:0], replica, unix, nonce, method, requestURI, host, subject, fwd)
	m, _ := s.macs.Get().(hash.Hash)
	if m == nil {
		m = hmac.New(sha256.New, s.secret)
	}
	m.Reset()
	sum := macHex(m, in)
	s.macs.Put(m)
	return sum
}

// macHex writes in to m (fresh or reset) and returns its sum in hex.
func macHex(m hash.Hash, in []byte) string {
	_, _ = m.Write(in)
	var sum [sha256.Size]byte
	return hex.EncodeToString(m.Sum(sum[:0]))
}

// hopInput appends the signed fields to in. Every field is written as its length, ':', the field and '\n', so no
// two different requests feed the HMAC the same bytes. fwd is the header the forwarding headers are read from. The
// input is framed in one buffer and written once: writing each piece to the hash would copy every string into a
// []byte of its own (hash.Hash has no WriteString), some fifty allocations per hop.
func hopInput(in []byte, replica, unix, nonce, method, requestURI, host, subject string, fwd http.Header) []byte {
	field := func(v string) {
		in = strconv.AppendInt(in, int64(len(v)), 10)
		in = append(in, ':')
		in = append(in, v...)
		in = append(in, '\n')
	}
	for _, v := range []string{"switchboard-hop-v2", replica, unix, nonce, method, requestURI, host, subject} {
		field(v)
	}
	for _, k := range ForwardedHeaders {
		vs := fwd[k]
		field(strconv.Itoa(len(vs)))
		for _, v := range vs {
			field(v)
		}
	}
	return in
}

// hopHost is the Host a request carries on the wire (as Request.Write picks it).
func hopHost(r *http.Request) string {
	if r.Host != "" {
		return r.Host
	}
	if r.URL != nil {
		return r.URL.Host
	}
	return ""
}

// Sign sets the hop headers on out, a request from this replica to a peer, vouching for the client subject ("" if
// none). out.URL, out.Host and the forwarding headers must be final: the signature covers them.
func (s *Signer) Sign(out *http.Request, subject string) {
	unix := strconv.FormatInt(time.Now().Unix(), 10)
	var n [16]byte
	_, _ = rand.Read(n[:]) // never fails (crypto/rand)
	nonce := hex.EncodeToString(n[:])
	mac := s.mac(s.replica, unix, nonce, out.Method, out.URL.RequestURI(), hopHost(out), subject, out.Header)
	out.Header.Set(HeaderHop, s.replica+","+unix+","+nonce+","+mac)
	if subject != "" {
		out.Header.Set(HeaderHopSubject, url.QueryEscape(subject))
	} else {
		out.Header.Del(HeaderHopSubject)
	}
}

// Verify checks the hop headers of r, a request on the internal listener, at now, and returns the sending replica
// and the client subject it vouches for. A hop that verifies is remembered, and refused if it comes again. Every
// error wraps ErrHop.
func (s *Signer) Verify(r *http.Request, now time.Time) (from, subject string, err error) {
	if len(s.secret) == 0 {
		return "", "", ErrHopNoSecret
	}
	if len(r.Header[HeaderHop]) != 1 || len(r.Header[HeaderHopSubject]) > 1 {
		return "", "", ErrHopMalformed
	}
	// <replica>,<unix>,<nonce>,<mac>, split from the right: the replica id is the rest.
	v := r.Header.Get(HeaderHop)
	var parts [3]string
	for i := 2; i >= 0; i-- {
		j := strings.LastIndexByte(v, ',')
		if j < 0 {
			return "", "", ErrHopMalformed
		}
		v, parts[i] = v[:j], v[j+1:]
	}
	from, unix, nonce, mac := v, parts[0], parts[1], parts[2]
	var n [16]byte
	if from == "" || len(nonce) != 2*len(n) {
		return "", "", ErrHopMalformed
	}
	if _, err := hex.Decode(n[:], []byte(nonce)); err != nil {
		return "", "", ErrHopMalformed
	}
	ts, err := strconv.ParseInt(unix, 10, 64)
	if err != nil {
		return "", "", ErrHopMalformed
	}
	if d := now.Sub(time.Unix(ts, 0)); d > HopMaxAge || d < -HopMaxAge {
		return "", "", fmt.Errorf("%w (%v away from this replica's clock)", ErrHopExpired, d.Round(time.Second))
	}
	if raw := r.Header.Get(HeaderHopSubject); raw != "" {
		if subject, err = url.QueryUnescape(raw); err != nil {
			return "", "", ErrHopMalformed
		}
	}
	want := s.mac(from, unix, nonce, r.Method, r.RequestURI, r.Host, subject, r.Header)
	if !hmac.Equal([]byte(mac), []byte(want)) {
		return "", "", ErrHopSignature
	}
	// Only a signed hop reaches the cache, so only the cluster can fill it.
	if err := s.nonces.admit(n, ts+int64(HopMaxAge/time.Second), now.Unix()); err != nil {
		return "", "", err
	}
	return from, subject, nil
}
