package directory

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net/url"
	"strings"

	"github.com/redis/rueidis"
)

// SentinelConfig names the primary that Redis Sentinels monitor, for a directory that follows Sentinel failovers.
type SentinelConfig struct {
	// Master is the name of the monitored primary (Sentinel's master set name). If empty, RedisConfig.Addrs are
	// Redis servers, not Sentinels.
	Master string

	// Username and Password authenticate to the Sentinels. If empty, no AUTH is sent to them; RedisConfig.Username
	// and Password are for the data nodes only.
	Username string
	Password string
}

// Query parameters of a Sentinel URL.
const (
	sentinelMasterParam   = "master"
	sentinelUserParam     = "sentinel_username"
	sentinelPasswordParam = "sentinel_password"
)

// parseSentinelURL parses a redis-sentinel:// or rediss-sentinel:// URL (see ParseRedisURL). Its authority holds a
// comma-separated list of Sentinels, which net/url does not accept, so the URL is split by hand and only the user
// information, path and query go through net/url.
func parseSentinelURL(s string) (RedisConfig, error) {
	var cfg RedisConfig
	scheme, rest, _ := strings.Cut(s, "://")
	authority, tail := rest, ""
	if i := strings.IndexAny(rest, "/?#"); i >= 0 {
		authority, tail = rest[:i], rest[i:]
	}
	userinfo, hosts := "", authority
	if i := strings.LastIndexByte(authority, '@'); i >= 0 {
		userinfo, hosts = authority[:i], authority[i+1:]
	}
	if hosts == "" {
		return cfg, fmt.Errorf("%w: no sentinel address in %q", ErrInvalid, redactUserinfo(s))
	}
	for part := range strings.SplitSeq(hosts, ",") {
		addr, err := withDefaultPort(strings.TrimSpace(part), defaultSentinelPort)
		if err != nil {
			return RedisConfig{}, fmt.Errorf("sentinel address: %w", err)
		}
		cfg.Addrs = append(cfg.Addrs, addr)
	}
	rebuilt := "redis://sentinel" + tail
	if userinfo != "" {
		rebuilt = "redis://" + userinfo + "@sentinel" + tail
	}
	u, err := url.Parse(rebuilt)
	if err != nil {
		// The error quotes the URL; say only what was wrong with the user information, path or query.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return RedisConfig{}, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if u.Fragment != "" || strings.Contains(tail, "#") {
		return RedisConfig{}, fmt.Errorf("%w: a fragment (#...) in a sentinel url; name the primary with ?%s=NAME",
			ErrInvalid, sentinelMasterParam)
	}
	if u.User != nil {
		cfg.Username = u.User.Username()
		cfg.Password, _ = u.User.Password()
	}
	if cfg.DB, err = parseDB(u.Path); err != nil {
		return RedisConfig{}, err
	}
	q, err := url.ParseQuery(u.RawQuery)
	if err != nil {
		return RedisConfig{}, fmt.Errorf("%w: query: %w", ErrInvalid, err)
	}
	for k, v := range q {
		switch k {
		case sentinelMasterParam, sentinelUserParam, sentinelPasswordParam:
		default:
			return RedisConfig{}, fmt.Errorf("%w: unknown parameter %q; a sentinel url takes %s, %s and %s",
				ErrInvalid, k, sentinelMasterParam, sentinelUserParam, sentinelPasswordParam)
		}
		if len(v) != 1 {
			return RedisConfig{}, fmt.Errorf("%w: parameter %q given %d times", ErrInvalid, k, len(v))
		}
	}
	cfg.Sentinel = SentinelConfig{
		Master:   q.Get(sentinelMasterParam),
		Username: q.Get(sentinelUserParam),
		Password: q.Get(sentinelPasswordParam),
	}
	if err := checkMasterName(cfg.Sentinel.Master); err != nil {
		return RedisConfig{}, err
	}
	if scheme == sentinelTLSScheme {
		// No ServerName: each connection verifies the name (or IP address) it dials, and the primary's address is
		// learnt from the Sentinels.
		cfg.TLS = &tls.Config{MinVersion: tls.VersionTLS12}
	}
	return cfg, nil
}

// checkMasterName validates a Sentinel master set name: letters, digits, '-', '_', '.' and ':'. Sentinel itself
// refuses only spaces (its messages are space-separated); the narrower set turns a URL pasted wrong (a comma, a
// slash, a second URL) into an error instead of a name no Sentinel knows.
func checkMasterName(name string) error {
	if name == "" {
		return fmt.Errorf("%w: no primary named: add ?%s=NAME (the name the Sentinels monitor)", ErrInvalid,
			sentinelMasterParam)
	}
	if len(name) > 256 {
		return fmt.Errorf("%w: primary name longer than 256 bytes", ErrInvalid)
	}
	for _, c := range []byte(name) {
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("-_.:", c) >= 0
		if !ok {
			return fmt.Errorf("%w: primary name %q: only letters, digits, '-', '_', '.' and ':' are accepted",
				ErrInvalid, name)
		}
	}
	return nil
}

// redactUserinfo hides the user information of a URL, for error messages.
func redactUserinfo(s string) string {
	scheme, rest, ok := strings.Cut(s, "://")
	if !ok {
		return s
	}
	end := len(rest)
	if i := strings.IndexAny(rest, "/?#"); i >= 0 {
		end = i
	}
	if i := strings.LastIndexByte(rest[:end], '@'); i >= 0 {
		rest = "REDACTED@" + rest[i+1:]
	}
	return scheme + "://" + rest
}

// sentinelOption is the rueidis Sentinel option for cfg, or the zero option without a Sentinel master. The client
// follows +switch-master events from the Sentinels and, in case one was missed, asks them for the primary every
// heartbeat.
func sentinelOption(cfg RedisConfig) rueidis.SentinelOption {
	if cfg.Sentinel.Master == "" {
		return rueidis.SentinelOption{}
	}
	return rueidis.SentinelOption{
		Dialer:                  netDialer(cfg.Timeout),
		TLSConfig:               cfg.TLS,
		MasterSet:               cfg.Sentinel.Master,
		Username:                cfg.Sentinel.Username,
		Password:                cfg.Sentinel.Password,
		ClientName:              "switchboard-" + cfg.Replica,
		TopologyRefreshInterval: cfg.Lease / 3,
	}
}

// serverRunID returns the run_id of the Redis server this client's commands go to, or "" with a Redis Cluster,
// whose commands go to many servers. A new run_id means the directory now talks to another process: a promoted
// replica after a Sentinel failover, or a restarted server, either of which may lack writes the old one
// acknowledged.
func (r *Redis) serverRunID(ctx context.Context) (string, error) {
	if r.client.Mode() == rueidis.ClientModeCluster {
		return "", nil
	}
	ctx, cancel := context.WithTimeout(ctx, r.cfg.Timeout)
	defer cancel()
	info, err := r.client.Do(ctx, r.client.B().Info().Section("server").Build()).ToString()
	if err != nil {
		return "", fmt.Errorf("server run id: %w", err)
	}
	for line := range strings.SplitSeq(info, "\n") {
		if v, ok := strings.CutPrefix(line, "run_id:"); ok {
			return strings.TrimSpace(v), nil
		}
	}
	return "", fmt.Errorf("server run id: no run_id in INFO server")
}

// serverMoved records the run_id of the Redis server answering now and reports whether it differs from the one
// recorded before. It is false when either is unknown. A server that refuses INFO (an ACL without it) turns the
// check off, with one warning. Called by NewRedis and then by Run only.
func (r *Redis) serverMoved(ctx context.Context) bool {
	if r.runIDOff {
		return false
	}
	id, err := r.serverRunID(ctx)
	if err != nil {
		var re *rueidis.RedisError
		if errors.As(err, &re) && !re.IsNil() && !re.IsLoading() {
			r.runIDOff = true
			r.log.Warn("directory cannot read the redis server's run_id (INFO server refused); a failover that keeps this replica's lease but loses later writes goes unnoticed",
				"err", err)
		}
		return false
	}
	prev := r.runID
	if id != "" {
		r.runID = id
	}
	return prev != "" && id != "" && prev != id
}
