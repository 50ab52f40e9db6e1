package webhook

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/switchboard-relay/switchboard/internal/presence"
)

// ErrInvalid reports a bad Config or webhook URL.
var ErrInvalid = errors.New("invalid webhook")

// Defaults for the zero values of Config.
const (
	DefaultLease         = 15 * time.Second
	DefaultTimeout       = 10 * time.Second
	DefaultMinBackoff    = 500 * time.Millisecond
	DefaultMaxBackoff    = time.Minute
	DefaultMaxRejections = 8
	defaultBlock         = 5 * time.Second
	readBatch            = 100
	maxRetryAfter        = 10 * time.Minute // a Retry-After beyond this is capped
)

// Config configures a Sender. Only Log, URLs and Secret are required.
type Config struct {
	// Log is the presence log the sender delivers. Required.
	Log presence.Log

	// URLs are the receivers; each gets every event, in log order, with its own cursor. Each must be an absolute
	// http or https URL (see ValidateURL); duplicates are refused. Required.
	URLs []string

	// Secret keys the HMAC in the Switchboard-Signature header. Required.
	Secret []byte

	// Store keeps the cursors and the sender lease. If nil, a Memory store: progress is lost on restart.
	Store Store

	// Holder names this sender in the lease; it must differ between senders sharing a Store. If empty, a random
	// name.
	Holder string

	// Lease is how long the lease outlives its holder: a replica that dies without resigning is replaced after at
	// most Lease plus Lease/3 (the standby's polling period). It is renewed every Lease/3. If zero, DefaultLease.
	Lease time.Duration

	// Timeout bounds one HTTP attempt, from dialling to the end of the response body. If zero, DefaultTimeout.
	Timeout time.Duration

	// MinBackoff and MaxBackoff bound the wait between attempts of one event: it doubles from MinBackoff up to
	// MaxBackoff, with jitter over its upper half. If zero, DefaultMinBackoff and DefaultMaxBackoff.
	MinBackoff, MaxBackoff time.Duration

	// MaxRejections is how many attempts of one event may be rejected (a 3xx, or a 4xx other than 408 and 429)
	// before the event is dropped for that URL, with an error log and switchboard_webhook_deliveries_total
	// {outcome="dropped"}. Network errors, timeouts, 5xx, 408 and 429 never drop an event. If zero,
	// DefaultMaxRejections.
	MaxRejections int

	// Block is how long one read of the log waits for new events. If zero, 5 s.
	Block time.Duration

	// Client sends the requests; the sender uses a copy whose CheckRedirect never follows a redirect. If nil, a
	// client with a clone of http.DefaultTransport (so proxies from the environment apply).
	Client *http.Client

	// Registerer receives the sender's metrics. If nil, they are not exported.
	Registerer prometheus.Registerer

	// Logger receives the sender's logs. If nil, logs are discarded.
	Logger *slog.Logger
}

// Sender delivers the presence log to webhook URLs: at least once, in log order per URL, signed, with retries.
// With a shared Redis Store, any number of replicas may run a Sender; the one holding the lease delivers, the
// others stand by and take over from the stored cursors when it goes.
type Sender struct {
	// Immutable after New.
	cfg    Config
	log    *slog.Logger
	client *http.Client
	m      *metrics
	stop   context.Context // done once Close was called
	cancel context.CancelFunc

	running sync.WaitGroup // Run calls in progress; Close waits for them

	// Guarded by mu.
	mu      sync.Mutex
	closed  bool
	pending map[string]time.Time // URL → At of the event being delivered there
}

// New validates cfg and applies its defaults. It starts nothing: call Run.
func New(cfg Config) (*Sender, error) {
	if cfg.Log == nil {
		return nil, fmt.Errorf("%w: no presence log", ErrInvalid)
	}
	if len(cfg.URLs) == 0 {
		return nil, fmt.Errorf("%w: no webhook URL", ErrInvalid)
	}
	seen := make(map[string]bool, len(cfg.URLs))
	for _, u := range cfg.URLs {
		if err := ValidateURL(u); err != nil {
			return nil, err
		}
		if seen[u] {
			return nil, fmt.Errorf("%w: URL %q given twice", ErrInvalid, redactURL(u))
		}
		seen[u] = true
	}
	if len(cfg.Secret) == 0 {
		return nil, fmt.Errorf("%w: empty webhook secret", ErrInvalid)
	}
	if cfg.Lease < 0 || cfg.Timeout < 0 || cfg.MinBackoff < 0 || cfg.MaxBackoff < 0 || cfg.MaxRejections < 0 || cfg.Block < 0 {
		return nil, fmt.Errorf("%w: negative duration or count", ErrInvalid)
	}
	cfg.URLs = append([]string(nil), cfg.URLs...)
	cfg.Secret = append([]byte(nil), cfg.Secret...)
	if cfg.Store == nil {
		cfg.Store = NewMemory()
	}
	if cfg.Holder == "" {
		var b [8]byte
		_, _ = rand.Read(b[:])
		cfg.Holder = hex.EncodeToString(b[:])
	}
	cfg.Lease = orDefault(cfg.Lease, DefaultLease)
	cfg.Timeout = orDefault(cfg.Timeout, DefaultTimeout)
	cfg.MinBackoff = orDefault(cfg.MinBackoff, DefaultMinBackoff)
	cfg.MaxBackoff = max(orDefault(cfg.MaxBackoff, DefaultMaxBackoff), cfg.MinBackoff)
	cfg.Block = orDefault(cfg.Block, defaultBlock)
	if cfg.MaxRejections == 0 {
		cfg.MaxRejections = DefaultMaxRejections
	}
	client := &http.Client{Transport: http.DefaultTransport.(*http.Transport).Clone()}
	if cfg.Client != nil {
		c := *cfg.Client
		client = &c
	}
	// Never follow a redirect: the receiver is what the operator configured, and a signed event must not be
	// handed to whatever host a 3xx names. The 3xx itself is returned and counted as a rejection.
	client.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	reg := cfg.Registerer
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	s := &Sender{cfg: cfg, log: log, client: client, pending: make(map[string]time.Time)}
	s.stop, s.cancel = context.WithCancel(context.Background())
	s.m = newMetrics(reg, s.lag)
	return s, nil
}

func orDefault(d, def time.Duration) time.Duration {
	if d == 0 {
		return def
	}
	return d
}

// ValidateURL checks that s is an absolute http or https URL with a host and no fragment.
func ValidateURL(s string) error {
	u, err := url.Parse(s)
	if err != nil {
		return fmt.Errorf("%w: URL: %w", ErrInvalid, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return fmt.Errorf("%w: URL %q is not an absolute http:// or https:// URL", ErrInvalid, redactURL(s))
	}
	if u.Host == "" || u.Hostname() == "" {
		return fmt.Errorf("%w: URL %q has no host", ErrInvalid, redactURL(s))
	}
	if u.Fragment != "" || u.RawFragment != "" {
		return fmt.Errorf("%w: URL %q has a #fragment", ErrInvalid, redactURL(s))
	}
	return nil
}

// redactURL is s for logs and errors: scheme, host and path, without credentials or query (either may carry a
// secret).
func redactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return "(unparsable URL)"
	}
	r := url.URL{Scheme: u.Scheme, Host: u.Host, Path: u.Path}
	if u.RawQuery != "" {
		r.RawQuery = "REDACTED"
	}
	return r.String()
}

// Run delivers while this sender holds the lease and stands by while another does, until ctx ends or Close is
// called; it then resigns the lease (so a standby takes over at once) and returns nil. Failures are logged and
// retried, never returned. Call it once per Sender.
func (s *Sender) Run(ctx context.Context) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.running.Add(1)
	s.mu.Unlock()
	defer s.running.Done()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer context.AfterFunc(s.stop, cancel)()
	defer s.resign()

	log := s.log.With("holder", s.cfg.Holder)
	poll := s.cfg.Lease / 3
	for {
		ok, err := s.leadOnce(ctx)
		if ctx.Err() != nil {
			return nil
		}
		switch {
		case err != nil:
			log.Warn("webhook lease check failed; standing by", "err", err)
		case ok:
			s.lead(ctx, log)
			if ctx.Err() != nil {
				return nil
			}
		}
		if !sleep(ctx, poll) {
			return nil
		}
	}
}

// Close stops Run and waits for it to return. It is idempotent.
func (s *Sender) Close() error {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	s.cancel()
	s.running.Wait()
	s.client.CloseIdleConnections()
	return nil
}

func (s *Sender) leadOnce(ctx context.Context) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, s.storeTimeout())
	defer cancel()
	return s.cfg.Store.Lead(ctx, s.cfg.Holder, s.cfg.Lease)
}

func (s *Sender) resign() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := s.cfg.Store.Resign(ctx, s.cfg.Holder); err != nil {
		s.log.Warn("webhook lease not resigned; a standby takes over when it expires", "err", err)
	}
}

// lead runs one delivery loop per URL while the lease holds. It renews the lease every Lease/3 and steps down when
// the store says another holder has it, when a cursor write is refused, or when renewals have failed for 2/3 of the
// lease (the lease may be about to expire in the store, and a standby to take over). Stepping down cancels the
// loops and waits for them.
func (s *Sender) lead(ctx context.Context, log *slog.Logger) {
	s.m.leader.Set(1)
	log.Info("webhook sender leading", "urls", len(s.cfg.URLs))
	lctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	lost := make(chan struct{}, 1)
	for _, u := range s.cfg.URLs {
		wg.Go(func() {
			if err := s.deliverLoop(lctx, u); errors.Is(err, ErrNotLeader) {
				select {
				case lost <- struct{}{}:
				default:
				}
			}
		})
	}
	defer func() {
		cancel()
		wg.Wait()
		s.mu.Lock()
		clear(s.pending)
		s.mu.Unlock()
		s.m.leader.Set(0)
	}()

	renewed := time.Now()
	t := time.NewTicker(max(s.cfg.Lease/3, time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-lost:
			log.Warn("webhook lease lost (cursor write refused); standing by")
			return
		case <-t.C:
		}
		ok, err := s.leadOnce(ctx)
		switch {
		case ctx.Err() != nil:
			return
		case err == nil && ok:
			renewed = time.Now()
		case err == nil:
			log.Warn("webhook lease taken by another sender; standing by")
			return
		case time.Since(renewed) >= s.cfg.Lease*2/3:
			log.Warn("webhook lease not renewed in time; standing by", "err", err)
			return
		default:
			log.Warn("webhook lease renewal failed; retrying", "err", err)
		}
	}
}

// lag is the age of the oldest event being delivered, for switchboard_webhook_lag_seconds.
func (s *Sender) lag() float64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	var oldest time.Time
	for _, at := range s.pending {
		if oldest.IsZero() || at.Before(oldest) {
			oldest = at
		}
	}
	if oldest.IsZero() {
		return 0
	}
	return max(time.Since(oldest).Seconds(), 0)
}

func (s *Sender) setPending(u string, at time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if at.IsZero() {
		at = time.Now()
	}
	s.pending[u] = at
}

func (s *Sender) clearPending(u string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.pending, u)
}

// sleep waits d or until ctx ends; it reports whether the full wait elapsed.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
