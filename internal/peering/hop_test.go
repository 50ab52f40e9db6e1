package peering

import (
	"crypto/hmac"
	"crypto/sha256"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestNoncesReplayExpiryAndCap(t *testing.T) {
	c := nonces{max: 2}
	n1, n2, n3 := [16]byte{1}, [16]byte{2}, [16]byte{3}
	if err := c.admit(n1, 130, 100); err != nil {
		t.Fatal(err)
	}
	if err := c.admit(n1, 130, 101); !errors.Is(err, ErrHopReplayed) {
		t.Fatalf("replay: %v, want ErrHopReplayed", err)
	}
	if err := c.admit(n2, 131, 101); err != nil {
		t.Fatal(err)
	}
	if err := c.admit(n3, 132, 102); !errors.Is(err, ErrHopCacheFull) {
		t.Fatalf("past the cap: %v, want ErrHopCacheFull", err)
	}
	// Once n1's hop has left the window it is forgotten, which makes room.
	if err := c.admit(n3, 162, 131); err != nil {
		t.Fatalf("after n1 expired: %v", err)
	}
	if c.len() != 2 {
		t.Fatalf("held %d nonces, want 2", c.len())
	}
	if err := c.admit(n2, 131, 131); !errors.Is(err, ErrHopReplayed) {
		t.Fatalf("n2 within its window: %v, want ErrHopReplayed", err)
	}
}

// hopMAC is the hop signature computed with a freshly keyed HMAC: the plain computation Signer.mac, which reuses
// keyed HMACs, must agree with (the oracle of TestPooledMACMatchesFresh and FuzzVerifyHop).
func hopMAC(secret []byte, replica, unix, nonce, method, requestURI, host, subject string, fwd http.Header) string {
	var stack [512]byte
	in := hopInput(stack[:0], replica, unix, nonce, method, requestURI, host, subject, fwd)
	return macHex(hmac.New(sha256.New, secret), in)
}

// TestPooledMACMatchesFresh: the Signer's reused HMACs give what a freshly keyed one gives, call after call with
// inputs of different lengths (a missing Reset would carry one input into the next), and concurrently.
func TestPooledMACMatchesFresh(t *testing.T) {
	s := NewSigner("r1", []byte("cluster-secret"), 16)
	fwd := http.Header{"X-Forwarded-For": {"192.0.2.1", "198.51.100.2"}, "X-Forwarded-Proto": {"https"}}
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for i := range 200 {
				uri := "/p/" + strings.Repeat("x", (i*7+g)%300) + "?q=" + strconv.Itoa(i)
				got := s.mac("r2", "1700000000", "00112233445566778899aabbccddeeff", "GET", uri, "h.example", "alice", fwd)
				want := hopMAC(s.secret, "r2", "1700000000", "00112233445566778899aabbccddeeff", "GET", uri, "h.example",
					"alice", fwd)
				if got != want {
					t.Errorf("pooled MAC %s for %q, fresh %s", got, uri, want)
					return
				}
			}
		})
	}
	wg.Wait()
}

// BenchmarkHopSignVerify is one forwarded hop's signing on the sending replica and verification on the receiving
// one.
func BenchmarkHopSignVerify(b *testing.B) {
	from := NewSigner("r1", []byte("cluster-secret"), 1<<20)
	to := NewSigner("r2", []byte("cluster-secret"), 1<<20)
	b.ReportAllocs()
	for b.Loop() {
		out, _ := http.NewRequest(http.MethodGet, "http://r2.internal/hosts/h1/page?a=1", nil)
		out.Header.Set("X-Forwarded-For", "192.0.2.1")
		from.Sign(out, "alice")
		out.RequestURI = out.URL.RequestURI()
		if _, _, err := to.Verify(out, time.Now()); err != nil {
			b.Fatal(err)
		}
	}
}
