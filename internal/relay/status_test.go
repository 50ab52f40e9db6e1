package relay_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/switchboard-relay/switchboard/internal/auth"
	"github.com/switchboard-relay/switchboard/internal/directory"
	"github.com/switchboard-relay/switchboard/internal/presence"
	"github.com/switchboard-relay/switchboard/internal/relay"
	"github.com/switchboard-relay/switchboard/internal/relaytest"
)

// adminToken mints an admin token for sub.
func adminToken(t *testing.T, sub string) string {
	t.Helper()
	tok, err := auth.MintAdmin([]byte(relaytest.Secret), sub, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// statusCluster is two replicas sharing a directory and a presence log, hosts on both, and some exchanges that
// went well and some that did not.
type statusCluster struct {
	a, b  *relaytest.Replica
	admin string
}

func startStatusCluster(t *testing.T) statusCluster {
	dir := directory.NewMemory()
	t.Cleanup(func() { _ = dir.Close() })
	log := presence.NewMemory(presence.MemoryConfig{})
	mut := func(c *relay.Config) { c.Events = log }
	a := relaytest.StartRelayOn(t, dir, mut)
	b := relaytest.StartRelayOn(t, dir, mut)
	ok := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "ok") })
	relaytest.StartHost(t, a.URL, "st-1", ok, nil)
	relaytest.StartHost(t, a.URL, "st-2", ok, nil)
	relaytest.StartHost(t, b.URL, "st-3", ok, nil)
	client := relaytest.ClientToken(t, "u", "st-*")
	for i, want := range []struct {
		via    *relaytest.Replica
		host   string
		status int
	}{
		{b, "st-1", 200}, {b, "st-1", 200}, {a, "st-2", 200}, {a, "st-3", 200}, // forwarded, local, forwarded
		{a, "st-gone", 503}, {b, "st-gone", 503}, {a, "st-gone", 503}, // host_offline
		{a, "other", 403}, // forbidden: the token does not reach it
	} {
		resp := relaytest.Do(t, "GET", want.via.URL+"/hosts/"+want.host+"/", client)
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != want.status {
			t.Fatalf("exchange %d (%s via %s): %d, want %d", i, want.host, want.via.ID, resp.StatusCode, want.status)
		}
	}
	return statusCluster{a: a, b: b, admin: adminToken(t, "ops")}
}

// adminReplicas reads GET /v1/admin/replicas.
func adminReplicas(t *testing.T, base, token string) []relay.ReplicaView {
	t.Helper()
	resp := relaytest.Do(t, "GET", base+"/v1/admin/replicas", token)
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("GET /v1/admin/replicas: %d %s", resp.StatusCode, b)
	}
	var got struct {
		Replicas []relay.ReplicaView `json:"replicas"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&got); err != nil {
		t.Fatal(err)
	}
	return got.Replicas
}

// TestStatusAccess: the status page and its stream take an admin token (Authorization, or the cookie a
// navigation with ?access_token= trades it for), and nothing else; the cookie is scoped to /status.
func TestStatusAccess(t *testing.T) {
	r := relaytest.StartRelay(t, nil)
	admin := adminToken(t, "ops")
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	get := func(path, bearer, cookie string) *http.Response {
		t.Helper()
		base := r.MetricsURL // the status page is served on the metrics listener only
		if strings.HasPrefix(path, "/v1/") || strings.HasPrefix(path, "/hosts/") {
			base = r.URL
		}
		req, _ := http.NewRequest("GET", base+path, nil)
		if bearer != "" {
			req.Header.Set("Authorization", "Bearer "+bearer)
		}
		if cookie != "" {
			req.AddCookie(&http.Cookie{Name: "switchboard_admin", Value: cookie})
		}
		resp, err := noRedirect.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { resp.Body.Close() })
		return resp
	}
	client := relaytest.ClientToken(t, "u", "*")
	host := relaytest.HostToken(t, "h")
	for _, c := range []struct {
		name, path, bearer, cookie string
		status                     int
	}{
		{"no token", "/status", "", "", 401},
		{"no token, stream", "/status/events", "", "", 401},
		{"client token", "/status", client, "", 403},
		{"host token", "/status", host, "", 403},
		{"client token as cookie", "/status", "", client, 401},
		{"admin token as cookie", "/status", "", admin, 401}, // the cookie holds a session the relay sealed, never a token
		{"client token in query", "/status?access_token=" + client, "", "", 403},
		{"client token, stream", "/status/events", client, "", 403},
		{"garbage cookie", "/status", "", "x.y.z", 401},
		{"admin token", "/status", admin, "", 200},
	} {
		if resp := get(c.path, c.bearer, c.cookie); resp.StatusCode != c.status {
			t.Errorf("%s: GET %s: %d, want %d", c.name, c.path, resp.StatusCode, c.status)
		}
	}

	// Never on the public listener, whose origin serves hosts' pages in path mode.
	for _, path := range []string{"/status", "/status/events", "/status/assets/status.js"} {
		pub, _ := http.NewRequest("GET", r.URL+path, nil)
		pub.Header.Set("Authorization", "Bearer "+admin)
		resp, err := http.DefaultClient.Do(pub)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusNotFound {
			t.Errorf("public listener GET %s: %d, want 404", path, resp.StatusCode)
		}
	}

	resp := get("/status?access_token="+admin, "", "")
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/status" {
		t.Fatalf("navigation with an admin token: %d Location %q, want 303 to /status", resp.StatusCode, resp.Header.Get("Location"))
	}
	var cookie *http.Cookie
	for _, c := range resp.Cookies() {
		if c.Name == "switchboard_admin" {
			cookie = c
		}
	}
	if cookie == nil || cookie.Value == "" || cookie.Path != "/status" || !cookie.HttpOnly || cookie.SameSite != http.SameSiteStrictMode || cookie.MaxAge <= 0 || cookie.MaxAge > 12*3600 {
		t.Fatalf("session cookie = %+v, want a session, Path=/status, HttpOnly, SameSite=Strict, expiring within 12 h", cookie)
	}
	// What the cookie holds is no token: no part of the admin token, nor the token itself, shows in it.
	for _, part := range strings.Split(admin, ".") {
		if strings.Contains(cookie.Value, part) {
			t.Fatalf("session cookie %q holds a part of the admin token", cookie.Value)
		}
	}
	tampered := []byte(cookie.Value)
	tampered[len(tampered)/2] ^= 1
	if resp := get("/status", "", string(tampered)); resp.StatusCode != 401 {
		t.Errorf("GET /status with a tampered session: %d, want 401", resp.StatusCode)
	}
	if got := resp.Header.Get("Referrer-Policy"); got != "no-referrer" {
		t.Errorf("Referrer-Policy = %q", got)
	}
	page := get("/status", "", cookie.Value)
	body, _ := io.ReadAll(page.Body)
	if page.StatusCode != 200 || !strings.Contains(string(body), `id="hosts-online"`) {
		t.Fatalf("GET /status with the cookie: %d %.200s", page.StatusCode, body)
	}
	if csp := page.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'none'") || !strings.Contains(csp, "frame-ancestors 'none'") {
		t.Errorf("Content-Security-Policy = %q", csp)
	}
	// The cookie is the status page's only: the admin API takes Authorization alone.
	if resp := get("/v1/admin/replicas", "", cookie.Value); resp.StatusCode != 401 {
		t.Errorf("admin API with the status cookie: %d, want 401", resp.StatusCode)
	}
	for _, asset := range []string{"/status/assets/status.js", "/status/assets/status.css"} {
		if resp := get(asset, "", ""); resp.StatusCode != 200 {
			t.Errorf("GET %s: %d", asset, resp.StatusCode)
		}
	}
	if resp := get("/status/assets/status.html", "", ""); resp.StatusCode != 404 {
		t.Errorf("GET the page template as an asset: %d, want 404", resp.StatusCode)
	}
}

// TestStatusStreamEndsWithToken: a stream whose token is revoked ends, and so does a status session of that token.
func TestStatusStreamEndsWithToken(t *testing.T) {
	r := relaytest.StartRelay(t, nil)
	admin := adminToken(t, "ops")
	other := adminToken(t, "ops2")
	resp := relaytest.Do(t, "GET", r.MetricsURL+"/status/events", admin)
	defer resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("GET /status/events: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	buf := make([]byte, 64<<10)
	n, err := resp.Body.Read(buf)
	if err != nil || !strings.Contains(string(buf[:n]), "event: snapshot") {
		t.Fatalf("first read: %q %v", buf[:n], err)
	}
	// A status session started with the token ends with it too.
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	withCookie := func(session string) int {
		t.Helper()
		req, _ := http.NewRequest("GET", r.MetricsURL+"/status", nil)
		req.AddCookie(&http.Cookie{Name: "switchboard_admin", Value: session})
		resp, err := noRedirect.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	start, err := noRedirect.Get(r.MetricsURL + "/status?access_token=" + admin)
	if err != nil {
		t.Fatal(err)
	}
	start.Body.Close()
	var session string
	for _, c := range start.Cookies() {
		if c.Name == "switchboard_admin" {
			session = c.Value
		}
	}
	if got := withCookie(session); got != 200 {
		t.Fatalf("GET /status with the session: %d, want 200", got)
	}
	req, _ := http.NewRequest("POST", r.URL+"/v1/admin/revoke", strings.NewReader(`{"sub":"ops","for":"1h"}`))
	req.Header.Set("Authorization", "Bearer "+other)
	req.Header.Set("Content-Type", "application/json")
	rv, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	rv.Body.Close()
	if rv.StatusCode != 200 {
		t.Fatalf("revoke: %d", rv.StatusCode)
	}
	if _, err := io.Copy(io.Discard, resp.Body); err != nil {
		t.Logf("stream ended with %v", err)
	}
	if got := withCookie(session); got != 401 {
		t.Errorf("GET /status with the session of a revoked subject: %d, want 401", got)
	}
}

// TestBrowserStatusPage: the status page in real Chromium shows the numbers the admin API gives, and updates
// itself live when a host comes online.
func TestBrowserStatusPage(t *testing.T) {
	startBrowser(t)
	c := startStatusCluster(t)
	tab := newTab(t)
	navigate(t, tab, c.b.MetricsURL+"/status?access_token="+c.admin)
	if loc := location(t, tab); strings.Contains(loc.RawQuery, "access_token") || loc.Path != "/status" {
		t.Fatalf("page address %s: want /status without the token", loc)
	}
	text := func(sel string) string { return strings.TrimSpace(textOf(t, tab, sel)) }
	eval := func(expr string, out any) {
		t.Helper()
		ctx, cancel := context.WithTimeout(tab, browserWait)
		defer cancel()
		v, err := chromedp.Run(ctx, chromedp.Evaluate[json.RawMessage](expr))
		if err != nil {
			t.Fatalf("evaluate %s: %v", expr, err)
		}
		if err := json.Unmarshal(v, out); err != nil {
			t.Fatalf("evaluate %s: %v", expr, err)
		}
	}
	waitText := func(sel, want string) {
		t.Helper()
		ctx, cancel := context.WithTimeout(tab, browserWait)
		defer cancel()
		if _, err := chromedp.Run(ctx, chromedp.Poll[bool](fmt.Sprintf(
			`(document.querySelector(%q)?.textContent.trim() === %q) || null`, sel, want),
			chromedp.WithPollingTimeout(browserWait))); err != nil {
			t.Fatalf("%s never read %q (it reads %q): %v", sel, want, text(sel), err)
		}
	}
	waitText("#live", "live") // the stream has rendered at least one snapshot

	// The page and the API agree.
	api := adminReplicas(t, c.a.URL, c.admin)
	tunnels, total := 0, int64(0)
	for _, r := range api {
		tunnels += r.Tunnels
		total += r.ExchangesTotal
	}
	if tunnels != 3 {
		t.Fatalf("API: %d tunnels, want 3", tunnels)
	}
	waitText("#hosts-online", strconv.Itoa(tunnels))
	waitText("#replica-count", strconv.Itoa(len(api)))
	waitText("#exchanges-total", strconv.FormatInt(total, 10))
	for _, r := range api {
		var cells []string
		eval(fmt.Sprintf(`Array.from(document.querySelectorAll('#replicas tr[data-replica=%q] td')).map(td => td.textContent.trim())`, r.ID), &cells)
		if len(cells) != 8 || cells[0] != r.ID || cells[1] != "serving" || cells[4] != strconv.Itoa(r.Tunnels) || cells[6] != strconv.FormatInt(r.ExchangesTotal, 10) {
			t.Errorf("replica row %s = %q, API says tunnels %d exchanges %d", r.ID, cells, r.Tunnels, r.ExchangesTotal)
		}
	}
	wantErrors := map[string]int64{}
	for _, r := range api {
		for code, n := range r.Errors {
			wantErrors[code] += n
		}
	}
	if wantErrors["host_offline"] != 3 || wantErrors["forbidden"] != 1 {
		t.Fatalf("API errors %v, want host_offline 3 and forbidden 1", wantErrors)
	}
	var rows [][]string
	eval(`Array.from(document.querySelectorAll('#errors tbody tr[data-code]')).map(tr => Array.from(tr.cells).map(td => td.textContent.trim()))`, &rows)
	gotErrors := map[string]int64{}
	for _, row := range rows {
		n, _ := strconv.ParseInt(row[1], 10, 64)
		gotErrors[row[0]] = n
	}
	if fmt.Sprint(gotErrors) != fmt.Sprint(wantErrors) {
		t.Errorf("errors on the page %v, API %v", gotErrors, wantErrors)
	}
	var events []string
	eval(`Array.from(document.querySelectorAll('#events tbody tr')).map(tr => tr.cells[1].textContent + " " + tr.cells[2].textContent)`, &events)
	for _, want := range []string{"online st-1", "online st-2", "online st-3"} {
		if !slices.Contains(events, want) {
			t.Errorf("events on the page %q lack %q", events, want)
		}
	}

	// Live: a host coming online shows without a reload.
	relaytest.StartHost(t, c.a.URL, "st-4", http.NotFoundHandler(), nil)
	waitText("#hosts-online", "4")
	waitText("#events tbody tr:first-child td:nth-child(3)", "st-4")
	// Exchanges made while the page watches show as a rate above zero in a later snapshot.
	client := relaytest.ClientToken(t, "u", "st-*")
	for range 20 {
		resp := relaytest.Do(t, "GET", c.a.URL+"/hosts/st-1/", client)
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	ctx, cancel := context.WithTimeout(tab, browserWait)
	defer cancel()
	if _, err := chromedp.Run(ctx, chromedp.Poll[bool](`parseFloat(document.getElementById("rate").textContent) > 0 || null`,
		chromedp.WithPollingTimeout(browserWait))); err != nil {
		t.Fatalf("exchanges/s never rose above 0 (it reads %q): %v", text("#rate"), err)
	}
	screenshot(t, tab, "status")
}

// TestStatusPageSelfContained: the page loads nothing from elsewhere and runs no inline script (its CSP would
// refuse one): its script and style are the relay's own assets.
func TestStatusPageSelfContained(t *testing.T) {
	r := relaytest.StartRelay(t, nil)
	resp := relaytest.Do(t, "GET", r.MetricsURL+"/status", adminToken(t, "ops"))
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || !strings.Contains(resp.Header.Get("Content-Type"), "text/html") {
		t.Fatalf("GET /status: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	if strings.Contains(string(body), "<script>") || !strings.Contains(string(body), `src="/status/assets/status.js"`) {
		t.Fatalf("the page must carry no inline script, only its own asset:\n%s", body)
	}
	if strings.Contains(string(body), "http://") || strings.Contains(string(body), "https://") {
		t.Fatalf("the page refers to another origin:\n%s", body)
	}
}

// TestStatusStreamsBounded: one replica serves at most 16 status streams at once (each asks every peer for its
// figures every second); the next is refused with 429 rate_limited, and a place freed by a leaving page is taken
// again.
func TestStatusStreamsBounded(t *testing.T) {
	r := relaytest.StartRelay(t, nil)
	admin := adminToken(t, "ops")
	open := func() (*http.Response, context.CancelFunc) {
		ctx, cancel := context.WithCancel(t.Context())
		req, err := http.NewRequestWithContext(ctx, "GET", r.MetricsURL+"/status/events", nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+admin)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		return resp, cancel
	}
	var cancels []context.CancelFunc
	t.Cleanup(func() {
		for _, c := range cancels {
			c()
		}
	})
	for i := range 16 {
		resp, cancel := open()
		cancels = append(cancels, cancel)
		if resp.StatusCode != 200 {
			t.Fatalf("stream %d: %d", i+1, resp.StatusCode)
		}
	}
	resp, cancel := open()
	cancels = append(cancels, cancel)
	if resp.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("stream 17: %d, want 429", resp.StatusCode)
	}
	if b, _ := io.ReadAll(resp.Body); !strings.Contains(string(b), `"rate_limited"`) {
		t.Fatalf("stream 17: %d %s, want 429 rate_limited", resp.StatusCode, b)
	}
	cancels[0]() // a page leaves: its place is free once the relay notices
	waitUntil(t, "a freed place to be taken", func() bool {
		resp, cancel := open()
		if resp.StatusCode == 200 {
			cancels = append(cancels, cancel)
			return true
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		cancel()
		if resp.StatusCode != http.StatusTooManyRequests {
			t.Fatalf("after a page left: %d", resp.StatusCode)
		}
		return false
	})
}
