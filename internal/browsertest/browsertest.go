//go:build linux

// Package browsertest runs a headless Chromium for a test, driven with
// chromedp, so pages such as the dashboard are tested in a real browser.
// The browser reaches loopback only (or, with Options.Netns, only the
// addresses of a test's network namespace): everything else goes to a
// proxy address where nothing listens, and no host name resolves.
package browsertest

import (
	"bytes"
	"context"
	"fmt"
	"image/png"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// PathEnv names a Chromium or Chrome binary to use instead of the first of
// the usual places that exists.
const PathEnv = "FOUR6_CHROMIUM"

// requireEnv and skipEnv are the switches of tun/netnstest (RequireRoot):
// the full suite (scripts/test.sh, as root) sets the first, so a missing
// browser fails there instead of skipping; `make check` sets the second.
const (
	requireEnv = "FOUR6_REQUIRE_ROOT_TESTS"
	skipEnv    = "FOUR6_SKIP_ROOT_TESTS"
)

// Wait bounds every wait for the page (a loaded machine starts Chromium
// and runs the page slowly; the waits end as soon as the condition holds).
const Wait = 30 * time.Second

// candidates are tried in order: Debian's real binary first (its
// /usr/bin/chromium is a shell wrapper that adds extensions and API keys).
var candidates = []string{"/usr/lib/chromium/chromium", "chromium", "chromium-browser", "google-chrome", "headless_shell"}

// ExecPath returns the browser binary. Without one it skips the test, or
// fails it as root and when FOUR6_REQUIRE_ROOT_TESTS=1 (the full suite
// installs Debian's chromium through scripts/deps.sh).
func ExecPath(t testing.TB) string {
	t.Helper()
	if p := os.Getenv(PathEnv); p != "" {
		return p
	}
	for _, c := range candidates {
		if p, err := exec.LookPath(c); err == nil {
			return p
		}
	}
	const reason = "no Chromium found (tried %s; apt-get install chromium, or set %s)"
	switch {
	case os.Getenv(requireEnv) == "1":
		t.Fatalf(reason+"; %s=1 forbids skipping", strings.Join(candidates, ", "), PathEnv, requireEnv)
	case os.Geteuid() == 0 && os.Getenv(skipEnv) != "1":
		t.Fatalf(reason+"; as root the browser tests must run", strings.Join(candidates, ", "), PathEnv)
	}
	t.Skipf(reason, strings.Join(candidates, ", "), PathEnv)
	return ""
}

// Options shape the browser.
type Options struct {
	// Netns, when set, runs the browser inside that named network
	// namespace (through `ip netns exec`), so it reaches exactly the
	// namespace's addresses, such as the admin endpoint on its loopback.
	Netns string
	// Width and Height are the viewport in CSS pixels (1280x800 if zero).
	Width, Height int
}

// Browser is one headless Chromium with one tab, closed at test cleanup.
type Browser struct {
	t       testing.TB
	ctx     context.Context
	console *consoleLog
}

// consoleLog collects the page's problems: exceptions, console.error calls
// and security (CSP) log entries.
type consoleLog struct {
	mu       sync.Mutex
	problems []string
}

// New starts a browser for the test. Chromium runs with --no-sandbox only
// as root (it refuses to start as root otherwise, and needs no exception
// as another user), with a fresh temporary profile that chromedp removes.
func New(t testing.TB, o Options) *Browser {
	t.Helper()
	path := ExecPath(t)
	if o.Width == 0 {
		o.Width, o.Height = 1280, 800
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path),
		chromedp.WindowSize(o.Width, o.Height),
		chromedp.Flag("no-sandbox", os.Geteuid() == 0),
		// Loopback goes direct (Chromium never proxies it); anything else
		// goes to a port where nothing listens, and names do not resolve.
		chromedp.ProxyServer("http://127.0.0.1:9"),
		chromedp.Flag("host-resolver-rules", "MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1, EXCLUDE [::1]"),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-domain-reliability", true),
		chromedp.Flag("no-pings", true),
		chromedp.Flag("disable-features", "Translate,BlinkGenPropertyTrees,MediaRouter,OptimizationHints,AutofillServerCommunication"),
		chromedp.Flag("lang", "en-GB"),
		chromedp.ModifyCmdFunc(func(cmd *exec.Cmd) {
			if cmd.SysProcAttr == nil {
				cmd.SysProcAttr = &syscall.SysProcAttr{}
			}
			cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL // as chromedp does by default
			if o.Netns != "" {
				cmd.Args = append([]string{"ip", "netns", "exec", o.Netns, cmd.Path}, cmd.Args[1:]...)
				cmd.Path, cmd.Err = exec.LookPath("ip")
			}
		}),
	)
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(allocCtx)
	b := &Browser{t: t, ctx: ctx, console: &consoleLog{}}
	messages := chromedp.Console(ctx)
	t.Cleanup(func() {
		cancel()
		cancelAlloc() // waits for the browser to exit and its profile to go
	})
	if err := chromedp.Do(ctx, chromedp.EmulateViewport(int64(o.Width), int64(o.Height))); err != nil {
		t.Fatalf("failed to start %s: %v", path, err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for m, err := range messages {
			if err != nil {
				return
			}
			b.console.note(m)
		}
	}()
	t.Cleanup(func() { <-done }) // runs before the cancel above
	t.Cleanup(cancel)
	return b
}

func (c *consoleLog) note(m chromedp.ConsoleMessage) {
	bad := m.IsException() || m.Source == "security" || (m.Type == chromedp.ConsoleError && m.Source == "")
	if !bad {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.problems = append(c.problems, fmt.Sprintf("%s (%s:%d)", m, m.URL, m.Line))
}

// For returns the same browser reporting failures to t, for a subtest.
func (b *Browser) For(t testing.TB) *Browser {
	return &Browser{t: t, ctx: b.ctx, console: b.console}
}

// Problems returns the page's uncaught exceptions, console.error calls and
// security messages (such as Content-Security-Policy violations) so far.
// Failed requests are not among them: tests provoke those on purpose.
func (b *Browser) Problems() []string {
	b.console.mu.Lock()
	defer b.console.mu.Unlock()
	return append([]string(nil), b.console.problems...)
}

// Context is the tab's chromedp context, for actions this package lacks.
func (b *Browser) Context() context.Context { return b.ctx }

// Do runs actions in the tab, failing the test on error.
func (b *Browser) Do(what string, actions ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, Wait)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		b.t.Fatalf("%s: %v", what, err)
	}
}

// WaitFor waits until the JavaScript expression is truthy in the page,
// checking every 50 ms for up to Wait, and fails the test naming what it
// waited for, with the page's state, if it never is.
func (b *Browser) WaitFor(what, expr string) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, Wait+5*time.Second)
	defer cancel()
	_, err := chromedp.Run(ctx, chromedp.Poll[chromedp.Void](expr,
		chromedp.WithPollingInterval(50*time.Millisecond), chromedp.WithPollingTimeout(Wait)))
	if err != nil {
		b.t.Fatalf("waiting for %s (%s): %v\n%s\npage: %s", what, expr, err, b.keepScreenshot(), b.describe())
	}
}

// keepScreenshot saves what the page shows now to a file that outlives the
// test, for a failure message.
func (b *Browser) keepScreenshot() string {
	ctx, cancel := context.WithTimeout(b.ctx, 5*time.Second)
	defer cancel()
	buf, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
	if err != nil {
		return "no screenshot: " + err.Error()
	}
	f, err := os.CreateTemp("", "browsertest-*.png")
	if err != nil {
		return "no screenshot: " + err.Error()
	}
	defer f.Close()
	if _, err := f.Write(buf); err != nil {
		return "no screenshot: " + err.Error()
	}
	return "screenshot: " + f.Name()
}

// describe is the page's state and text, for failure messages.
func (b *Browser) describe() string {
	ctx, cancel := context.WithTimeout(b.ctx, 5*time.Second)
	defer cancel()
	s, err := chromedp.Run(ctx, chromedp.Evaluate[string](
		`document.location.href + ' state=' + document.body.dataset.state + '\n' + document.body.innerText`))
	if err != nil {
		return "(unreadable: " + err.Error() + ")"
	}
	return s
}

// Eval evaluates a JavaScript expression in the page and returns its
// value, failing the test on error.
func Eval[T any](b *Browser, expr string) T {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, Wait)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr))
	if err != nil {
		b.t.Fatalf("evaluate %s: %v", expr, err)
	}
	return v
}

// Screenshot captures the viewport as PNG, writes it to path and returns
// the image's size in pixels.
func (b *Browser) Screenshot(path string) (width, height int) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, Wait)
	defer cancel()
	buf, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
	if err != nil {
		b.t.Fatalf("screenshot: %v", err)
	}
	cfg, err := png.DecodeConfig(bytes.NewReader(buf))
	if err != nil {
		b.t.Fatalf("screenshot is not a PNG: %v", err)
	}
	if err := os.WriteFile(path, buf, 0o644); err != nil {
		b.t.Fatalf("failed to save the screenshot: %v", err)
	}
	return cfg.Width, cfg.Height
}
