package directory

import (
	"errors"
	"testing"
)

// runPeersContract checks Advertise and PeerURL on a fresh directory from newDir.
func runPeersContract(t *testing.T, newDir func(t *testing.T) Directory) {
	t.Run("AdvertiseThenPeerURL", func(t *testing.T) {
		p := newDir(t)
		if _, err := p.PeerURL(t.Context(), "r9"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("peer url of unknown replica: %v, want ErrNotFound", err)
		}
		if u, err := p.ProbePeer(t.Context(), "r9"); err != nil || u != "" {
			t.Fatalf("probe of unknown replica = %q, %v; want \"\", nil", u, err)
		}
		if err := p.Advertise(t.Context(), "r9", "http://10.0.0.9:7000"); err != nil {
			t.Fatalf("advertise: %v", err)
		}
		if err := p.Advertise(t.Context(), "r9", "http://10.0.0.9:7001"); err != nil {
			t.Fatalf("advertise again: %v", err)
		}
		got, err := p.PeerURL(t.Context(), "r9")
		if err != nil {
			t.Fatalf("peer url: %v", err)
		}
		if want := "http://10.0.0.9:7001"; got != want {
			t.Fatalf("peer url = %q, want %q", got, want)
		}
		if u, err := p.ProbePeer(t.Context(), "r9"); err != nil || u != got {
			t.Fatalf("probe = %q, %v; want %q", u, err, got)
		}
		if err := p.Advertise(t.Context(), "r8", "http://10.0.0.8:7000"); err != nil {
			t.Fatalf("advertise r8: %v", err)
		}
		list, err := p.ListPeers(t.Context())
		if err != nil || len(list) != 2 || list["r9"] != "http://10.0.0.9:7001" || list["r8"] != "http://10.0.0.8:7000" {
			t.Fatalf("list peers = %v, %v", list, err)
		}
	})
	t.Run("AdvertiseRejectsBadInput", func(t *testing.T) {
		p := newDir(t)
		for _, tc := range []struct{ replica, url string }{
			{"", "http://a:1"},
			{"r1", ""},
			{"r1", "a:1"},
			{"r1", "ftp://a:1"},
			{"r1", "http://"},
		} {
			if err := p.Advertise(t.Context(), tc.replica, tc.url); !errors.Is(err, ErrInvalid) {
				t.Fatalf("advertise(%q, %q) = %v, want ErrInvalid", tc.replica, tc.url, err)
			}
		}
	})
}
