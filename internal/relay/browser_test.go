package relay_test

// The browser suite: real headless Chromium (Debian's chromium package) against a real relay, real agents (the
// reverse proxy of `switchboard host`) and a small web app, in host mode and path mode. One Chromium serves every
// test of the package (startBrowser); each test gets its own browser context, so cookies never cross tests.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"html"
	"image"
	"image/png"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/coder/websocket"

	"github.com/switchboard-relay/switchboard/agent"
	"github.com/switchboard-relay/switchboard/internal/relay"
	"github.com/switchboard-relay/switchboard/internal/relaytest"
)

// browserWait bounds every wait on the page: generous, since the machine may be busy.
const browserWait = 60 * time.Second

var browser struct {
	once   sync.Once
	ctx    context.Context // the browser's context; tests derive tabs in new browser contexts from it
	cancel func()
	err    error
	skip   string
}

// chromiumPath finds the Chromium binary.
func chromiumPath() string {
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	return ""
}

// startBrowser starts the package's Chromium once. Without one, the test is skipped with one line naming the
// package to install, except under CI, where it fails.
func startBrowser(t *testing.T) context.Context {
	t.Helper()
	browser.once.Do(func() {
		path := chromiumPath()
		if path == "" {
			browser.skip = "browser tests need Chromium: apt-get install chromium"
			return
		}
		opts := append(chromedp.DefaultExecAllocatorOptions[:],
			chromedp.ExecPath(path), chromedp.NoSandbox, chromedp.Headless, chromedp.WindowSize(1000, 900),
			chromedp.Flag("no-proxy-server", true), chromedp.Flag("disable-gpu", true),
			chromedp.Flag("disable-dev-shm-usage", true))
		alloc, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
		ctx, cancelCtx := chromedp.NewContext(alloc)
		if err := chromedp.Do(ctx); err != nil { // starts the browser
			cancelCtx()
			cancelAlloc()
			browser.err = fmt.Errorf("start %s: %w", path, err)
			return
		}
		browser.ctx = ctx
		browser.cancel = func() { cancelCtx(); cancelAlloc() }
	})
	if browser.skip != "" {
		if os.Getenv("CI") != "" {
			t.Fatalf("%s (required under CI)", browser.skip)
		}
		t.Skip(browser.skip)
	}
	if browser.err != nil {
		t.Fatal(browser.err)
	}
	return browser.ctx
}

// stopBrowser ends the package's Chromium, if it started (TestMain, before the leak check).
func stopBrowser() {
	if browser.cancel != nil {
		browser.cancel()
	}
}

// newTab opens a tab in a fresh browser context (its own cookies), closed with the test.
func newTab(t *testing.T) context.Context {
	ctx, cancel := chromedp.NewContext(startBrowser(t), chromedp.WithNewBrowserContext())
	t.Cleanup(cancel)
	// Open the tab now, under ctx: a tab opened by the first action would belong to that action's context (and
	// close with its timeout).
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("open a tab: %v", err)
	}
	return ctx
}

// webApp is the small web app behind the agent: pages with relative and absolute-path resources, an API, a
// WebSocket echo, an event stream, cookies and redirects of every kind. It records what reached it.
type webApp struct {
	id       string
	upstream string // its own address, host:port, set once it listens

	mu       sync.Mutex
	referers []string
	cookies  []string
	posts    []string // Origin of each POST
	sockets  []string // Origin of each WebSocket
}

func (a *webApp) record(f func()) {
	a.mu.Lock()
	defer a.mu.Unlock()
	f()
}

var onePixel = func() []byte {
	var b bytes.Buffer
	_ = png.Encode(&b, image.NewGray(image.Rect(0, 0, 1, 1)))
	return b.Bytes()
}()

func (a *webApp) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	a.record(func() {
		if v := r.Header.Get("Referer"); v != "" {
			a.referers = append(a.referers, v)
		}
		if v := r.Header.Get("Cookie"); v != "" {
			a.cookies = append(a.cookies, v)
		}
	})
	// A well-behaved app behind a path prefix builds its absolute paths from X-Forwarded-Prefix.
	prefix := r.Header.Get("X-Forwarded-Prefix")
	page := func(body string) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprintf(w, "<!doctype html><html><head><meta charset=utf-8><title>%s</title></head><body>%s</body></html>", a.id, body)
	}
	switch r.URL.Path {
	case "/":
		page(fmt.Sprintf(indexHTML, prefix, a.id, prefix, prefix, prefix, prefix))
	case "/style.css":
		w.Header().Set("Content-Type", "text/css")
		_, _ = io.WriteString(w, "#css-rel{display:inline-block;width:111px} body{font-family:sans-serif}")
	case "/abs.css":
		w.Header().Set("Content-Type", "text/css")
		_, _ = io.WriteString(w, "#css-abs{display:inline-block;width:113px}")
	case "/app.js":
		w.Header().Set("Content-Type", "text/javascript")
		_, _ = io.WriteString(w, appJS)
	case "/abs.js":
		w.Header().Set("Content-Type", "text/javascript")
		_, _ = io.WriteString(w, `document.getElementById("js-abs").textContent = "ok";`)
	case "/pixel.png", "/abs.png":
		w.Header().Set("Content-Type", "image/png")
		_, _ = w.Write(onePixel)
	case "/api/data":
		if r.Method == http.MethodPost {
			a.record(func() { a.posts = append(a.posts, r.Header.Get("Origin")) })
			_, _ = io.WriteString(w, "posted to "+a.id)
			return
		}
		_, _ = io.WriteString(w, "data from "+a.id)
	case "/ws":
		a.record(func() { a.sockets = append(a.sockets, r.Header.Get("Origin")) })
		c, err := websocket.Accept(w, r, nil) // checks Origin against Host: the agent passes the public Host
		if err != nil {
			return
		}
		defer c.CloseNow()
		ctx, cancel := context.WithTimeout(r.Context(), browserWait)
		defer cancel()
		if _, msg, err := c.Read(ctx); err == nil {
			_ = c.Write(ctx, websocket.MessageText, []byte(string(msg)+" pong from "+a.id))
		}
		_ = c.Close(websocket.StatusNormalClosure, "")
	case "/events":
		w.Header().Set("Content-Type", "text/event-stream")
		fmt.Fprintf(w, "data: event from %s\n\n", a.id)
		http.NewResponseController(w).Flush()
		select {
		case <-r.Context().Done():
		case <-time.After(browserWait):
		}
	case "/setcookie":
		http.SetCookie(w, &http.Cookie{Name: "hostcookie", Value: a.id, Path: "/"})
		page(`<p id="done">cookie set</p>`)
	case "/cookies":
		page(`<pre id="cookies">` + html.EscapeString(r.Header.Get("Cookie")) + `</pre>`)
	case "/redir-abs":
		http.Redirect(w, r, "/landed", http.StatusFound)
	case "/redir-rel":
		http.Redirect(w, r, "landed", http.StatusFound)
	case "/redir-upstream": // an app that builds URLs from its own listen address
		w.Header().Set("Location", "http://"+a.upstream+"/landed")
		w.WriteHeader(http.StatusFound)
	case "/redir-public": // an app that builds absolute URLs from the forwarded public name
		w.Header().Set("Location", r.Header.Get("X-Forwarded-Proto")+"://"+r.Header.Get("X-Forwarded-Host")+"/landed")
		w.WriteHeader(http.StatusSeeOther)
	case "/landed":
		page(`<p id="landed">landed at ` + a.id + `</p>`)
	case "/page2":
		page(`<p id="page2">page two of ` + a.id + `</p>`)
	default:
		http.NotFound(w, r)
	}
}

// indexHTML: %s are the prefix (for the script constant), the id, then the prefix for abs.css, abs.png, abs.js and
// the link.
const indexHTML = `<script>const PREFIX = %q;</script>
<link rel="stylesheet" href="style.css">
<h1 id="title">host %s</h1>
<link rel="stylesheet" href="%s/abs.css">
<table>
<tr><td>script (relative)</td><td id="js-rel">pending</td></tr>
<tr><td>script (absolute path)</td><td id="js-abs">pending</td></tr>
<tr><td>style (relative)</td><td><span id="css-rel">pending</span></td></tr>
<tr><td>style (absolute path)</td><td><span id="css-abs">pending</span></td></tr>
<tr><td>image (relative)</td><td id="img-rel">pending</td></tr>
<tr><td>image (absolute path)</td><td id="img-abs">pending</td></tr>
<tr><td>fetch (relative)</td><td id="fetch-rel">pending</td></tr>
<tr><td>fetch (absolute path)</td><td id="fetch-abs">pending</td></tr>
<tr><td>fetch POST</td><td id="post">pending</td></tr>
<tr><td>WebSocket</td><td id="ws">pending</td></tr>
<tr><td>EventSource</td><td id="sse">pending</td></tr>
</table>
<img id="pic-rel" src="pixel.png" width=8 height=8> <img id="pic-abs" src="%s/abs.png" width=8 height=8>
<p><a id="abs-link" href="%s/page2">page two</a></p>
<script src="app.js"></script><script src="%s/abs.js"></script>
`

const appJS = `
const out = (id, v) => { document.getElementById(id).textContent = v; };
out("js-rel", "ok");
const text = (r) => r.ok ? r.text() : Promise.resolve("HTTP " + r.status);
fetch("api/data").then(text).then(t => out("fetch-rel", t), e => out("fetch-rel", "error " + e));
fetch(PREFIX + "/api/data").then(text).then(t => out("fetch-abs", t), e => out("fetch-abs", "error " + e));
fetch("api/data", {method: "POST", body: "x"}).then(text).then(t => out("post", t), e => out("post", "error " + e));
const u = new URL("ws", location.href); u.protocol = u.protocol.replace("http", "ws");
const ws = new WebSocket(u);
ws.onopen = () => ws.send("ping");
ws.onmessage = (e) => out("ws", e.data);
ws.onerror = () => out("ws", "error");
const es = new EventSource("events");
es.onmessage = (e) => { out("sse", e.data); es.close(); };
es.onerror = () => { out("sse", "error"); es.close(); };
window.addEventListener("load", () => {
  const w = (id) => getComputedStyle(document.getElementById(id)).width;
  out("css-rel", w("css-rel") === "111px" ? "ok" : "unstyled " + w("css-rel"));
  out("css-abs", w("css-abs") === "113px" ? "ok" : "unstyled " + w("css-abs"));
  const img = (id) => document.getElementById(id).naturalWidth === 1 ? "ok" : "broken";
  out("img-rel", img("pic-rel"));
  out("img-abs", img("pic-abs"));
});
`

// startApp runs a webApp for id behind a real agent reverse proxy (Host passed through, as --host-header preserve).
func startApp(t *testing.T, relayURL, id string) *webApp {
	a := &webApp{id: id}
	up := httptest.NewServer(a)
	t.Cleanup(up.Close)
	u, _ := url.Parse(up.URL)
	a.upstream = u.Host
	relaytest.StartHost(t, relayURL, id, agent.UpstreamHandlerWith(u, agent.UpstreamOptions{HostHeader: agent.HostHeaderPreserve}), nil)
	return a
}

// statusIDs are the checks the index page shows.
var statusIDs = []string{"js-rel", "js-abs", "css-rel", "css-abs", "img-rel", "img-abs", "fetch-rel", "fetch-abs", "post", "ws", "sse"}

// pageStatuses waits until no check on the page is pending and returns what each shows.
func pageStatuses(t *testing.T, tab context.Context) map[string]string {
	t.Helper()
	ids, _ := json.Marshal(statusIDs)
	expr := fmt.Sprintf(`(() => { const ids = %s; const m = {};
		for (const id of ids) { const e = document.getElementById(id); if (!e || e.textContent === "pending") return null; m[id] = e.textContent; }
		return m; })()`, ids)
	got, err := chromedp.Run(tab, chromedp.Poll[map[string]string](expr, chromedp.WithPollingTimeout(browserWait)))
	if err != nil {
		body, _ := chromedp.Run(tab, chromedp.Evaluate[string](`document.body ? document.body.innerText : ""`))
		t.Fatalf("page checks did not finish: %v; the page shows:\n%s", err, body)
	}
	return got
}

// textOf waits for the element sel and returns its text.
func textOf(t *testing.T, tab context.Context, sel string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(tab, browserWait)
	defer cancel()
	s, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(sel)))
	if err != nil {
		loc, _ := chromedp.Run(tab, chromedp.Location())
		body, _ := chromedp.Run(tab, chromedp.Evaluate[string](`document.body ? document.body.innerText : ""`))
		t.Fatalf("%s at %s: %v; the page shows:\n%s", sel, loc, err, body)
	}
	return s
}

func navigate(t *testing.T, tab context.Context, u string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(tab, browserWait)
	defer cancel()
	if err := chromedp.Do(ctx, chromedp.Navigate(u)); err != nil {
		t.Fatalf("navigate %s: %v", u, err)
	}
}

func location(t *testing.T, tab context.Context) *url.URL {
	t.Helper()
	loc, err := chromedp.Run(tab, chromedp.Location())
	if err != nil {
		t.Fatal(err)
	}
	u, err := url.Parse(loc)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// screenshot saves the tab as name.png in $BROWSER_SCREENSHOTS, when set (to look at what the page shows).
func screenshot(t *testing.T, tab context.Context, name string) {
	dir := os.Getenv("BROWSER_SCREENSHOTS")
	if dir == "" {
		return
	}
	b, err := chromedp.Run(tab, chromedp.FullScreenshot(100) /* 100: PNG */)
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	if err := os.WriteFile(filepath.Join(dir, name+".png"), b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestBrowserPages: in both modes a page opened with ?access_token= trades it for a session, and everything on it
// works; redirects of every kind stay inside the host; one host's cookies never reach another; no token reaches a
// host, in Referer or otherwise; a cross-site page cannot use the session to POST or open a WebSocket.
func TestBrowserPages(t *testing.T) {
	startBrowser(t)
	evil := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		target := r.URL.Query().Get("target")
		w.Header().Set("Content-Type", "text/html")
		fmt.Fprintf(w, `<!doctype html><p>post: <span id="evil-post">pending</span> ws: <span id="evil-ws">pending</span></p><script>
const T = %q;
fetch(T + "api/data", {method: "POST", credentials: "include", mode: "no-cors", body: "x"}).then(() => document.getElementById("evil-post").textContent = "sent", () => document.getElementById("evil-post").textContent = "error");
const u = new URL("ws", T); u.protocol = u.protocol.replace("http", "ws");
const ws = new WebSocket(u);
ws.onopen = () => document.getElementById("evil-ws").textContent = "open";
ws.onclose = () => { const e = document.getElementById("evil-ws"); if (e.textContent === "pending") e.textContent = "refused"; };
</script>`, target)
	}))
	t.Cleanup(evil.Close)

	r := relaytest.StartRelay(t, func(c *relay.Config) { c.HostsDomain = "localhost" })
	port := portOf(t, r.URL)
	apps := map[string]*webApp{"a": startApp(t, r.URL, "a"), "b": startApp(t, r.URL, "b")}
	tokens := map[string]string{"a": relaytest.ClientToken(t, "alice", "a"), "b": relaytest.ClientToken(t, "bob", "b")}

	for _, mode := range []string{"host", "path"} {
		t.Run(mode, func(t *testing.T) {
			base := func(id string) string { // the host's base URL, ending in "/"
				if mode == "host" {
					return "http://" + id + ".localhost:" + port + "/"
				}
				return r.URL + "/hosts/" + id + "/"
			}
			prefix := func(id string) string {
				if mode == "host" {
					return ""
				}
				return "/hosts/" + id
			}
			tab := newTab(t)

			navigate(t, tab, base("a")+"?access_token="+tokens["a"])
			if loc := location(t, tab); strings.Contains(loc.RawQuery, "access_token") || loc.Path != prefix("a")+"/" {
				t.Fatalf("after the session redirect the page is at %s; want %s without the token", loc, base("a"))
			}
			got := pageStatuses(t, tab)
			screenshot(t, tab, "pages-"+mode)
			want := map[string]string{
				"js-rel": "ok", "js-abs": "ok", "css-rel": "ok", "css-abs": "ok", "img-rel": "ok", "img-abs": "ok",
				"fetch-rel": "data from a", "fetch-abs": "data from a", "post": "posted to a", "ws": "ping pong from a",
				"sse": "event from a",
			}
			for k, v := range want {
				if got[k] != v {
					t.Errorf("%s shows %q, want %q", k, got[k], v)
				}
			}
			if title := textOf(t, tab, "#title"); title != "host a" {
				t.Fatalf("title %q", title)
			}

			// An absolute-path link.
			if err := chromedp.Do(tab, chromedp.Click(chromedp.CSS("#abs-link"))); err != nil {
				t.Fatal(err)
			}
			if got := textOf(t, tab, "#page2"); got != "page two of a" {
				t.Fatalf("link: %q", got)
			}

			// Redirects of every kind land inside the host.
			for _, p := range []string{"redir-abs", "redir-rel", "redir-upstream", "redir-public"} {
				navigate(t, tab, base("a")+p)
				if got := textOf(t, tab, "#landed"); got != "landed at a" {
					t.Fatalf("%s: %q", p, got)
				}
				if loc := location(t, tab); loc.Path != prefix("a")+"/landed" || loc.Host != hostOf(base("a")) {
					t.Fatalf("%s landed at %s", p, loc)
				}
			}

			// Cookies: A's cookie is not sent to B.
			navigate(t, tab, base("a")+"setcookie")
			textOf(t, tab, "#done")
			navigate(t, tab, base("b")+"?access_token="+tokens["b"])
			pageStatuses(t, tab)
			navigate(t, tab, base("b")+"cookies")
			if got := textOf(t, tab, "#cookies"); strings.Contains(got, "hostcookie=a") {
				t.Fatalf("host b received host a's cookie: %q", got)
			}
			navigate(t, tab, base("a")+"cookies")
			if got := textOf(t, tab, "#cookies"); !strings.Contains(got, "hostcookie=a") {
				t.Fatalf("host a did not get its own cookie back: %q", got)
			}

			// A cross-site page cannot use the session: its POST and WebSocket never reach the host.
			navigate(t, tab, evil.URL+"/?target="+url.QueryEscape(base("a")))
			// Wait for the page's attempts to end before reading their outcome: they run after the load.
			_, _ = chromedp.Run(tab, chromedp.Poll[bool](`document.getElementById("evil-ws").textContent !== "pending" && document.getElementById("evil-post").textContent !== "pending"`,
				chromedp.WithPollingTimeout(browserWait)))
			if got := textOf(t, tab, "#evil-ws"); got == "pending" {
				t.Fatal("evil page did not finish")
			}
			if got := textOf(t, tab, "#evil-ws"); got != "refused" {
				t.Fatalf("a cross-site WebSocket with the session: %q", got)
			}
			screenshot(t, tab, "evil-"+mode)

			for id, app := range apps {
				app.mu.Lock()
				defer app.mu.Unlock()
				for _, o := range app.posts { // the page's own POSTs, from either mode's origin
					if o != "http://"+id+".localhost:"+port && o != r.URL {
						t.Fatalf("host %s received a POST from Origin %q", id, o)
					}
				}
				for _, o := range app.sockets {
					if strings.HasPrefix(o, evil.URL) {
						t.Fatalf("host %s accepted a WebSocket from %q", id, o)
					}
				}
				if len(app.referers) == 0 {
					t.Fatalf("host %s saw no Referer: the check proves nothing", id)
				}
				for _, ref := range app.referers {
					if strings.Contains(ref, "access_token") || strings.Contains(ref, tokens[id]) {
						t.Fatalf("host %s saw a token in Referer %q", id, ref)
					}
				}
				for _, c := range app.cookies {
					if strings.Contains(c, relay.SessionCookie) || strings.Contains(c, tokens[id]) {
						t.Fatalf("host %s saw the session cookie: %q", id, c)
					}
				}
			}
		})
	}
}

func hostOf(u string) string {
	p, _ := url.Parse(u)
	return p.Host
}

// TestBrowserCrossOriginApp: a single-page app on another origin, allowed with CORSOrigins, calls /hosts/… with
// Authorization and reads /v1/presence/events with ?access_token=; an app on an origin not allowed cannot.
func TestBrowserCrossOriginApp(t *testing.T) {
	startBrowser(t)
	var mu sync.Mutex
	var relayURL, token string
	spa := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		rel, tok := relayURL, token
		mu.Unlock()
		w.Header().Set("Content-Type", "text/html")
		fmt.Fprintf(w, `<!doctype html><title>spa</title><h1>the app</h1>
<p>fetch: <span id="spa-fetch">pending</span></p><p>events: <span id="spa-open">pending</span> <span id="spa-event">pending</span></p>
<script>
const R = %q, T = %q;
fetch(R + "/hosts/a/api/data", {headers: {Authorization: "Bearer " + T}})
  .then(r => r.ok ? r.text() : "HTTP " + r.status).then(t => document.getElementById("spa-fetch").textContent = t, e => document.getElementById("spa-fetch").textContent = "blocked");
const es = new EventSource(R + "/v1/presence/events?access_token=" + encodeURIComponent(T));
es.onopen = () => document.getElementById("spa-open").textContent = "open";
es.onerror = () => { if (document.getElementById("spa-open").textContent === "pending") document.getElementById("spa-open").textContent = "blocked"; };
for (const kind of ["online", "offline", "updated", "moved"]) es.addEventListener(kind, (e) => document.getElementById("spa-event").textContent = kind + " " + JSON.parse(e.data).host_id);
</script>`, rel, tok)
	}))
	t.Cleanup(spa.Close)
	other := httptest.NewServer(spa.Config.Handler) // the same app on an origin that is not allowed
	t.Cleanup(other.Close)

	r := relaytest.StartRelay(t, func(c *relay.Config) { c.CORSOrigins = []string{spa.URL} })
	startApp(t, r.URL, "a")
	mu.Lock()
	relayURL, token = r.URL, relaytest.ClientToken(t, "alice", "a", "late")
	mu.Unlock()

	tab := newTab(t)
	navigate(t, tab, spa.URL)
	_, _ = chromedp.Run(tab, chromedp.Poll[bool](`document.getElementById("spa-fetch").textContent !== "pending"`,
		chromedp.WithPollingTimeout(browserWait))) // the fetch runs after the load
	if got := textOf(t, tab, "#spa-fetch"); got != "data from a" {
		t.Fatalf("cross-origin fetch with Authorization: %q", got)
	}
	if _, err := chromedp.Run(tab, chromedp.Poll[bool](`document.getElementById("spa-open").textContent === "open"`, chromedp.WithPollingTimeout(browserWait))); err != nil {
		t.Fatalf("EventSource did not open: %v (%q)", err, textOf(t, tab, "#spa-open"))
	}
	relaytest.StartHost(t, r.URL, "late", echoHost(nil), nil)
	if _, err := chromedp.Run(tab, chromedp.Poll[bool](`document.getElementById("spa-event").textContent === "online late"`, chromedp.WithPollingTimeout(browserWait))); err != nil {
		t.Fatalf("no presence event reached the app: %v (%q)", err, textOf(t, tab, "#spa-event"))
	}
	screenshot(t, tab, "spa")

	tab2 := newTab(t)
	navigate(t, tab2, other.URL)
	if _, err := chromedp.Run(tab2, chromedp.Poll[bool](`document.getElementById("spa-fetch").textContent !== "pending"`, chromedp.WithPollingTimeout(browserWait))); err != nil {
		t.Fatal(err)
	}
	if got := textOf(t, tab2, "#spa-fetch"); got != "blocked" {
		t.Fatalf("an origin that is not allowed read the answer: %q", got)
	}
}
