package cli

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/switchboard-relay/switchboard/internal/presence"
	"github.com/switchboard-relay/switchboard/internal/webhook"
)

// validateWebhooks checks the --webhook-* flags before anything starts.
func (c *ServeCmd) validateWebhooks() error {
	seen := map[string]bool{}
	for _, u := range c.WebhookURL {
		if err := webhook.ValidateURL(u); err != nil {
			return fmt.Errorf("--webhook-url: %w", err)
		}
		if seen[u] {
			return errors.New("--webhook-url: the same URL is given twice")
		}
		seen[u] = true
	}
	if len(c.WebhookURL) > 0 && c.WebhookSecret == "" {
		return errors.New("--webhook-url needs --webhook-secret (or SWITCHBOARD_WEBHOOK_SECRET): receivers check the Switchboard-Signature header with it")
	}
	return nil
}

// openWebhooks builds the webhook sender for the relay's presence log, or returns nil if no --webhook-url is set.
// With a Redis directory the cursors and the sender lease live in that Redis, so delivery resumes across restarts
// and exactly one replica delivers; otherwise in memory, like the log.
func (c *ServeCmd) openWebhooks(events presence.Log, cl *cluster, replica string, reg prometheus.Registerer, log *slog.Logger) (*webhook.Sender, error) {
	if len(c.WebhookURL) == 0 {
		webhook.RegisterUnused(reg)
		return nil, nil
	}
	var b [6]byte
	_, _ = rand.Read(b[:])
	cfg := webhook.Config{
		Log:    events,
		URLs:   c.WebhookURL,
		Secret: []byte(c.WebhookSecret),
		// The replica id names the holder in the lease for operators; the random part tells a restarted
		// process from its predecessor, whose lease must expire (or be resigned) first.
		Holder:     replica + "/" + hex.EncodeToString(b[:]),
		Timeout:    c.WebhookTimeout,
		Registerer: reg,
		Logger:     log.With("component", "webhook"),
	}
	if cl.redis != nil {
		store, err := webhook.NewRedis(cl.redis.Client(), cl.redis.Prefix())
		if err != nil {
			return nil, fmt.Errorf("webhooks: %w", err)
		}
		cfg.Store = store
	}
	s, err := webhook.New(cfg)
	if err != nil {
		return nil, fmt.Errorf("webhooks: %w", err)
	}
	return s, nil
}
