package bench

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os/exec"
	"time"
)

// forwardSlices is how many turns the owner and the forwarded path take at each concurrency.
const forwardSlices = 5

// errNoRedis reports that the forward scenario cannot run: it needs redis-server for the shared directory.
var errNoRedis = errors.New("redis-server not found on PATH (the forward scenario shares a Redis directory between two relays; install redis-server)")

// runForward measures the cost of one hop between replicas: two relays share a Redis directory, the agent is
// connected to the first (the owner), and the same small keep-alive GETs go once to the owner and once to the
// other replica, which forwards them to the owner's internal listener. The baseline is the owner, not the direct
// path; the goal is forwarded rps ≥ 0.75× owner rps at c=50.
func runForward(ctx context.Context, e *env) (*Result, error) {
	res := &Result{}
	redisAddr, stopRedis, err := e.clusterRedis(ctx, res, "forward starts a second replica")
	if redisAddr == "" {
		return res, err
	}
	defer stopRedis()
	owner, err := e.startReplica(ctx, "relay-owner", redisAddr, "owner")
	if err != nil {
		return res, err
	}
	defer owner.stop()
	other, err := e.startReplica(ctx, "relay-forwarder", redisAddr, "forwarder")
	if err != nil {
		return res, err
	}
	defer other.stop()
	a, err := e.startAgent(ctx, owner, benchHostID)
	if err != nil {
		return res, err
	}
	defer a.stop()

	path := hostPath(benchHostID, "/small")
	for _, c := range e.cfg.Concurrency {
		// The two paths take turns in short slices, so that a shared machine's changing load falls on both alike.
		slice := max(e.cfg.Duration/forwardSlices, 200*time.Millisecond)
		spec := loadSpec{Workers: c, Duration: slice, MaxCount: max(e.cfg.MaxRequests/forwardSlices, 1), Warmup: 20}
		own, fwd := &loadResult{}, &loadResult{}
		for range forwardSlices {
			for _, leg := range []struct {
				r   *relayProc
				acc *loadResult
			}{{owner, own}, {other, fwd}} {
				spec.Addr, spec.Request = leg.r.Addr, buildGET(leg.r.Addr, path, e.clientToken)
				got, err := runLoad(ctx, spec)
				if err != nil {
					return res, fmt.Errorf("%s c=%d: %w", leg.r.name(), c, err)
				}
				leg.acc.add(got)
			}
		}
		os, fs := own.Lat.Summary(), fwd.Lat.Summary()
		e.progressf("forward c=%-4d owner %8.0f rps p50 %6.0f µs | forwarded %8.0f rps p50 %6.0f µs | %.2f× (errors %d/%d)",
			c, own.RPS(), os.P50, fwd.RPS(), fs.P50, fwd.RPS()/own.RPS(), own.Errors, fwd.Errors)
		rpsRow := row(fmt.Sprintf("forwarded rps c=%d", c), "req/s", fwd.RPS(), own.RPS(), true).withBaseline("owner")
		if c == 50 {
			rpsRow = rpsRow.withGoal("≥ 0.75× owner", rpsRow.Ratio >= 0.75)
		}
		res.add(rpsRow, row(fmt.Sprintf("forwarded p50 c=%d", c), "µs", fs.P50, os.P50, false).withBaseline("owner"))
		if own.Errors > 0 || fwd.Errors > 0 {
			res.notef("c=%d: %d owner and %d forwarded requests failed", c, own.Errors, fwd.Errors)
		}
	}
	return res, nil
}

// clusterRedis starts the throwaway Redis of a scenario that runs several replicas. It returns "" when the
// scenario cannot run: against an existing relay, or without redis-server (both noted in res, error nil), or when
// Redis did not start (the error).
func (e *env) clusterRedis(ctx context.Context, res *Result, what string) (addr string, stop func(), err error) {
	if e.cfg.Relay != "" {
		res.notef("skipped: %s, which needs relays the bench started", what)
		return "", nil, nil
	}
	addr, redis, err := e.startRedis(ctx)
	if errors.Is(err, errNoRedis) {
		res.notef("skipped: %v", err)
		return "", nil, nil
	}
	if err != nil {
		return "", nil, err
	}
	return addr, func() { redis.stop(5 * time.Second) }, nil
}

// startReplica starts `switchboard serve` as replica id of the cluster on the Redis at redisAddr, with an internal
// listener on a free port, and extra flags.
func (e *env) startReplica(ctx context.Context, name, redisAddr, id string, extra ...string) (*relayProc, error) {
	args := []string{"--directory", "redis://" + redisAddr + "/0", "--replica-id", id, "--internal-listen", fdArg(2),
		"--cluster-secret", e.secret + "-cluster"}
	return e.startRelayArgs(ctx, name, 1, append(args, extra...)...)
}

// startRedis starts a throwaway redis-server on a free loopback port, without persistence. redis-server cannot serve
// an inherited socket, so a port taken between the look-up and its bind is retried on another.
func (e *env) startRedis(ctx context.Context) (string, *child, error) {
	exe, err := exec.LookPath("redis-server")
	if err != nil {
		return "", nil, errNoRedis
	}
	for attempt := 1; ; attempt++ {
		addr, c, err := e.tryRedis(ctx, exe)
		if err == nil || attempt == 5 || ctx.Err() != nil {
			return addr, c, err
		}
		e.progressf("redis-server: %v; trying another port", err)
	}
}

// tryRedis starts redis-server once, on a port that was free a moment ago, and waits until it accepts.
func (e *env) tryRedis(ctx context.Context, exe string) (string, *child, error) {
	addr, err := freeAddr()
	if err != nil {
		return "", nil, err
	}
	_, port, _ := net.SplitHostPort(addr)
	c, err := startChild(exe, "redis", e.logDir, []string{"--bind", "127.0.0.1", "--port", port, "--save", "",
		"--appendonly", "no"}, nil)
	if err != nil {
		return "", nil, err
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		if c.exited() { // typically: the port was taken meanwhile
			return "", nil, fmt.Errorf("redis-server on %s: %s", addr, c.describe())
		}
		conn, err := (&net.Dialer{Timeout: time.Second}).DialContext(ctx, "tcp", addr)
		if err == nil {
			conn.Close()
			return addr, c, nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			c.stop(time.Second)
			return "", nil, fmt.Errorf("redis-server did not listen on %s: %w", addr, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
