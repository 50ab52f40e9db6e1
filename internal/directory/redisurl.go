package directory

import (
	"crypto/tls"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"
)

const (
	defaultRedisPort    = "6379"
	defaultSentinelPort = "26379"
)

// Sentinel URL schemes: the addresses are Sentinels, and the query names the monitored primary.
const (
	sentinelScheme    = "redis-sentinel"
	sentinelTLSScheme = "rediss-sentinel"
)

// ParseRedisURL parses where Redis is into the connection fields of a RedisConfig (Addrs, DB, Username, Password,
// TLS); the caller sets the rest. It accepts
//
//	redis://[[user]:password@]host[:port][/db]   one server (or one cluster seed)
//	rediss://...                                 the same over TLS
//	host:port,host:port,...                      a Redis Cluster seed list, or one plain host:port
//	redis://h1:p1,redis://h2:p2                  a seed list of URLs; they must agree on scheme, db and credentials
//	redis-sentinel://[[user]:password@]s1[:port][,s2[:port]...][/db]?master=NAME[&sentinel_username=U][&sentinel_password=P]
//	rediss-sentinel://...                        the same over TLS, to the Sentinels and to the data nodes
//
// The port defaults to 6379, and to 26379 for a Sentinel. In a Sentinel URL the user information authenticates to the
// data nodes (the primary Sentinel names) and sentinel_username/sentinel_password to the Sentinels themselves, which
// get no AUTH without them.
func ParseRedisURL(s string) (RedisConfig, error) {
	var cfg RedisConfig
	s = strings.TrimSpace(s)
	if s == "" {
		return cfg, fmt.Errorf("parse redis url: %w: empty", ErrInvalid)
	}
	if scheme, _, ok := strings.Cut(s, "://"); ok && (scheme == sentinelScheme || scheme == sentinelTLSScheme) {
		cfg, err := parseSentinelURL(s)
		if err != nil {
			return RedisConfig{}, fmt.Errorf("parse redis sentinel url: %w", err)
		}
		return cfg, nil
	}
	first := true
	var scheme string
	for part := range strings.SplitSeq(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			return cfg, fmt.Errorf("parse redis url: %w: empty element in %q", ErrInvalid, s)
		}
		var (
			addr, sch, user, pass string
			db                    int
			err                   error
		)
		if strings.Contains(part, "://") {
			addr, sch, user, pass, db, err = parseOneRedisURL(part)
		} else {
			sch = "redis"
			addr, err = withDefaultPort(part, defaultRedisPort)
		}
		if err != nil {
			return RedisConfig{}, fmt.Errorf("parse redis url: %w", err)
		}
		if first {
			scheme, cfg.Username, cfg.Password, cfg.DB = sch, user, pass, db
			first = false
		} else if strings.Contains(part, "://") &&
			(sch != scheme || user != cfg.Username || pass != cfg.Password || db != cfg.DB) {
			return RedisConfig{}, fmt.Errorf("parse redis url: %w: seed URLs disagree on scheme, db or credentials",
				ErrInvalid)
		}
		cfg.Addrs = append(cfg.Addrs, addr)
	}
	if scheme == "rediss" {
		host, _, _ := net.SplitHostPort(cfg.Addrs[0])
		cfg.TLS = &tls.Config{ServerName: host, MinVersion: tls.VersionTLS12}
	}
	return cfg, nil
}

// parseOneRedisURL parses one redis:// or rediss:// URL.
func parseOneRedisURL(s string) (addr, scheme, user, pass string, db int, err error) {
	u, err := url.Parse(s)
	if err != nil {
		return "", "", "", "", 0, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if u.Scheme != "redis" && u.Scheme != "rediss" {
		return "", "", "", "", 0, fmt.Errorf("%w: scheme %q, want redis, rediss, or alone %s or %s", ErrInvalid,
			u.Scheme, sentinelScheme, sentinelTLSScheme)
	}
	if u.Opaque != "" || u.Host == "" {
		return "", "", "", "", 0, fmt.Errorf("%w: no host in %q", ErrInvalid, u.Redacted())
	}
	if u.User != nil {
		user = u.User.Username()
		pass, _ = u.User.Password()
	}
	if db, err = parseDB(u.Path); err != nil {
		return "", "", "", "", 0, err
	}
	if addr, err = withDefaultPort(u.Host, defaultRedisPort); err != nil {
		return "", "", "", "", 0, err
	}
	return addr, u.Scheme, user, pass, db, nil
}

// parseDB parses a URL's path, "" or "/N", into a database number.
func parseDB(path string) (int, error) {
	p := strings.TrimPrefix(path, "/")
	if p == "" {
		return 0, nil
	}
	db, err := strconv.Atoi(p)
	if err != nil || db < 0 {
		return 0, fmt.Errorf("%w: database %q is not a non-negative number", ErrInvalid, p)
	}
	return db, nil
}

// withDefaultPort validates host[:port] and adds defaultPort if there is none.
func withDefaultPort(hostport, defaultPort string) (string, error) {
	host, port, err := net.SplitHostPort(hostport)
	if err != nil {
		// No port: a bare host name or a bracketed IPv6 address.
		host = strings.TrimSuffix(strings.TrimPrefix(hostport, "["), "]")
		port = defaultPort
	}
	if host == "" || strings.ContainsAny(host, "[]/?#@ \t\r\n,") {
		return "", fmt.Errorf("%w: bad host in %q", ErrInvalid, hostport)
	}
	n, err := strconv.Atoi(port)
	if err != nil || n <= 0 || n > 65535 {
		return "", fmt.Errorf("%w: bad port in %q", ErrInvalid, hostport)
	}
	return net.JoinHostPort(host, strconv.Itoa(n)), nil
}

// netDialer is the dialer for Redis connections.
func netDialer(timeout time.Duration) net.Dialer {
	return net.Dialer{Timeout: timeout, KeepAlive: 5 * time.Second}
}
