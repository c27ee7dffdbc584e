package main

// The dashboard of the real 4over6d with two real 4over6c clients, in a
// headless Chromium that runs inside the server's namespace (so it reaches
// the admin endpoint on that namespace's loopback, and nothing else): both
// sessions appear, a client's rates become non-zero while it pings, a kick
// confirmed in the page ends that client's session, and the client's new
// session appears when it reconnects.

import (
	"fmt"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"

	"github.com/chromedp/chromedp"

	"github.com/4over6d/4over6d/internal/browsertest"
)

func TestE2EDashboardInBrowser(t *testing.T) {
	tp := newTopology(t, 2)
	browsertest.ExecPath(t) // skip or fail before building anything
	tp.runServer(t)
	if r := admin(t, tp.srv, "GET", "/api/v1/pool"); !strings.HasPrefix(r, "HTTP/1.0 200") {
		t.Fatalf("the admin endpoint has no management API (GET /api/v1/pool):\n%.300s", r)
	}
	var addrs [2]netip.Addr
	for i, ns := range tp.clients {
		addrs[i] = connectedAddr(t, tp.runClient(t, i), ns)
	}
	// Steady traffic from the first client: five echo requests a second
	// through the tunnel to the internet host, until the test ends.
	startProcess(t, tp.clients[0], "ping", "-n", "-i", "0.2", inetV4.String())

	b := browsertest.New(t, browsertest.Options{Netns: tp.srv.Name})
	b.Do("open the dashboard", chromedp.Navigate("http://127.0.0.1:9604/"))
	row := func(addr netip.Addr) string {
		return fmt.Sprintf(`document.querySelector('#session-rows tr[data-addr="%s"]')`, addr)
	}
	b.WaitFor("both sessions", fmt.Sprintf(`document.body.dataset.state === 'live' && %s?.dataset.client.startsWith('[2001:db8:1::2]:') &&
		%s?.dataset.client.startsWith('[2001:db8:2::2]:')`, row(addrs[0]), row(addrs[1])))
	b.WaitFor("the pinging client's rates to become non-zero", fmt.Sprintf(`Number(%[1]s.querySelector('[data-field=rate_in]').dataset.bps) > 0 &&
		Number(%[1]s.querySelector('[data-field=rate_out]').dataset.bps) > 0`, row(addrs[0])))

	old := browsertest.Eval[string](b, row(addrs[1])+`.dataset.client`)
	b.Do("kick the second client", chromedp.Click(chromedp.CSS(fmt.Sprintf(`#session-rows tr[data-client="%s"] button[data-action=kick]`, old))))
	b.WaitFor("the confirmation", `document.getElementById('confirm').open`)
	b.Do("confirm", chromedp.Click(chromedp.ID("confirm-ok")))
	b.WaitFor("the kicked session to leave", fmt.Sprintf(`!document.querySelector('#session-rows tr[data-client="%s"]') &&
		document.getElementById('notice').textContent.includes('Kicked %s')`, old, addrs[1]))
	// 4over6c reconnects on its own within a second or so; its new
	// connection has another source port.
	b.WaitFor("the client to come back", fmt.Sprintf(`[...document.querySelectorAll('#session-rows tr')].some((tr) =>
		tr.dataset.client.startsWith('[2001:db8:2::2]:') && tr.dataset.client !== '%s')`, old))
	if m := admin(t, tp.srv, "GET", "/metrics"); !strings.Contains(m, `fourover6d_sessions_closed_by_reason_total{reason="kicked"} 1`) {
		t.Errorf("metrics do not count one kicked session:\n%s", m)
	}
	b.Screenshot(filepath.Join(t.TempDir(), "dashboard-e2e.png"))
	if p := b.Problems(); len(p) != 0 {
		t.Errorf("the page reported problems:\n%s", strings.Join(p, "\n"))
	}
}
