package main

// End-to-end test of roaming, with the real binaries in the namespaces
// of e2e_linux_test.go.

import (
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/4over6d/4over6d/tun/netnstest"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// roamDeadline bounds the reconnect after the client's address moved: far
// below the client's -timeout of 5 minutes, which is what ends the session
// when nothing watches the address, yet generous for a loaded machine.
const roamDeadline = 30 * time.Second

// linkWithAddr returns the link in ns that holds addr.
func linkWithAddr(t *testing.T, ns *netnstest.NS, addr netip.Addr) netlink.Link {
	t.Helper()
	addrs, err := ns.Netlink().AddrList(nil, netlink.FAMILY_V6)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range addrs {
		if ipIs(a.IP, addr) {
			link, err := ns.Netlink().LinkByIndex(a.LinkIndex)
			if err != nil {
				t.Fatal(err)
			}
			return link
		}
	}
	t.Fatalf("no link in %s has %v", ns.Name, addr)
	return nil
}

// TestE2EClientRoamsWhenItsAddressMoves moves a connected client's IPv6
// address to another one in the same prefix, as a laptop on a new network
// would see: the client must notice, reconnect from the new address and
// lease again long before its dead-link timeout.
func TestE2EClientRoamsWhenItsAddressMoves(t *testing.T) {
	tp := newTopology(t, 1)
	srv := tp.runServer(t)
	cli := tp.clients[0]
	c := tp.runClient(t, 0, "-timeout", "5m")
	connectedAddr(t, c, cli)
	old, moved := netip.MustParsePrefix("2001:db8:1::2/64"), netip.MustParsePrefix("2001:db8:1::a/64")
	link := linkWithAddr(t, cli, old.Addr())
	at := time.Now()
	if err := cli.Netlink().AddrDel(link, &netlink.Addr{IPNet: netlinkNet(old)}); err != nil {
		t.Fatal(err)
	}
	if err := cli.Netlink().AddrAdd(link, &netlink.Addr{IPNet: netlinkNet(moved), Flags: unix.IFA_F_NODAD}); err != nil {
		t.Fatal(err)
	}
	newClient := fmt.Sprintf("client=[%v]:", moved.Addr())
	waitUntil(t, roamDeadline, func() bool {
		return srv.logs.hasLine(`msg="session assigned"`, newClient) && c.logs.hasLine("msg=connected", "local=[2001:db8:1::a]:")
	}, "the client to reconnect and lease from its new address")
	t.Logf("leased again %v after the address moved", time.Since(at).Round(time.Millisecond))
	// The reason is the address removed or, when the client looked between
	// the kernel's removal of the prefix route and of the address, the
	// route to the server gone.
	if !c.logs.hasLine("msg=disconnected", "network path to the server lost") {
		t.Errorf("the disconnect does not give the lost path as its reason:\n%s", c.logs.String())
	}
	tunAddr(t, cli)
	waitUntil(t, e2eStart, func() bool { return ping(t, cli, 1) == nil }, "ping through the tunnel from the new address")
}
