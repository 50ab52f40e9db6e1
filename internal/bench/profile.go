package bench

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// profile starts fetching a CPU profile of relay r for the coming phase when Config.Profile asks for it. The
// returned function ends the profile (the relay answers when its profiling window closes) and waits for the file.
// Failures become progress lines, never scenario errors: profiles are a diagnosis aid.
func (e *env) profile(ctx context.Context, r *relayProc, phase string) (stop func()) {
	if !e.cfg.Profile || e.cfg.Out == "" || r.Metrics == "" {
		return func() {}
	}
	name := "relay-" + strings.TrimPrefix(r.name(), "relay-") + "-" + phase + ".pprof"
	secs := max(1, int(e.cfg.Duration/time.Second))
	done := make(chan error, 1)
	go func() { done <- fetchProfile(ctx, r.Metrics, secs, filepath.Join(e.cfg.Out, name)) }()
	return func() {
		if err := <-done; err != nil {
			e.progressf("profile %s: %v", name, err)
		} else {
			e.progressf("profile: %s", filepath.Join(e.cfg.Out, name))
		}
	}
}

// fetchProfile saves /debug/pprof/profile?seconds=secs from the metrics listener at base into path.
func fetchProfile(ctx context.Context, base string, secs int, path string) error {
	ctx, cancel := context.WithTimeout(ctx, time.Duration(secs+30)*time.Second)
	defer cancel()
	return fetchTo(ctx, fmt.Sprintf("%s/debug/pprof/profile?seconds=%d", base, secs), path)
}

// heapProfile saves the relay's heap profile as relay-SCENARIO-heap-WHEN.pprof when Config.Profile asks for it.
func (e *env) heapProfile(ctx context.Context, r *relayProc, when string) {
	if !e.cfg.Profile || e.cfg.Out == "" || r.Metrics == "" {
		return
	}
	name := "relay-" + strings.TrimPrefix(r.name(), "relay-") + "-heap-" + when + ".pprof"
	path := filepath.Join(e.cfg.Out, name)
	if err := fetchTo(ctx, r.Metrics+"/debug/pprof/heap", path); err != nil {
		e.progressf("profile %s: %v", name, err)
	}
}

// fetchTo saves the body of GET url into path.
func fetchTo(ctx context.Context, url, path string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("fetch: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("fetch: status %d (does the relay serve pprof?)", resp.StatusCode)
	}
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("save: %w", err)
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return fmt.Errorf("save: %w", err)
	}
	return f.Close()
}
