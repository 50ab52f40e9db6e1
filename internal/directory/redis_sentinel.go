package directory

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"iter"
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
// comma-separated list of Sentinels, which net/url does not accept, so the URL is split by hand (splitURL) and only
// the user information, path and query go through net/url.
func parseSentinelURL(s string) (RedisConfig, error) {
	var cfg RedisConfig
	p, _ := splitURL(s)
	if p.hosts == "" {
		return cfg, fmt.Errorf("%w: no sentinel address", ErrInvalid)
	}
	n := 0
	for part := range strings.SplitSeq(p.hosts, ",") {
		n++
		addr, err := withDefaultPort(strings.TrimSpace(part), defaultSentinelPort)
		if err != nil {
			return RedisConfig{}, fmt.Errorf("%w: host %d of the Sentinel list %w", ErrInvalid, n, err)
		}
		cfg.Addrs = append(cfg.Addrs, addr)
	}
	rebuilt := "redis://sentinel" + p.tail
	if p.hasUser {
		rebuilt = "redis://" + p.userinfo + "@sentinel" + p.tail
	}
	u, err := url.Parse(rebuilt)
	if err != nil {
		return RedisConfig{}, badURL(p, false)
	}
	if u.Fragment != "" || strings.Contains(p.tail, "#") {
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
	q := make(url.Values)
	i := 0
	for param := range queryParams(u.RawQuery) {
		i++
		if param.err != nil {
			return RedisConfig{}, fmt.Errorf("%w: query parameter %d %w", ErrInvalid, i, param.err)
		}
		switch param.name {
		case sentinelMasterParam, sentinelUserParam, sentinelPasswordParam:
		default:
			return RedisConfig{}, fmt.Errorf("%w: query parameter %d is none of %s, %s and %s", ErrInvalid, i,
				sentinelMasterParam, sentinelUserParam, sentinelPasswordParam)
		}
		if q.Has(param.name) {
			return RedisConfig{}, fmt.Errorf("%w: parameter %q given more than once", ErrInvalid, param.name)
		}
		q.Set(param.name, param.value)
	}
	cfg.Sentinel = SentinelConfig{
		Master:   q.Get(sentinelMasterParam),
		Username: q.Get(sentinelUserParam),
		Password: q.Get(sentinelPasswordParam),
	}
	if err := checkMasterName(cfg.Sentinel.Master); err != nil {
		return RedisConfig{}, err
	}
	if p.scheme == sentinelTLSScheme {
		// No ServerName: each connection verifies the name (or IP address) it dials, and the primary's address is
		// learnt from the Sentinels.
		cfg.TLS = &tls.Config{MinVersion: tls.VersionTLS12}
	}
	return cfg, nil
}

// queryParam is one name=value pair of a query, decoded; raw is the pair as written.
type queryParam struct {
	raw, name, value string
	err              error
}

// queryParams yields the pairs of a raw query in order, split and decoded as url.ParseQuery does: on '&', empty
// pairs skipped, the name up to the first '='. A pair with a ';' or a bad escape has err set (and name and value
// empty); its text is never quoted, as it may hold a password.
func queryParams(raw string) iter.Seq[queryParam] {
	return func(yield func(queryParam) bool) {
		for pair := range strings.SplitSeq(raw, "&") {
			if pair == "" {
				continue
			}
			p := queryParam{raw: pair}
			name, value, _ := strings.Cut(pair, "=")
			var errName, errValue error
			switch {
			case strings.Contains(pair, ";"):
				p.err = errors.New("has a ';' (separate parameters with '&')")
			default:
				p.name, errName = url.QueryUnescape(name)
				p.value, errValue = url.QueryUnescape(value)
				if errName != nil || errValue != nil {
					p.name, p.value = "", ""
					p.err = errors.New("has a '%' not followed by two hex digits (write a '%' as %25)")
				}
			}
			if !yield(p) {
				return
			}
		}
	}
}

// checkMasterName validates a Sentinel master set name: letters, digits, '-', '_', '.' and ':'. Sentinel itself
// refuses only spaces (its messages are space-separated); the narrower set turns a URL pasted wrong (a comma, a
// slash, a second URL) into an error instead of a name no Sentinel knows. The name is not quoted: a URL pasted wrong
// may have moved a password into it.
func checkMasterName(name string) error {
	if name == "" {
		return fmt.Errorf("%w: no primary named: add ?%s=NAME (the name the Sentinels monitor)", ErrInvalid,
			sentinelMasterParam)
	}
	if len(name) > 256 {
		return fmt.Errorf("%w: primary name longer than 256 bytes", ErrInvalid)
	}
	for i, c := range []byte(name) {
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("-_.:", c) >= 0
		if !ok {
			return fmt.Errorf("%w: primary name, byte %d: only letters, digits, '-', '_', '.' and ':' are accepted",
				ErrInvalid, i+1)
		}
	}
	return nil
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
