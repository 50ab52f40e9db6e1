package webhook

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// independentVerify checks a signature header the way a receiver following docs/webhooks.md would, without this
// package's parser; its body is the Go example of that page.
func independentVerify(t testing.TB, header string, body, secret []byte) bool {
	t.Helper()
	return docVerify(header, body, secret)
}

// docVerify is the verify function of docs/webhooks.md, verbatim.
func docVerify(header string, body, secret []byte) bool {
	var ts string
	var sigs []string
	for _, kv := range strings.Split(header, ",") {
		k, v, _ := strings.Cut(strings.TrimSpace(kv), "=")
		switch k {
		case "t":
			ts = v
		case "v1":
			sigs = append(sigs, v)
		}
	}
	t, err := strconv.ParseInt(ts, 10, 64)
	if err != nil || time.Since(time.Unix(t, 0)).Abs() > 5*time.Minute {
		return false
	}
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(ts + "."))
	m.Write(body)
	want := hex.EncodeToString(m.Sum(nil))
	for _, s := range sigs {
		if hmac.Equal([]byte(s), []byte(want)) {
			return true
		}
	}
	return false
}

// TestDocShellVerifier runs the shell one-liner of docs/webhooks.md and docs/presence.md on a signed body: it must accept the signature
// and refuse a tampered body.
func TestDocShellVerifier(t *testing.T) {
	for _, bin := range []string{"sh", "openssl"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Skipf("%s not installed: %v", bin, err)
		}
	}
	for _, page := range []string{"webhooks.md", "presence.md"} {
		t.Run(page, func(t *testing.T) { checkShellVerifier(t, "../docs/"+page) })
	}
}

func checkShellVerifier(t *testing.T, page string) {
	doc, err := os.ReadFile(page)
	if err != nil {
		t.Fatal(err)
	}
	var script string
	for block := range strings.SplitSeq(string(doc), "```sh\n") {
		if s, _, _ := strings.Cut(block, "```"); strings.Contains(s, "openssl dgst") {
			script = s
		}
	}
	if script == "" {
		t.Fatalf("no sh block with the openssl verifier in %s", page)
	}
	secret := []byte("shell-secret")
	body := []byte(`{"id":"7","type":"online","host_id":"a b'c","seq":2}`)
	sig := Sign(secret, body, time.Now())
	for _, tc := range []struct {
		body string
		want string
	}{{string(body), "valid\n"}, {string(body) + " ", ""}} {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, "body.json"), []byte(tc.body), 0o600); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command("sh", "-c", script)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "SIG="+sig, "SWITCHBOARD_WEBHOOK_SECRET="+string(secret))
		out, _ := cmd.Output()
		if string(out) != tc.want {
			t.Fatalf("shell verifier on %q printed %q, want %q", tc.body, out, tc.want)
		}
	}
}

func TestSignatureRoundTrip(t *testing.T) {
	secret := []byte("s3cret")
	body := []byte(`{"id":"1","type":"online","host_id":"h"}`)
	now := time.Unix(1_700_000_000, 0)
	h := Sign(secret, body, now)
	if want := "t=1700000000,v1="; !strings.HasPrefix(h, want) {
		t.Fatalf("header %q, want prefix %q", h, want)
	}
	if fresh := Sign(secret, body, time.Now()); !independentVerify(t, fresh, body, secret) {
		t.Fatalf("independent verifier rejects %q", fresh)
	}
	if independentVerify(t, h, body, secret) {
		t.Fatalf("independent verifier accepts %q from 2023", h)
	}
	if err := verifyAt(h, body, secret, 5*time.Minute, now.Add(time.Minute)); err != nil {
		t.Fatalf("verify: %v", err)
	}
	sig := h[strings.Index(h, "v1="):]
	for _, tc := range []struct {
		name   string
		header string
		body   string
		secret string
		now    time.Time
		want   error
	}{
		{"other body", h, `{"id":"2"}`, "s3cret", now, ErrSignatureMismatch},
		{"other secret", h, string(body), "other", now, ErrSignatureMismatch},
		{"timestamp changed", "t=1700000001," + sig, string(body), "s3cret", now, ErrSignatureMismatch},
		{"too old", h, string(body), "s3cret", now.Add(6 * time.Minute), ErrSignatureExpired},
		{"from the future", h, string(body), "s3cret", now.Add(-6 * time.Minute), ErrSignatureExpired},
		{"empty", "", string(body), "s3cret", now, ErrSignatureFormat},
		{"no t", sig, string(body), "s3cret", now, ErrSignatureFormat},
		{"no v1", "t=1700000000", string(body), "s3cret", now, ErrSignatureFormat},
		{"t not decimal", "t=-5," + sig, string(body), "s3cret", now, ErrSignatureFormat},
		{"two t", "t=1700000000,t=1700000000," + sig, string(body), "s3cret", now, ErrSignatureFormat},
		{"v1 short", "t=1700000000,v1=abcd", string(body), "s3cret", now, ErrSignatureFormat},
		{"v1 not hex", "t=1700000000,v1=" + strings.Repeat("zz", 32), string(body), "s3cret", now, ErrSignatureFormat},
		{"bare element", "t=1700000000,junk," + sig, string(body), "s3cret", now, ErrSignatureFormat},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := verifyAt(tc.header, []byte(tc.body), []byte(tc.secret), 5*time.Minute, tc.now)
			if !errors.Is(err, tc.want) {
				t.Fatalf("verify %q: %v, want %v", tc.header, err, tc.want)
			}
		})
	}
	// Rotation and extensions: a second v1 and an unknown scheme do not break a valid header.
	rot := "t=1700000000,v1=" + strings.Repeat("00", 32) + ", " + sig + ",v2=whatever"
	if err := verifyAt(rot, body, secret, 0, now.Add(24*time.Hour)); err != nil {
		t.Fatalf("verify %q with tolerance 0: %v", rot, err)
	}
}

func FuzzVerifySignature(f *testing.F) {
	secret := []byte("k")
	body := []byte("{}")
	f.Add(Sign(secret, body, time.Unix(1_700_000_000, 0)))
	f.Add("t=1,v1=00")
	f.Add("t=,v1=")
	f.Add(",,,")
	f.Add("t=99999999999999999999,v1=" + strings.Repeat("a", 64))
	f.Fuzz(func(t *testing.T, header string) {
		err := verifyAt(header, body, secret, time.Hour, time.Unix(1_700_000_000, 0))
		if err == nil {
			// Accepted: it must carry the true MAC, so an independent check agrees on some v1 in it.
			ts, _, perr := parseSignature(header)
			if perr != nil {
				t.Fatalf("accepted %q that does not parse: %v", header, perr)
			}
			// Hex is read in either case, so compare in one case.
			if !strings.Contains(strings.ToLower(header), hex.EncodeToString(mac(secret, ts, body))) {
				t.Fatalf("accepted %q without the right MAC", header)
			}
			return
		}
		if !errors.Is(err, ErrSignatureFormat) && !errors.Is(err, ErrSignatureMismatch) && !errors.Is(err, ErrSignatureExpired) {
			t.Fatalf("verify %q: unclassified error %v", header, err)
		}
	})
}
