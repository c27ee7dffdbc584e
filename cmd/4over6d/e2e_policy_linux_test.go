package main

// End-to-end tests of the access policy flags (-allow, -source-prefix)
// with the real binary: clients dial from real addresses of the client
// namespace, and the server decides on the source it sees.

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/4over6d/4over6d/messages/wire"
)

// cliOther is a client address in another /64 than cliV6 and cliV6b: a
// different site. It lives on the client namespace's loopback, and the
// server routes its /64 back via cliV6.
var cliOther = netip.MustParseAddr("2001:db8:2::2")

// addOtherSite gives the client namespace cliOther and the server a route
// back to it.
func (tp *topology) addOtherSite(t *testing.T) {
	t.Helper()
	lo, err := tp.cli.Netlink().LinkByName("lo")
	if err != nil {
		t.Fatal(err)
	}
	addr := &netlink.Addr{IPNet: &net.IPNet{IP: cliOther.AsSlice(), Mask: net.CIDRMask(128, 128)}, Flags: unix.IFA_F_NODAD}
	if err := tp.cli.Netlink().AddrAdd(lo, addr); err != nil {
		t.Fatalf("add %v in the client namespace: %v", cliOther, err)
	}
	tp.srv.AddRoute(t, netip.PrefixFrom(cliOther, 64).Masked(), cliV6)
}

// expectRefused checks that the server closes the connection before any
// frame, though the client asked for an address: it never became a
// session. (The -handshake-timeout of an accepted connection is longer
// than the wait, so an accepted one cannot pass for refused.)
func (c *rawClient) expectRefused() {
	c.t.Helper()
	_, _ = c.conn.Write(wire.AppendFrame(nil, wire.TypeIPRequest, nil)) // may meet the close already
	_ = c.conn.SetReadDeadline(time.Now().Add(e2eWait))
	f, err := c.dec.Next()
	switch {
	case err == nil:
		c.t.Fatalf("refused connection got a frame of type %d", f.Type)
	case errors.Is(err, os.ErrDeadlineExceeded):
		c.t.Fatal("connection not closed by the server in time")
	}
}

// awaitMetrics polls /metrics until every line in want is there.
func (tp *topology) awaitMetrics(t *testing.T, want ...string) {
	t.Helper()
	deadline := time.Now().Add(e2eWait)
	for {
		m := tp.adminGet(t, "/metrics")
		missing := ""
		for _, w := range want {
			if !strings.Contains(m, w) {
				missing = w
				break
			}
		}
		if missing == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("/metrics never showed %s:\n%s", missing, m)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// refusedMetric is the refusal counter's line for reason and count n.
func refusedMetric(reason string, n int) string {
	return fmt.Sprintf(`fourover6d_connections_refused_total{reason=%q} %d`, reason, n)
}

// -allow admits its prefixes (an address given alone is a /128) and
// closes everyone else before 101, counted and logged; without it every
// client is served.
func TestAllowAdmitsOnlyListedPrefixes(t *testing.T) {
	tp := newTopology(t)
	tp.addOtherSite(t)
	s := tp.startServer(t, "-allow", cliV6.String()+","+netip.PrefixFrom(cliOther, 64).Masked().String())
	for _, src := range []netip.Addr{cliV6, cliOther} {
		c := tp.dialFrom(t, src)
		c.handshake()
		c.pingThrough(t, 1)
	}
	tp.dialFrom(t, cliV6b).expectRefused()
	tp.awaitMetrics(t, refusedMetric("not_allowed", 1), "fourover6d_sessions 2")
	s.logs.waitLine(t, "refusing connection", "reason=not_allowed")
}

// Without -allow the client refused above is served.
func TestWithoutAllowEveryoneIsServed(t *testing.T) {
	tp := newTopology(t)
	tp.startServer(t)
	tp.dialFrom(t, cliV6b).handshake()
	tp.awaitMetrics(t, refusedMetric("not_allowed", 0), "fourover6d_sessions 1")
}

// -source-prefix 64 counts the two hosts of the client's /64 as one source
// for -max-per-source (the second is refused, another /64 is not); the
// default 128 counts them apart.
func TestSourcePrefixForMaxPerSource(t *testing.T) {
	for _, tc := range []struct {
		args        []string
		sameRefused bool
	}{
		{[]string{"-source-prefix", "64"}, true},
		{nil, false}, // the default: 128
	} {
		t.Run(fmt.Sprint(tc.args), func(t *testing.T) {
			tp := newTopology(t)
			tp.addOtherSite(t)
			tp.startServer(t, append([]string{"-max-per-source", "1"}, tc.args...)...)
			tp.dialFrom(t, cliV6).handshake()
			second := tp.dialFrom(t, cliV6b)
			if tc.sameRefused {
				second.expectRefused()
			} else {
				second.handshake()
			}
			tp.dialFrom(t, cliOther).handshake()
			refused, sessions := 0, 3
			if tc.sameRefused {
				refused, sessions = 1, 2
			}
			tp.awaitMetrics(t, refusedMetric("per_source_limit", refused), fmt.Sprintf("fourover6d_sessions %d", sessions))
		})
	}
}
