package directory

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/netip"
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
//
// Errors never quote the string or a part of it, since any part may hold a password (a '/' or '?' left unencoded in a
// password moves the rest of it into the path or the query); they say what is wrong and where.
func ParseRedisURL(s string) (RedisConfig, error) {
	var cfg RedisConfig
	s = strings.TrimSpace(s)
	if s == "" {
		return cfg, fmt.Errorf("parse redis url: %w: empty", ErrInvalid)
	}
	if scheme, _, ok := strings.Cut(s, "://"); ok && (scheme == sentinelScheme || scheme == sentinelTLSScheme) {
		cfg, err := parseSentinelURL(s)
		if err != nil {
			return RedisConfig{}, fmt.Errorf("parse redis sentinel url: %w%s", err, atHint(s))
		}
		return cfg, nil
	}
	n := strings.Count(s, ",") + 1
	var scheme string
	for i, part := range seedElements(s) {
		where := ""
		if n > 1 {
			where = fmt.Sprintf("element %d of the seed list: ", i+1)
		}
		if part == "" {
			return cfg, fmt.Errorf("parse redis url: %w: %sempty", ErrInvalid, where)
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
			if addr, err = withDefaultPort(part, defaultRedisPort); err != nil {
				err = fmt.Errorf("%w: host %w", ErrInvalid, err)
				if strings.Contains(part, "@") {
					err = fmt.Errorf("%w (user information needs redis://user:password@host, with a ',' in the "+
						"password written %%2C)", err)
				}
			}
		}
		if err != nil {
			return RedisConfig{}, fmt.Errorf("parse redis url: %s%w%s", where, err, atHint(part))
		}
		if i == 0 {
			scheme, cfg.Username, cfg.Password, cfg.DB = sch, user, pass, db
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

// seedElements splits a string that is not a Sentinel URL into its seed list elements, trimmed, as ParseRedisURL
// reads them.
func seedElements(s string) []string {
	parts := strings.Split(s, ",")
	for i := range parts {
		parts[i] = strings.TrimSpace(parts[i])
	}
	return parts
}

// urlParts is a URL split the way net/url splits one: the authority runs from "://" to the first '/', '?' or '#',
// and the user information is what precedes the authority's last '@'. The parser and RedactRedisURL both split with
// it, so what the parser takes for a password is what the redaction hides.
type urlParts struct {
	scheme   string
	userinfo string
	hasUser  bool
	hosts    string // host[:port], or a Sentinel URL's comma-separated list of them
	tail     string // path, query and fragment: from the authority's end
}

// splitURL splits s at its first "://"; ok is false without one.
func splitURL(s string) (p urlParts, ok bool) {
	p.scheme, p.hosts, ok = strings.Cut(s, "://")
	if !ok {
		return urlParts{}, false
	}
	if i := strings.IndexAny(p.hosts, "/?#"); i >= 0 {
		p.hosts, p.tail = p.hosts[:i], p.hosts[i:]
	}
	if i := strings.LastIndexByte(p.hosts, '@'); i >= 0 {
		p.userinfo, p.hosts, p.hasUser = p.hosts[:i], p.hosts[i+1:], true
	}
	return p, true
}

// badURL says which part of a URL net/url refused, without quoting it (net/url's errors quote the whole URL).
// checkHost is false for a Sentinel URL, whose hosts are checked one by one.
func badURL(p urlParts, checkHost bool) error {
	parses := func(s string) bool { _, err := url.Parse(s); return err == nil }
	switch {
	case !parses(p.scheme + "://h"):
		return fmt.Errorf("%w: the scheme is not valid", ErrInvalid)
	case p.hasUser && !parses("redis://"+p.userinfo+"@h"):
		return fmt.Errorf("%w: the user information is not valid: percent-encode reserved characters in it "+
			"(a '%%' as %%25, a space as %%20)", ErrInvalid)
	case checkHost && !parses("redis://"+p.hosts):
		return fmt.Errorf("%w: the host is not host[:port]", ErrInvalid)
	case !parses("redis://h" + p.tail):
		return fmt.Errorf("%w: the path or query is not valid", ErrInvalid)
	}
	return fmt.Errorf("%w: not a valid URL", ErrInvalid)
}

// atHint explains an '@' after the authority of a URL that was refused: most likely a '/', '?' or '#' in a
// password, which ends the authority early.
func atHint(s string) string {
	if p, ok := splitURL(s); ok && strings.Contains(p.tail, "@") {
		return " (an '@' follows the host: write a '/', '?' or '#' in a password as %2F, %3F or %23)"
	}
	return ""
}

// parseOneRedisURL parses one redis:// or rediss:// URL.
func parseOneRedisURL(s string) (addr, scheme, user, pass string, db int, err error) {
	p, _ := splitURL(s)
	u, err := url.Parse(s)
	if err != nil {
		return "", "", "", "", 0, badURL(p, true)
	}
	if u.Scheme != "redis" && u.Scheme != "rediss" {
		return "", "", "", "", 0, fmt.Errorf("%w: the scheme is not redis or rediss (nor, alone, %s or %s)",
			ErrInvalid, sentinelScheme, sentinelTLSScheme)
	}
	if u.Opaque != "" || u.Host == "" {
		return "", "", "", "", 0, fmt.Errorf("%w: no host", ErrInvalid)
	}
	if u.User != nil {
		user = u.User.Username()
		pass, _ = u.User.Password()
	}
	if db, err = parseDB(u.Path); err != nil {
		return "", "", "", "", 0, err
	}
	if addr, err = withDefaultPort(u.Host, defaultRedisPort); err != nil {
		return "", "", "", "", 0, fmt.Errorf("%w: the host %w", ErrInvalid, err)
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
		return 0, fmt.Errorf("%w: the path is not /N, a database number", ErrInvalid)
	}
	return db, nil
}

// withDefaultPort validates host[:port] and adds defaultPort if there is none. Its errors complete a sentence
// whose subject is the host ("host 2 of the Sentinel list ...") and quote nothing.
func withDefaultPort(hostport, defaultPort string) (string, error) {
	host, port, err := net.SplitHostPort(hostport)
	if err != nil {
		// No port: a bare host name or a bracketed IPv6 address.
		host = strings.TrimSuffix(strings.TrimPrefix(hostport, "["), "]")
		port = defaultPort
	}
	if !validHost(host) {
		return "", errors.New("is not host[:port]")
	}
	n, err := strconv.Atoi(port)
	if err != nil || n <= 0 || n > 65535 {
		return "", errors.New("has a port that is not a number from 1 to 65535")
	}
	return net.JoinHostPort(host, strconv.Itoa(n)), nil
}

// validHost reports whether host is an IP address or a DNS name (letters, digits, '.', '-', '_'). Anything else
// (an '=', a '%', a space) is a typo or a misplaced piece of the URL, and refusing it keeps such a piece, perhaps a
// password, out of the addresses that are logged.
func validHost(host string) bool {
	if host == "" {
		return false
	}
	if ip, err := netip.ParseAddr(host); err == nil {
		return ip.Zone() == "" || nameChars(ip.Zone()) // a zone (fe80::1%eth0) is an interface name
	}
	return nameChars(host)
}

// nameChars reports whether s is made of letters, digits, '.', '-' and '_' only.
func nameChars(s string) bool {
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// netDialer is the dialer for Redis connections.
func netDialer(timeout time.Duration) net.Dialer {
	return net.Dialer{Timeout: timeout, KeepAlive: 5 * time.Second}
}

// redacted replaces a secret in RedactRedisURL's output.
const redacted = "REDACTED"

// RedactRedisURL returns s, a string ParseRedisURL accepts, fit for a log: split as the parser splits it, the user
// information of every URL and the value of every query parameter whose name, decoded, contains "password" (in any
// case) read REDACTED. A string the parser refuses cannot be split as it would be, so it is hidden whole, but for a
// scheme it starts with.
func RedactRedisURL(s string) string {
	s = strings.TrimSpace(s)
	if _, err := ParseRedisURL(s); err != nil {
		if scheme, _, ok := strings.Cut(s, "://"); ok && isScheme(scheme) {
			return scheme + "://" + redacted
		}
		return redacted
	}
	if scheme, _, _ := strings.Cut(s, "://"); scheme == sentinelScheme || scheme == sentinelTLSScheme {
		return redactURL(s)
	}
	parts := seedElements(s)
	for i, part := range parts {
		if strings.Contains(part, "://") {
			parts[i] = redactURL(part)
		}
	}
	return strings.Join(parts, ",")
}

// redactURL hides the user information and the password parameters of one URL.
func redactURL(s string) string {
	p, _ := splitURL(s)
	var b strings.Builder
	b.WriteString(p.scheme + "://")
	if p.hasUser {
		b.WriteString(redacted + "@")
	}
	b.WriteString(p.hosts)
	// A fragment before any query, which the parser ignores, is hidden whole: it may hold anything.
	if i := strings.IndexAny(p.tail, "?#"); i >= 0 && p.tail[i] == '#' {
		return b.String() + p.tail[:i] + "#" + redacted
	}
	path, query, ok := strings.Cut(p.tail, "?")
	b.WriteString(path)
	if !ok {
		return b.String()
	}
	// The parser refuses a fragment in a Sentinel URL and ignores it in another; here it stays in the last value,
	// which errs on the side of hiding it.
	b.WriteByte('?')
	first := true
	for param := range queryParams(query) {
		if !first {
			b.WriteByte('&')
		}
		first = false
		name, _, hasValue := strings.Cut(param.raw, "=")
		switch {
		case param.err != nil:
			b.WriteString(redacted) // cannot be decoded, so cannot be told safe
		case hasValue && strings.Contains(strings.ToLower(param.name), "password"):
			b.WriteString(name + "=" + redacted)
		default:
			b.WriteString(param.raw)
		}
	}
	return b.String()
}

// isScheme reports whether s has the syntax of a URL scheme (RFC 3986), so that it holds no password.
func isScheme(s string) bool {
	for i, c := range []byte(s) {
		letter := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z'
		if !letter && (i == 0 || !(c >= '0' && c <= '9' || c == '+' || c == '-' || c == '.')) {
			return false
		}
	}
	return s != ""
}
