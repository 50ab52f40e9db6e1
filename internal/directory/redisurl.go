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

const defaultRedisPort = "6379"

// ParseRedisURL parses where Redis is into the connection fields of a RedisConfig (Addrs, DB, Username, Password,
// TLS); the caller sets the rest. It accepts
//
//	redis://[[user]:password@]host[:port][/db]   one server (or one cluster seed)
//	rediss://...                                 the same over TLS
//	host:port,host:port,...                      a Redis Cluster seed list, or one plain host:port
//	redis://h1:p1,redis://h2:p2                  a seed list of URLs; they must agree on scheme, db and credentials
//
// The port defaults to 6379.
func ParseRedisURL(s string) (RedisConfig, error) {
	var cfg RedisConfig
	s = strings.TrimSpace(s)
	if s == "" {
		return cfg, fmt.Errorf("parse redis url: %w: empty", ErrInvalid)
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
			addr, err = withDefaultPort(part)
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
		return "", "", "", "", 0, fmt.Errorf("%w: scheme %q, want redis or rediss", ErrInvalid, u.Scheme)
	}
	if u.Opaque != "" || u.Host == "" {
		return "", "", "", "", 0, fmt.Errorf("%w: no host in %q", ErrInvalid, u.Redacted())
	}
	if u.User != nil {
		user = u.User.Username()
		pass, _ = u.User.Password()
	}
	if p := strings.TrimPrefix(u.Path, "/"); p != "" {
		db, err = strconv.Atoi(p)
		if err != nil || db < 0 {
			return "", "", "", "", 0, fmt.Errorf("%w: database %q is not a non-negative number", ErrInvalid, p)
		}
	}
	if addr, err = withDefaultPort(u.Host); err != nil {
		return "", "", "", "", 0, err
	}
	return addr, u.Scheme, user, pass, db, nil
}

// withDefaultPort validates host[:port] and adds the default Redis port if there is none.
func withDefaultPort(hostport string) (string, error) {
	host, port, err := net.SplitHostPort(hostport)
	if err != nil {
		// No port: a bare host name or a bracketed IPv6 address.
		host = strings.TrimSuffix(strings.TrimPrefix(hostport, "["), "]")
		port = defaultRedisPort
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
