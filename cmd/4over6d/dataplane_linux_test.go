package main

import (
	"net"
	"net/netip"
	"slices"
	"testing"

	"github.com/4over6d/4over6d/tun"
	"github.com/4over6d/4over6d/tun/netnstest"
)

// TestDataPlaneRoutesClaimsToTheTUN runs SetLocal against a real TUN in a
// namespace where a "peer's block" (192.0.2.64/26) is routed elsewhere:
// each claimed address inside it goes to the TUN while it is claimed, and
// back to the peer once it is not.
func TestDataPlaneRoutesClaimsToTheTUN(t *testing.T) {
	netnstest.RequireRoot(t)
	ns, peer := netnstest.New(t, "4o6dp"), netnstest.New(t, "4o6dpeer")
	peerIf, _ := netnstest.Link(t, ns, []netip.Prefix{netip.MustParsePrefix("203.0.113.1/24")}, peer, []netip.Prefix{netip.MustParsePrefix("203.0.113.2/24")})
	ns.AddRoute(t, netip.MustParsePrefix("192.0.2.64/26"), netip.MustParseAddr("203.0.113.2"))
	var dev *tun.Linux
	if err := ns.Do(func() (err error) {
		dev, err = tun.Open(tun.Config{Name: "4o6dptun", MTU: 1500, Prefix: netip.MustParsePrefix("192.0.2.0/24")})
		return err
	}); err != nil {
		t.Fatalf("open TUN in %s: %v", ns.Name, err)
	}
	t.Cleanup(func() { _ = dev.Close() })
	link, err := ns.Netlink().LinkByName(dev.Name())
	if err != nil {
		t.Fatal(err)
	}
	via := func(a string) string {
		routes, err := ns.Netlink().RouteGet(net.ParseIP(a))
		if err != nil || len(routes) == 0 {
			t.Fatalf("route to %s: %v", a, err)
		}
		l, err := ns.Netlink().LinkByIndex(routes[0].LinkIndex)
		if err != nil {
			t.Fatal(err)
		}
		return l.Attrs().Name
	}
	dp := newDataPlane(&fakeOverlay{}, dev)
	steps := []struct {
		claims []netip.Addr
		routes []string // on the TUN
		viaTUN []string // addresses of the peer's block the kernel sends to the TUN; the others go to the peer
	}{
		{addrs("192.0.2.70", "192.0.2.71"), []string{"192.0.2.0/24", "192.0.2.70/32", "192.0.2.71/32"}, []string{"192.0.2.70", "192.0.2.71"}},
		{addrs("192.0.2.71", "192.0.2.72"), []string{"192.0.2.0/24", "192.0.2.71/32", "192.0.2.72/32"}, []string{"192.0.2.71", "192.0.2.72"}},
		{nil, []string{"192.0.2.0/24"}, nil},
	}
	for _, st := range steps {
		if err := dp.SetLocal(st.claims); err != nil {
			t.Fatalf("SetLocal(%v): %v", st.claims, err)
		}
		if got := ns.IPv4Routes(t, link); !slices.Equal(got, st.routes) {
			t.Fatalf("after SetLocal(%v): TUN routes %v, want %v", st.claims, got, st.routes)
		}
		for _, a := range []string{"192.0.2.70", "192.0.2.71", "192.0.2.72"} {
			want := peerIf
			if slices.Contains(st.viaTUN, a) {
				want = dev.Name()
			}
			if got := via(a); got != want {
				t.Errorf("after SetLocal(%v): %s goes to %s, want %s", st.claims, a, got, want)
			}
		}
		if got := via("192.0.2.10"); got != dev.Name() {
			t.Errorf("an address of this node's own blocks goes to %s, want the TUN", got)
		}
	}
}
