package webhook

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/switchboard-relay/switchboard/internal/presence"
	"github.com/switchboard-relay/switchboard/internal/redistest"
)

// BenchmarkDelivery measures one event's trip from the log to a loopback receiver's 2xx and the cursor write, one
// event at a time (the rate one URL sustains: events of a URL are sent one after another).
func BenchmarkDelivery(b *testing.B) {
	for _, store := range []string{"memory", "redis"} {
		b.Run(store, func(b *testing.B) {
			got := make(chan struct{}, 1) // events go one at a time: the next only after this one's 2xx
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.WriteHeader(http.StatusNoContent)
				got <- struct{}{}
			}))
			defer srv.Close()
			l := presence.NewMemory(presence.MemoryConfig{})
			cfg := fastConfig(l, srv.URL)
			if store == "redis" {
				addr, _ := redistest.Start(b)
				cfg.Store = redisStore(b, redisClient(b, addr))
			}
			s, stop := runSender(b, cfg)
			defer stop()
			for testutil.ToFloat64(s.m.leader) != 1 {
				time.Sleep(time.Millisecond)
			}
			for b.Loop() {
				if _, err := l.Append(context.Background(), presence.Event{Kind: presence.Online, HostID: "h", At: time.Now()}); err != nil {
					b.Fatal(err)
				}
				<-got
			}
		})
	}
}
