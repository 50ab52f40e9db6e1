package peering

import (
	"context"
	"io"
	"net/http"
	"net/url"
)

// Client sends this replica's own requests to peers (eviction notices, questions), signed. The zero value is not
// usable: both fields are required.
type Client struct {
	Signer    *Signer
	Transport http.RoundTripper // the HTTP client of peers' internal listeners
}

// call sends a signed request without a body to path under base and returns the answer's status. The answer's body
// is read (up to 4 KiB, so that the connection can be reused) and dropped.
func (c Client) call(ctx context.Context, method string, base *url.URL, path string, q url.Values) (int, error) {
	u := *base
	u.Path = path
	u.RawQuery = q.Encode()
	req, err := http.NewRequestWithContext(ctx, method, u.String(), nil)
	if err != nil {
		return 0, err
	}
	c.Signer.Sign(req, "")
	resp, err := c.Transport.RoundTrip(req)
	if err != nil {
		return 0, err
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4<<10))
	_ = resp.Body.Close()
	return resp.StatusCode, nil
}

// HasPath is the internal endpoint that answers whether a host's tunnel is here: GET /internal/v1/has?host=ID →
// 204 if it is, 404 if not.
const HasPath = "/internal/v1/has"

// Has asks the replica at base whether it holds hostID's tunnel; a failed question reads as no.
func (c Client) Has(ctx context.Context, base *url.URL, hostID string) bool {
	status, err := c.call(ctx, http.MethodGet, base, HasPath, url.Values{"host": {hostID}})
	return err == nil && status == http.StatusNoContent
}
