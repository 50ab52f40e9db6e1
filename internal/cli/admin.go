package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/switchboard-relay/switchboard/internal/relay"
)

// AdminCmd is `switchboard admin`: the admin API (docs/operations.md, "Admin API") from the command line.
type AdminCmd struct {
	Replicas AdminReplicasCmd `cmd:"" help:"List the replicas of the cluster."`
	Tunnels  AdminTunnelsCmd  `cmd:"" help:"List the tunnels of the cluster."`
	Kick     AdminKickCmd     `cmd:"" help:"Close a host's tunnel (close code 4410), optionally banning it for a while."`
	Drain    AdminDrainCmd    `cmd:"" help:"Drain a replica as SIGTERM does (agents move to other replicas)."`
	Revoke   AdminRevokeCmd   `cmd:"" help:"Revoke tokens by jti or sub until a time: live tunnels and sessions close (4401)."`
}

// adminFlags are the flags every admin subcommand shares.
type adminFlags struct {
	Relay   string        `help:"Relay base URL (http or https); any replica answers for the whole cluster." required:"" env:"SWITCHBOARD_RELAY"`
	Token   string        `help:"Admin token (see 'switchboard token admin')." env:"SWITCHBOARD_TOKEN"`
	RelayCA string        `name:"relay-ca" help:"PEM CA bundle that verifies an https relay's certificate (instead of the system roots)." env:"SWITCHBOARD_RELAY_CA"`
	JSON    bool          `name:"json" help:"Print the relay's JSON answer instead of a table."`
	Timeout time.Duration `help:"Limit on the whole call." default:"30s"`
}

// adminError is the relay's refusal, or a failure to reach it.
type adminError struct {
	status        int
	code, message string
}

func (e *adminError) Error() string {
	return fmt.Sprintf("relay answered %d %s: %s", e.status, e.code, e.message)
}

// call sends one admin request and decodes the JSON answer into out (and returns its bytes).
func (f *adminFlags) call(ctx context.Context, method, path string, query url.Values, body any, out any) ([]byte, error) {
	if f.Token == "" {
		return nil, &exitError{code: 2, err: errors.New("an admin token is required: --token or SWITCHBOARD_TOKEN (mint one with 'switchboard token admin')")}
	}
	base, err := url.Parse(f.Relay)
	if err != nil || (base.Scheme != "http" && base.Scheme != "https") || base.Host == "" {
		return nil, &exitError{code: 2, err: fmt.Errorf("--relay %q: want an http:// or https:// URL", f.Relay)}
	}
	client := &http.Client{Timeout: f.Timeout}
	if f.RelayCA != "" {
		tr, err := relayCATransport(f.RelayCA)
		if err != nil {
			return nil, &exitError{code: 2, err: err}
		}
		client.Transport = tr
	}
	u := base.JoinPath(path)
	u.RawQuery = query.Encode()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, u.String(), rd)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+f.Token)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("relay unreachable at %s: %w", base.Redacted(), errors.Unwrap(err))
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return nil, fmt.Errorf("read the relay's answer: %w", err)
	}
	if resp.StatusCode/100 != 2 {
		var e struct {
			Error struct{ Code, Message string } `json:"error"`
		}
		ae := &adminError{status: resp.StatusCode, code: "?", message: strings.TrimSpace(string(b[:min(len(b), 200)]))}
		if json.Unmarshal(b, &e) == nil && e.Error.Code != "" {
			ae.code, ae.message = e.Error.Code, e.Error.Message
		}
		return nil, ae
	}
	if err := json.Unmarshal(b, out); err != nil {
		return nil, fmt.Errorf("the relay's answer is not the JSON expected (is --relay the relay's public URL?): %w", err)
	}
	return b, nil
}

// print writes raw JSON with --json, else calls table.
func (f *adminFlags) print(g *Globals, raw []byte, table func(w *tabwriter.Writer)) error {
	if f.JSON {
		_, err := g.stdout.Write(raw)
		return err
	}
	w := tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', 0)
	table(w)
	return w.Flush()
}

// AdminReplicasCmd is `switchboard admin replicas`.
type AdminReplicasCmd struct {
	adminFlags `embed:""`
}

// Run lists the replicas.
func (c *AdminReplicasCmd) Run(ctx context.Context, g *Globals) error {
	ctx, cancel := context.WithTimeout(ctx, c.Timeout)
	defer cancel()
	var out struct {
		Replicas []relay.ReplicaView `json:"replicas"`
	}
	raw, err := c.call(ctx, http.MethodGet, "/v1/admin/replicas", nil, nil, &out)
	if err != nil {
		return err
	}
	return c.print(g, raw, func(w *tabwriter.Writer) {
		fmt.Fprintln(w, "REPLICA\tSTATE\tVERSION\tUP\tTUNNELS\tEXCHANGES\tLEASE AGE\tINTERNAL URL")
		for _, r := range out.Replicas {
			if !r.Reachable {
				fmt.Fprintf(w, "%s\tunreachable\t-\t-\t-\t-\t-\t%s (%s)\n", r.ID, r.InternalURL, r.Error)
				continue
			}
			state := "serving"
			if r.Draining {
				state = "draining"
			}
			up, lease := "-", "-"
			if r.Started != nil {
				up = roundAge(time.Since(*r.Started))
			}
			if r.LeaseAgeSeconds != nil {
				lease = roundAge(time.Duration(*r.LeaseAgeSeconds * float64(time.Second)))
			}
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%d\t%d\t%s\t%s\n", r.ID, state, r.Version, up, r.Tunnels, r.Exchanges,
				lease, orDash(r.InternalURL))
		}
	})
}

// AdminTunnelsCmd is `switchboard admin tunnels`.
type AdminTunnelsCmd struct {
	adminFlags `embed:""`
	Prefix     string   `help:"Only host ids starting with this."`
	Label      []string `help:"Only hosts with this label, KEY=VALUE (repeatable)."`
	Replica    string   `help:"Only tunnels on this replica."`
	Limit      int      `help:"Tunnels per page (1-1000)." default:"100"`
	Cursor     string   `help:"Continue after the page that returned this next_cursor."`
}

// Run lists one page of tunnels.
func (c *AdminTunnelsCmd) Run(ctx context.Context, g *Globals) error {
	ctx, cancel := context.WithTimeout(ctx, c.Timeout)
	defer cancel()
	q := url.Values{"limit": {strconv.Itoa(c.Limit)}}
	for k, v := range map[string]string{"prefix": c.Prefix, "replica": c.Replica, "cursor": c.Cursor} {
		if v != "" {
			q.Set(k, v)
		}
	}
	for _, l := range c.Label {
		q.Add("label", l)
	}
	var out struct {
		Tunnels     []relay.TunnelView  `json:"tunnels"`
		NextCursor  string              `json:"next_cursor"`
		Unreachable []relay.ReplicaView `json:"unreachable"`
	}
	raw, err := c.call(ctx, http.MethodGet, "/v1/admin/tunnels", q, nil, &out)
	if err != nil {
		return err
	}
	err = c.print(g, raw, func(w *tabwriter.Writer) {
		fmt.Fprintln(w, "HOST\tREPLICA\tUP\tREMOTE\tTRANSPORT\tAGENT\tSTREAMS\tIN\tOUT\tRTT")
		for _, t := range out.Tunnels {
			rtt := "-"
			if t.PingRTTSeconds != nil {
				rtt = time.Duration(*t.PingRTTSeconds * float64(time.Second)).Round(10 * time.Microsecond).String()
			}
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\t%s\n", t.HostID, t.Replica,
				roundAge(time.Since(t.ConnectedAt)), orDash(t.RemoteAddr), t.Transport, orDash(t.AgentVersion),
				t.StreamsOpen, byteSize(t.BytesIn), byteSize(t.BytesOut), rtt)
		}
	})
	if err != nil || c.JSON {
		return err
	}
	for _, r := range out.Unreachable {
		fmt.Fprintf(g.stderr, "warning: replica %s did not answer (%s): its tunnels are missing\n", r.ID, r.Error)
	}
	if out.NextCursor != "" {
		fmt.Fprintf(g.stderr, "more: --cursor %s\n", out.NextCursor)
	}
	return nil
}

// AdminKickCmd is `switchboard admin kick`.
type AdminKickCmd struct {
	adminFlags `embed:""`
	Host       string        `arg:"" help:"Host id to kick."`
	Ban        time.Duration `help:"Also refuse the host's registration on every replica for this long (e.g. 10m)."`
}

// Run kicks the host.
func (c *AdminKickCmd) Run(ctx context.Context, g *Globals) error {
	if c.Ban < 0 {
		return &exitError{code: 2, err: errors.New("--ban must not be negative")}
	}
	ctx, cancel := context.WithTimeout(ctx, c.Timeout)
	defer cancel()
	var body any
	if c.Ban > 0 {
		body = map[string]string{"ban": c.Ban.String()}
	}
	var out struct {
		HostID      string              `json:"host_id"`
		Closed      []string            `json:"closed_on"`
		BannedUntil *time.Time          `json:"banned_until"`
		Unreachable []relay.ReplicaView `json:"unreachable"`
	}
	raw, err := c.call(ctx, http.MethodPost, "/v1/admin/hosts/"+url.PathEscape(c.Host)+"/kick", nil, body, &out)
	if err != nil {
		return err
	}
	return c.print(g, raw, func(w *tabwriter.Writer) {
		if len(out.Closed) == 0 {
			fmt.Fprintf(w, "host %s had no tunnel\n", out.HostID)
		} else {
			fmt.Fprintf(w, "host %s kicked from %s\n", out.HostID, strings.Join(out.Closed, ", "))
		}
		if out.BannedUntil != nil {
			fmt.Fprintf(w, "banned until %s\n", out.BannedUntil.Format(time.RFC3339))
		}
		for _, r := range out.Unreachable {
			fmt.Fprintf(w, "warning: replica %s did not answer (%s)\n", r.ID, r.Error)
		}
	})
}

// AdminDrainCmd is `switchboard admin drain`.
type AdminDrainCmd struct {
	adminFlags `embed:""`
	Replica    string `arg:"" help:"Replica id to drain, or 'self' for the replica --relay reaches."`
	Exit       bool   `help:"Let the replica's process exit once drained (else it stays up, serving nothing)."`
}

// Run asks for the drain.
func (c *AdminDrainCmd) Run(ctx context.Context, g *Globals) error {
	ctx, cancel := context.WithTimeout(ctx, c.Timeout)
	defer cancel()
	var out struct {
		Replica string `json:"replica"`
		Started bool   `json:"started"`
		Exit    bool   `json:"exit"`
	}
	raw, err := c.call(ctx, http.MethodPost, "/v1/admin/replicas/"+url.PathEscape(c.Replica)+"/drain",
		url.Values{"exit": {strconv.FormatBool(c.Exit)}}, nil, &out)
	if err != nil {
		return err
	}
	return c.print(g, raw, func(w *tabwriter.Writer) {
		switch {
		case !out.Started:
			fmt.Fprintf(w, "replica %s is draining already\n", out.Replica)
		case out.Exit:
			fmt.Fprintf(w, "replica %s is draining and will exit\n", out.Replica)
		default:
			fmt.Fprintf(w, "replica %s is draining (it stays up)\n", out.Replica)
		}
	})
}

// AdminRevokeCmd is `switchboard admin revoke`.
type AdminRevokeCmd struct {
	adminFlags `embed:""`
	JTI        string        `name:"jti" help:"Revoke the one token with this jti." xor:"what"`
	Sub        string        `help:"Revoke every token with this subject." xor:"what"`
	Until      string        `help:"Until this time (RFC 3339); past it the tokens are accepted again (make it the tokens' expiry)." xor:"when"`
	For        time.Duration `help:"For this long from now." xor:"when"`
}

// Run revokes.
func (c *AdminRevokeCmd) Run(ctx context.Context, g *Globals) error {
	if (c.JTI == "") == (c.Sub == "") {
		return &exitError{code: 2, err: errors.New("give --jti or --sub")}
	}
	if (c.Until == "") == (c.For == 0) {
		return &exitError{code: 2, err: errors.New("give --until or --for")}
	}
	ctx, cancel := context.WithTimeout(ctx, c.Timeout)
	defer cancel()
	body := map[string]string{}
	for k, v := range map[string]string{"jti": c.JTI, "sub": c.Sub, "until": c.Until} {
		if v != "" {
			body[k] = v
		}
	}
	if c.For != 0 {
		body["for"] = c.For.String()
	}
	var out struct {
		Revocation struct {
			JTI   string    `json:"jti"`
			Sub   string    `json:"sub"`
			Until time.Time `json:"until"`
		} `json:"revocation"`
		Closed      int                 `json:"closed"`
		Unreachable []relay.ReplicaView `json:"unreachable"`
	}
	raw, err := c.call(ctx, http.MethodPost, "/v1/admin/revoke", nil, body, &out)
	if err != nil {
		return err
	}
	return c.print(g, raw, func(w *tabwriter.Writer) {
		what := "jti " + out.Revocation.JTI
		if out.Revocation.Sub != "" {
			what = "sub " + out.Revocation.Sub
		}
		fmt.Fprintf(w, "revoked %s until %s; closed %d tunnels and sessions\n", what,
			out.Revocation.Until.Format(time.RFC3339), out.Closed)
		for _, r := range out.Unreachable {
			fmt.Fprintf(w, "warning: replica %s did not answer (%s): it learns of the revocation from the directory within seconds\n", r.ID, r.Error)
		}
	})
}

// roundAge shows a duration as an age: to the second under an hour, to the minute past it.
func roundAge(d time.Duration) string {
	if d < time.Hour {
		return d.Round(time.Second).String()
	}
	return d.Round(time.Minute).String()
}

// byteSize shows a byte count in KiB, MiB or GiB.
func byteSize(n int64) string {
	const k = 1024
	switch {
	case n < k:
		return strconv.FormatInt(n, 10) + " B"
	case n < k*k:
		return strconv.FormatFloat(float64(n)/k, 'f', 1, 64) + " KiB"
	case n < k*k*k:
		return strconv.FormatFloat(float64(n)/(k*k), 'f', 1, 64) + " MiB"
	default:
		return strconv.FormatFloat(float64(n)/(k*k*k), 'f', 1, 64) + " GiB"
	}
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
