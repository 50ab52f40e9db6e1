package cli

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/switchboard-relay/switchboard/internal/auth"
	"github.com/switchboard-relay/switchboard/internal/tunnel"
)

// TokenCmd mints tokens.
type TokenCmd struct {
	Host   TokenHostCmd   `cmd:"" help:"Mint a host token bound to one host id."`
	Client TokenClientCmd `cmd:"" help:"Mint a client token for a list of host ids or prefix* patterns."`
	Admin  TokenAdminCmd  `cmd:"" help:"Mint an admin token for the admin API (switchboard admin); it reaches no host."`
}

// TokenAdminCmd is `switchboard token admin`.
type TokenAdminCmd struct {
	Sub    string        `help:"Subject (who the operator is; logged with every admin action)." default:"admin"`
	TTL    time.Duration `help:"Lifetime." default:"1h"`
	Secret string        `help:"Signing secret." env:"SWITCHBOARD_SECRET"`
}

// Validate checks the subject and lifetime before anything is signed.
func (c *TokenAdminCmd) Validate() error {
	if c.Sub == "" {
		return errNoSub
	}
	if err := checkSecret("--secret (SWITCHBOARD_SECRET)", c.Secret); err != nil {
		return err
	}
	return checkTTL(c.TTL)
}

// Run prints the token.
func (c *TokenAdminCmd) Run(g *Globals) error {
	if c.Secret == "" {
		return errNoSecret
	}
	tok, err := auth.MintAdmin([]byte(c.Secret), c.Sub, c.TTL)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(g.stdout, tok)
	return err
}

// TokenHostCmd is `switchboard token host`.
type TokenHostCmd struct {
	ID     string        `help:"Host id the token may register." required:""`
	TTL    time.Duration `help:"Lifetime." default:"24h"`
	Secret string        `help:"Signing secret." env:"SWITCHBOARD_SECRET"`
}

// Validate checks the id and lifetime before anything is signed.
func (c *TokenHostCmd) Validate() error {
	if err := checkHostID(c.ID); c.ID != "" && err != nil { // a missing --id is kong's to report
		return err
	}
	if err := checkSecret("--secret (SWITCHBOARD_SECRET)", c.Secret); err != nil {
		return err
	}
	return checkTTL(c.TTL)
}

// Run prints the token.
func (c *TokenHostCmd) Run(g *Globals) error {
	if c.Secret == "" {
		return errNoSecret
	}
	if err := checkHostID(c.ID); err != nil { // an explicit --id "" passes kong's required check
		return &exitError{code: 2, err: err}
	}
	tok, err := auth.MintHost([]byte(c.Secret), c.ID, c.TTL)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(g.stdout, tok)
	return err
}

// TokenClientCmd is `switchboard token client`.
type TokenClientCmd struct {
	Hosts    string        `help:"Comma-separated host ids or prefix* patterns the token may reach ('*' for all)." required:""`
	Services string        `help:"Comma-separated TCP services the token may open ('*' for all), and then no HTTP; leave out for every service and HTTP." env:"SWITCHBOARD_TOKEN_SERVICES"`
	Sub      string        `help:"Subject (who the client is; never empty); the host receives it as X-Switchboard-Subject." default:"client"`
	TTL      time.Duration `help:"Lifetime." default:"1h"`
	Secret   string        `help:"Signing secret." env:"SWITCHBOARD_SECRET"`
}

// Validate checks the host list and lifetime before anything is signed.
func (c *TokenClientCmd) Validate() error {
	if c.Hosts != "" && len(splitList(c.Hosts)) == 0 { // a missing --hosts is kong's to report
		return errNoHosts
	}
	if c.Sub == "" {
		return errNoSub
	}
	if err := checkSecret("--secret (SWITCHBOARD_SECRET)", c.Secret); err != nil {
		return err
	}
	for _, h := range splitList(c.Hosts) {
		if err := checkHostPattern(h); err != nil {
			return err
		}
	}
	return checkTTL(c.TTL)
}

// Run prints the token.
func (c *TokenClientCmd) Run(g *Globals) error {
	if c.Secret == "" {
		return errNoSecret
	}
	hosts := splitList(c.Hosts)
	if len(hosts) == 0 { // an explicit --hosts "" passes kong's required check
		return &exitError{code: 2, err: errNoHosts}
	}
	for _, h := range hosts {
		if err := checkHostPattern(h); err != nil {
			return &exitError{code: 2, err: err}
		}
	}
	var services []string
	if c.Services != "" {
		services = splitList(c.Services)
		for _, svc := range services {
			if err := tunnel.CheckServiceName(svc); svc != "*" && err != nil {
				return &exitError{code: 2, err: fmt.Errorf("--services: %w", err)}
			}
		}
		if len(services) == 0 {
			return &exitError{code: 2, err: errors.New("--services names no service")}
		}
	}
	tok, err := auth.MintClientServices([]byte(c.Secret), c.Sub, hosts, services, c.TTL)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(g.stdout, tok)
	return err
}

// checkHostPattern applies the host id rule to an entry of --hosts: "*", a "prefix*" whose prefix is the start of
// a valid host id, or a valid host id. A token naming an id no host can register would reach nothing, silently.
func checkHostPattern(p string) error {
	id, prefix := strings.CutSuffix(p, "*")
	if prefix && id == "" {
		return nil
	}
	if prefix {
		id += "x" // a prefix must leave room for at least one more byte
	}
	if err := tunnel.CheckHostID(id); err != nil {
		return fmt.Errorf("--hosts entry %q: %w", p, err)
	}
	return nil
}

// checkTTL refuses a lifetime that would mint an already expired token.
func checkTTL(ttl time.Duration) error {
	if ttl <= 0 {
		return fmt.Errorf("--ttl %v: a token lifetime must be positive", ttl)
	}
	return nil
}

var errNoHosts = errors.New("--hosts needs at least one host id or pattern")

// errNoSub: the relay refuses a client token without a subject (hosts see it as X-Switchboard-Subject).
var errNoSub = errors.New("--sub must not be empty: a client token names who it speaks for")

var errNoSecret = &exitError{code: 2, err: errors.New("no signing secret: set SWITCHBOARD_SECRET (the relay's secret) or pass --secret")}
