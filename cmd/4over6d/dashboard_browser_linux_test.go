package main

// The dashboard in a real headless Chromium against the canned API of
// dashboard_fake_test.go: sessions appear, a rate becomes non-zero, a kick
// (after its confirmation) removes a row that comes back on reconnect, a
// reservation is refused with the API's error and then made, the page
// notices the server going away and coming back, and the token travels
// from the URL fragment to the Authorization header.
//
// FOUR6_SCREENSHOT=docs/img/dashboard.png (a path relative to the
// repository) regenerates the README's screenshot from this test.

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"

	"github.com/4over6d/4over6d/internal/browsertest"
)

// ScreenshotEnv names where TestDashboardInBrowser saves its 1280x800
// screenshot; relative paths are taken from the repository's root.
const screenshotEnv = "FOUR6_SCREENSHOT"

func screenshotPath(t *testing.T) string {
	p := os.Getenv(screenshotEnv)
	if p == "" {
		return filepath.Join(t.TempDir(), "dashboard.png")
	}
	if !filepath.IsAbs(p) {
		p = filepath.Join("..", "..", p) // tests run in cmd/4over6d
	}
	return p
}

// row is the CSS selector of a session's row.
func row(addr string) string { return fmt.Sprintf(`#session-rows tr[data-addr="%s"]`, addr) }

// js quotes a selector for a JavaScript expression.
func js(s string) string { return "'" + strings.ReplaceAll(s, "'", `\'`) + "'" }

func TestDashboardInBrowser(t *testing.T) {
	fake := newFakeConsole()
	srv := newRestartableServer(t, fake.handler())
	b := browsertest.New(t, browsertest.Options{Width: 1280, Height: 800})
	b.Do("open the dashboard", chromedp.Navigate(srv.URL()))

	b.WaitFor("both sessions", `document.querySelectorAll('#session-rows tr[data-addr]').length === 2 && document.body.dataset.state === 'live'`)
	if got := browsertest.Eval[string](b, `document.querySelector(`+js(row("192.0.2.2")+` [data-field=rate_in]`)+`).dataset.bps`); got != "0" {
		t.Fatalf("idle session's rate in = %q, want 0 before traffic", got)
	}
	if got := browsertest.Eval[string](b, `document.getElementById('pool-leased').textContent + '/' + document.getElementById('pool-size').textContent`); got != "2/253" {
		t.Errorf("pool shows %q, want 2/253", got)
	}

	fake.startTraffic()
	b.WaitFor("the rate to become non-zero", `(() => {
		const td = document.querySelector(`+js(row("192.0.2.2")+` [data-field=rate_in]`)+`);
		return Number(td.dataset.bps) > 0 && /Mbit\/s/.test(td.textContent) && Number(td.querySelector('svg').dataset.points) > 48 &&
			Number(document.getElementById('total-out').dataset.bps) > 0;
	})()`)

	path := screenshotPath(t)
	b.WaitFor("a few points of traffic in the graph", `Number(document.querySelector(`+js(row("192.0.2.2")+` [data-field=rate_in] svg`)+`).dataset.points) >= 54`)
	if w, h := b.Screenshot(path); w != 1280 || h != 800 {
		t.Errorf("screenshot is %dx%d, want 1280x800", w, h)
	}
	t.Logf("screenshot: %s", path)

	t.Run("kick cancelled with the keyboard", func(t *testing.T) {
		b := b.For(t)
		kickButton := row("192.0.2.2") + ` button[data-action=kick]`
		b.Do("press Enter on the kick button", chromedp.Focus(chromedp.CSS(kickButton)), chromedp.KeyEvent(kb.Enter))
		b.WaitFor("the confirmation, focus on Cancel", `document.getElementById('confirm').open && document.activeElement.id === 'confirm-cancel'`)
		b.Do("press Escape", chromedp.KeyEvent(kb.Escape))
		b.WaitFor("the dialog to close, focus back on the button", `!document.getElementById('confirm').open && document.activeElement.matches(`+js(kickButton)+`)`)
		if k := fake.kicked(); len(k) != 0 {
			t.Fatalf("a cancelled kick reached the API: %v", k)
		}
	})

	t.Run("kick with a ban removes the row, reconnect brings it back", func(t *testing.T) {
		b := b.For(t)
		b.Do("click kick", chromedp.Click(chromedp.CSS(row("192.0.2.3")+` button[data-action=kick]`)))
		b.WaitFor("the confirmation", `document.getElementById('confirm').open && document.getElementById('confirm-text').textContent.includes('[2001:db8:2::12]:40001')`)
		b.Do("choose a ban and confirm", chromedp.SetValue(chromedp.ID("ban"), "1h"), chromedp.Click(chromedp.ID("confirm-ok")))
		b.WaitFor("the kicked row to go", `!document.querySelector(`+js(row("192.0.2.3"))+`) && document.getElementById('notice').textContent.includes('Kicked 192.0.2.3')`)
		if k := fake.kicked(); !slices.Equal(k, []string{"192.0.2.3 ban=1h"}) {
			t.Fatalf("kicks the API saw = %v, want one of 192.0.2.3 with ban=1h", k)
		}
		fake.reconnect("192.0.2.3", "[2001:db8:2::12]:40002")
		b.WaitFor("the client to come back", `document.querySelector(`+js(row("192.0.2.3"))+`)?.dataset.client === '[2001:db8:2::12]:40002'`)
	})

	t.Run("an API error is shown", func(t *testing.T) {
		b := b.For(t)
		fake.failNextKick()
		b.Do("kick", chromedp.Click(chromedp.CSS(row("192.0.2.2")+` button[data-action=kick]`)), chromedp.Click(chromedp.ID("confirm-ok")))
		b.WaitFor("the error", `!document.getElementById('error').hidden && document.getElementById('error-text').textContent.includes('no session holds 192.0.2.2 (HTTP 404)')`)
		b.Do("dismiss it", chromedp.Click(chromedp.ID("error-close")))
		b.WaitFor("the error to go", `document.getElementById('error').hidden`)
	})

	t.Run("reserve", func(t *testing.T) {
		b := b.For(t)
		b.Do("reserve outside the pool", chromedp.SetValue(chromedp.ID("reserve-client"), "2001:db8:1::11"),
			chromedp.SetValue(chromedp.ID("reserve-addr"), "198.51.100.7"), chromedp.Click(chromedp.ID("reserve-submit")))
		b.WaitFor("the API's refusal", `document.getElementById('reserve-error').textContent.includes('outside the pool 192.0.2.0/24 (HTTP 400)')`)
		// The session's "Reserve" button fills in its client and address.
		b.Do("reserve from the session row", chromedp.Click(chromedp.CSS(row("192.0.2.2")+` button[data-action=reserve]`)),
			chromedp.SetValue(chromedp.ID("reserve-rate"), "8mbit"), chromedp.Click(chromedp.ID("reserve-submit")))
		b.WaitFor("the reservation in the list", `document.querySelector('#reservation-rows tr[data-client="2001:db8:1::11"]')?.textContent.includes('192.0.2.2') &&
			document.getElementById('reserve-error').textContent === '' && document.getElementById('reserve-client').value === ''`)
		b.Do("remove the old one", chromedp.Click(chromedp.CSS(`#reservation-rows tr[data-client="2001:db8:3::13"] button[data-action=unreserve]`)),
			chromedp.Click(chromedp.ID("confirm-ok")))
		b.WaitFor("it to go", `!document.querySelector('#reservation-rows tr[data-client="2001:db8:3::13"]') && document.querySelectorAll('#reservation-rows tr').length === 1`)
	})

	t.Run("unreachable and back", func(t *testing.T) {
		b := b.For(t)
		srv.stop()
		b.WaitFor("the unreachable state", `document.body.dataset.state === 'unreachable' && !document.getElementById('unreachable').hidden &&
			document.getElementById('status').textContent.includes('unreachable')`)
		srv.start()
		b.WaitFor("recovery", `document.body.dataset.state === 'live' && document.getElementById('unreachable').hidden`)
	})

	if p := b.Problems(); len(p) != 0 {
		t.Errorf("the page reported problems (exceptions, CSP violations):\n%s", strings.Join(p, "\n"))
	}
}

func TestDashboardToken(t *testing.T) {
	const token = "dashboard+test/token=0123456789" // characters a URL could mangle
	fake := newFakeConsole()
	fake.setToken(token)
	srv := newRestartableServer(t, fake.handler())
	b := browsertest.New(t, browsertest.Options{})
	b.Do("open the link with the token", chromedp.Navigate(srv.URL()+"#token="+token))
	b.WaitFor("live data", `document.body.dataset.state === 'live' && document.querySelectorAll('#session-rows tr').length === 2`)
	if got := browsertest.Eval[string](b, `location.href`); got != srv.URL() {
		t.Errorf("address bar = %q, want the token removed (%q)", got, srv.URL())
	}
	if got := browsertest.Eval[string](b, `sessionStorage.getItem('4over6d.token')`); got != token {
		t.Errorf("session storage holds %q, want the token", got)
	}
	if seen := fake.authorizations(); len(seen) == 0 || slices.ContainsFunc(seen, func(h string) bool { return h != "Bearer "+token }) {
		t.Errorf("Authorization headers = %q, want every one to be the Bearer token", seen)
	}

	fake.setToken(token + "-rotated")
	b.WaitFor("the token prompt", `document.body.dataset.state === 'auth' && !document.getElementById('auth').hidden &&
		document.getElementById('auth-reason').textContent.includes('wrong admin token') && document.activeElement.id === 'token-input'`)
	b.Do("give the new token", chromedp.SendKeys(chromedp.ID("token-input"), token+"-rotated"+kb.Enter))
	b.WaitFor("live data again", `document.body.dataset.state === 'live' && document.getElementById('auth').hidden`)
	if got := browsertest.Eval[string](b, `sessionStorage.getItem('4over6d.token')`); got != token+"-rotated" {
		t.Errorf("session storage holds %q after the prompt, want the new token", got)
	}

	b.Do("forget the token", chromedp.Click(chromedp.ID("forget-token")))
	b.WaitFor("the prompt for a missing token", `document.body.dataset.state === 'auth' && document.getElementById('auth-reason').textContent.includes('needs the admin token')`)
	if p := b.Problems(); len(p) != 0 {
		t.Errorf("the page reported problems:\n%s", strings.Join(p, "\n"))
	}
}

// TestDashboardNarrowScreen loads the page at a phone's 360 px: the tables
// become cards and nothing needs sideways scrolling.
func TestDashboardNarrowScreen(t *testing.T) {
	fake := newFakeConsole()
	fake.startTraffic()
	srv := newRestartableServer(t, fake.handler())
	b := browsertest.New(t, browsertest.Options{Width: 360, Height: 740})
	b.Do("open the dashboard", chromedp.Navigate(srv.URL()))
	b.WaitFor("both sessions", `document.querySelectorAll('#session-rows tr[data-addr]').length === 2`)
	got := browsertest.Eval[string](b, `(() => {
		const tr = document.querySelector('#session-rows tr');
		const td = tr.querySelector('[data-field=client]');
		return [document.documentElement.scrollWidth, getComputedStyle(tr).display, getComputedStyle(td, '::before').content,
			getComputedStyle(document.querySelector('#sessions thead')).position].join(' ');
	})()`)
	if want := `360 block "Client" absolute`; got != want {
		t.Errorf("narrow layout (page width, row display, cell label, head position) = %s, want %s", got, want)
	}
	b.Screenshot(filepath.Join(t.TempDir(), "dashboard-360.png"))
	if p := b.Problems(); len(p) != 0 {
		t.Errorf("the page reported problems:\n%s", strings.Join(p, "\n"))
	}
}
