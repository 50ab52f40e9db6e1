package relaytest

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/switchboard-relay/switchboard/internal/directory"
	"github.com/switchboard-relay/switchboard/internal/relay"
)

// ClusterSecret keys the hops between replicas started by these fixtures.
const ClusterSecret = "relaytest-cluster-secret"

// ReplicaLease is the replica lease of directories made by StartRedisReplica: short, so that tests of lease loss
// are quick, yet several heartbeats long on a loaded machine.
const ReplicaLease = 1500 * time.Millisecond

// Replica is one relay replica of a cluster: a Relay, its internal listener and its directory.
type Replica struct {
	*Relay
	ID          string
	Internal    *httptest.Server // serves Server.InternalHandler
	InternalURL string
	Directory   directory.Directory

	internalDown atomic.Bool
}

// SetInternalDown makes the internal listener unreachable (true) or serve again (false) at the same address: while
// down, open connections are cut and every new one is closed before it is read, as peers would find a replica
// whose internal listener is gone. The address stays bound, so it cannot be taken by another process meanwhile.
func (r *Replica) SetInternalDown(down bool) {
	r.internalDown.Store(down)
	if down {
		r.Internal.CloseClientConnections()
	}
}

var replicaSeq atomic.Int64

// StartRelayOn starts a replica on dir with forwarding on (ClusterSecret) and an internal listener, and waits
// until its internal URL is advertised in dir. The replica id is cfg.Replica if mutate sets it, else a fresh one.
// mutate, if not nil, adjusts the config before New. Everything is stopped in t.Cleanup; dir is not closed.
func StartRelayOn(t testing.TB, dir directory.Directory, mutate func(*relay.Config)) *Replica {
	t.Helper()
	return startRelayOn(t, dir, nil, mutate)
}

// startRelayOn is StartRelayOn, with an internal listener over TLS if pki is not nil.
func startRelayOn(t testing.TB, dir directory.Directory, pki *InternalPKI, mutate func(*relay.Config)) *Replica {
	t.Helper()
	internal := httptest.NewUnstartedServer(nil)
	internalURL := "http://" + internal.Listener.Addr().String()
	if pki != nil {
		internalURL = "https://" + internal.Listener.Addr().String()
	}
	var id string
	r := StartRelay(t, func(c *relay.Config) {
		c.Directory = dir
		c.Replica = fmt.Sprintf("replica-%d", replicaSeq.Add(1))
		c.InternalURL = internalURL
		c.ClusterSecret = []byte(ClusterSecret)
		if pki != nil {
			c.PeerTLS = pki.ClientConfig(t)
		}
		if mutate != nil {
			mutate(c)
		}
		id = c.Replica
	})
	rep := &Replica{Relay: r, ID: id, Internal: internal, InternalURL: internalURL, Directory: dir}
	inner := r.InternalHandler()
	internal.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if rep.internalDown.Load() {
			if c, _, err := http.NewResponseController(w).Hijack(); err == nil {
				_ = c.Close()
			}
			return
		}
		inner.ServeHTTP(w, req)
	})
	if pki != nil {
		internal.TLS = pki.ServerConfig(t)
		internal.StartTLS()
	} else {
		internal.Start()
	}
	t.Cleanup(func() {
		internal.CloseClientConnections()
		internal.Close()
	})
	Eventually(t, 10*time.Second, "replica "+id+" advertised", func() bool {
		u, err := dir.PeerURL(context.Background(), id)
		return err == nil && u == internalURL
	})
	return rep
}

// StartRedisReplica starts replica id on its own Redis directory at addrs under key prefix (replicas of one
// cluster share addrs and prefix), with lease ReplicaLease and the relay's tunnels re-asserted after data loss.
// The relay runs the directory's upkeep; the directory is closed in t.Cleanup after the relay.
func StartRedisReplica(t testing.TB, addrs []string, prefix, id string, mutate func(*relay.Config)) *Replica {
	t.Helper()
	return StartRedisReplicaWith(t, directory.RedisConfig{Addrs: addrs, Prefix: prefix, Replica: id}, mutate)
}

// StartRedisReplicaWith is StartRedisReplica for a directory configured by cfg (a Sentinel group, credentials):
// cfg.Replica is the replica id; the lease (if zero), the logger and Owned are filled in.
func StartRedisReplicaWith(t testing.TB, cfg directory.RedisConfig, mutate func(*relay.Config)) *Replica {
	t.Helper()
	var srv atomic.Pointer[relay.Server]
	id := cfg.Replica
	if cfg.Lease == 0 {
		cfg.Lease = ReplicaLease
	}
	cfg.Logger = Logger(t).With("side", "directory")
	cfg.Owned = func() []directory.Entry {
		if s := srv.Load(); s != nil {
			return s.Owned()
		}
		return nil
	}
	dir, err := directory.NewRedis(context.Background(), cfg)
	if err != nil {
		t.Fatalf("redis directory for %s: %v", id, err)
	}
	t.Cleanup(func() { _ = dir.Close() })
	r := StartRelayOn(t, dir, func(c *relay.Config) {
		c.Replica = id
		if mutate != nil {
			mutate(c)
		}
	})
	srv.Store(r.Server)
	return r
}
