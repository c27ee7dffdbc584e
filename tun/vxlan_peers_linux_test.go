package tun

import (
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/4over6d/4over6d/tun/netnstest"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// planLines renders a plan in the words of overlayState, to compare them.
func planLines(p vxlanPlan) []string {
	var out []string
	for e := range p.fdb {
		out = append(out, fmt.Sprintf("fdb %v dst %v self permanent", e.mac, e.underlay))
	}
	for gw, mac := range p.neighs {
		out = append(out, fmt.Sprintf("neigh %v lladdr %v permanent", gw, mac))
	}
	for prefix, gw := range p.routes {
		out = append(out, fmt.Sprintf("route %v via %v onlink proto static", prefix, gw))
	}
	slices.Sort(out)
	return out
}

func peer(name string, underlay netip.Addr, prefixes ...string) Peer {
	p := Peer{Name: name, Underlay: underlay, MAC: MACFor(name)}
	for _, s := range prefixes {
		p.Prefixes = append(p.Prefixes, netip.MustParsePrefix(s))
	}
	return p
}

func TestPlanPeers(t *testing.T) {
	self := macKey(MACFor("a"))
	macB, macC := MACFor("b"), MACFor("c")
	fdbB := "fdb " + macB.String() + " dst 2001:db8:46::2 self permanent"
	fdbC := "fdb " + macC.String() + " dst 2001:db8:46::3 self permanent"
	neigh := func(gw string, mac net.HardwareAddr) string {
		return "neigh " + gw + " lladdr " + mac.String() + " permanent"
	}
	route := func(p, gw string) string { return "route " + p + " via " + gw + " onlink proto static" }
	tests := []struct {
		name  string
		peers []Peer
		want  []string
	}{
		{"no peers", nil, nil},
		{
			name:  "a peer without prefixes still gets its FDB entry",
			peers: []Peer{peer("b", underlayB)},
			want:  []string{fdbB},
		},
		{
			name:  "blocks and claims, host bits masked, duplicates merged",
			peers: []Peer{peer("b", underlayB, "192.0.2.64/26", "192.0.2.70/26", "192.0.2.200/32"), peer("c", underlayC, "192.0.2.128/26")},
			want: sorted(fdbB, fdbC,
				neigh("192.0.2.64", macB), neigh("192.0.2.200", macB), neigh("192.0.2.128", macC),
				route("192.0.2.64/26", "192.0.2.64"), route("192.0.2.200/32", "192.0.2.200"), route("192.0.2.128/26", "192.0.2.128")),
		},
		{
			name:  "a claim of another peer at the start of a block pushes the block's gateway on",
			peers: []Peer{peer("b", underlayB, "192.0.2.64/26"), peer("c", underlayC, "192.0.2.64/32", "192.0.2.65/32")},
			want: sorted(fdbB, fdbC,
				neigh("192.0.2.66", macB), neigh("192.0.2.64", macC), neigh("192.0.2.65", macC),
				route("192.0.2.64/26", "192.0.2.66"), route("192.0.2.64/32", "192.0.2.64"), route("192.0.2.65/32", "192.0.2.65")),
		},
		{
			name:  "a claim of the same peer shares the block's gateway",
			peers: []Peer{peer("b", underlayB, "192.0.2.64/26", "192.0.2.64/32")},
			want:  sorted(fdbB, neigh("192.0.2.64", macB), route("192.0.2.64/26", "192.0.2.64"), route("192.0.2.64/32", "192.0.2.64")),
		},
	}
	for _, tt := range tests {
		plan, err := planPeers(self, underlayA, tt.peers)
		if err != nil {
			t.Errorf("%s: planPeers: %v", tt.name, err)
			continue
		}
		if got := planLines(plan); !slices.Equal(got, tt.want) {
			t.Errorf("%s: plan =\n%s\nwant\n%s", tt.name, strings.Join(got, "\n"), strings.Join(tt.want, "\n"))
		}
	}
}

func TestPlanPeersRefusesContradictions(t *testing.T) {
	self := MACFor("a")
	withMAC := func(p Peer, mac net.HardwareAddr) Peer { p.MAC = mac; return p }
	tests := []struct {
		name  string
		peers []Peer
		want  string
	}{
		{"shared MAC", []Peer{peer("b", underlayB), withMAC(peer("c", underlayC), MACFor("b"))}, "peers b and c have the same MAC"},
		{"our MAC", []Peer{withMAC(peer("b", underlayB), self)}, "peer b: MAC " + self.String() + " is this node's"},
		{"multicast MAC", []Peer{withMAC(peer("b", underlayB), net.HardwareAddr{1, 2, 3, 4, 5, 6})}, "peer b: MAC 01:02:03:04:05:06 is not a unicast"},
		{"no MAC", []Peer{withMAC(peer("b", underlayB), nil)}, "peer b: MAC  is not a unicast"},
		{"our underlay", []Peer{peer("b", underlayA)}, "peer b: underlay address 2001:db8:46::1 is this node's"},
		{"IPv4 underlay", []Peer{peer("b", netip.MustParseAddr("198.51.100.2"))}, "peer b: underlay address 198.51.100.2"},
		{"IPv6 prefix", []Peer{peer("b", underlayB, "2001:db8::/64")}, "peer b: prefix 2001:db8::/64 is not an IPv4 prefix"},
		{"invalid prefix", []Peer{{Name: "b", Underlay: underlayB, MAC: MACFor("b"), Prefixes: []netip.Prefix{{}}}}, "peer b: prefix invalid Prefix"},
		{"shared prefix", []Peer{peer("b", underlayB, "192.0.2.64/26"), peer("c", underlayC, "192.0.2.64/26")}, "prefix 192.0.2.64/26 is owned by both peers b and c"},
		{
			name:  "no address left for a gateway",
			peers: []Peer{peer("b", underlayB, "192.0.2.64/31"), peer("c", underlayC, "192.0.2.64/32", "192.0.2.65/32")},
			want:  "prefix 192.0.2.64/31 of peer b: every address in it is another peer's gateway",
		},
	}
	for _, tt := range tests {
		_, err := planPeers(macKey(self), underlayA, tt.peers)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: planPeers = %v, want an error mentioning %q", tt.name, err, tt.want)
		}
	}
}

func sorted(lines ...string) []string {
	slices.Sort(lines)
	return lines
}

// overlayState renders what is on the VXLAN device in ns as sorted lines:
// its FDB entries, IPv4 neighbours and IPv4 routes, read with netlink
// independently of SetPeers' own reading.
func overlayState(t *testing.T, ns *netnstest.NS) []string {
	t.Helper()
	link, err := ns.Netlink().LinkByName(testVXLAN)
	if err != nil {
		t.Fatalf("VXLAN not found: %v", err)
	}
	var out []string
	fdb, err := ns.Netlink().NeighList(link.Attrs().Index, unix.AF_BRIDGE)
	if err != nil {
		t.Fatalf("listing FDB entries: %v", err)
	}
	for _, n := range fdb {
		out = append(out, fmt.Sprintf("fdb %v dst %v%s", n.HardwareAddr, n.IP, neighWords(n)))
	}
	neighs, err := ns.Netlink().NeighList(link.Attrs().Index, netlink.FAMILY_V4)
	if err != nil {
		t.Fatalf("listing neighbours: %v", err)
	}
	for _, n := range neighs {
		out = append(out, fmt.Sprintf("neigh %v lladdr %v%s", n.IP, n.HardwareAddr, neighWords(n)))
	}
	routes, err := ns.Netlink().RouteList(link, netlink.FAMILY_V4)
	if err != nil {
		t.Fatalf("listing routes: %v", err)
	}
	for _, r := range routes {
		line := fmt.Sprintf("route %v via %v", r.Dst, r.Gw)
		if r.Flags&int(netlink.FLAG_ONLINK) != 0 {
			line += " onlink"
		}
		out = append(out, line+" proto "+r.Protocol.String())
	}
	slices.Sort(out)
	return out
}

func neighWords(n netlink.Neigh) string {
	var s string
	if n.Flags&unix.NTF_SELF != 0 {
		s += " self"
	}
	if n.State == unix.NUD_PERMANENT {
		return s + " permanent"
	}
	return s + fmt.Sprintf(" state %#x", n.State)
}

func setPeers(t *testing.T, v *VXLAN, peers ...Peer) {
	t.Helper()
	if err := v.SetPeers(peers); err != nil {
		t.Fatalf("SetPeers(%v): %v", peers, err)
	}
}

// wantState is what SetPeers should leave for these peers, whose gateways
// are their prefixes' first addresses.
func wantState(peers ...Peer) []string {
	var out []string
	for _, p := range peers {
		out = append(out, fmt.Sprintf("fdb %v dst %v self permanent", p.MAC, p.Underlay))
		for _, prefix := range p.Prefixes {
			out = append(out,
				fmt.Sprintf("neigh %v lladdr %v permanent", prefix.Addr(), p.MAC),
				fmt.Sprintf("route %v via %v onlink proto static", prefix, prefix.Addr()))
		}
	}
	slices.Sort(out)
	return out
}

func checkState(t *testing.T, ns *netnstest.NS, step string, want []string) {
	t.Helper()
	if got := overlayState(t, ns); !slices.Equal(got, want) {
		t.Errorf("%s: device state =\n%s\nwant\n%s", step, strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// TestVXLANSetPeersProgramsKernel walks the device through a fleet's
// changes and reads the kernel state back after each.
func TestVXLANSetPeersProgramsKernel(t *testing.T) {
	ns, _ := underlayNS(t, "vx-peers")
	v := openVXLANInNS(t, ns, VXLANConfig{Name: testVXLAN, Local: underlayA, MAC: MACFor("a")})
	checkState(t, ns, "fresh device", nil)

	b := peer("b", underlayB, "192.0.2.64/26", "192.0.2.200/32")
	c := peer("c", underlayC, "192.0.2.128/26")
	setPeers(t, v, b, c)
	checkState(t, ns, "two peers", wantState(b, c))

	// The claim moves from b to c: re-pointed, nothing else touched.
	b2 := peer("b", underlayB, "192.0.2.64/26")
	c2 := peer("c", underlayC, "192.0.2.128/26", "192.0.2.200/32")
	setPeers(t, v, b2, c2)
	checkState(t, ns, "claim moved", wantState(b2, c2))

	// c moves to another underlay address.
	c3 := c2
	c3.Underlay = netip.MustParseAddr("2001:db8:46::33")
	setPeers(t, v, b2, c3)
	checkState(t, ns, "peer moved underlay", wantState(b2, c3))

	// c is gone: its FDB entry, neighbours and routes go with it.
	setPeers(t, v, b2)
	checkState(t, ns, "peer removed", wantState(b2))

	setPeers(t, v)
	checkState(t, ns, "no peers", nil)
}

// TestVXLANSetPeersRepairs checks that SetPeers reads the kernel, not its
// memory: entries deleted or changed behind its back come back, and a
// stale permanent entry it never made is removed.
func TestVXLANSetPeersRepairs(t *testing.T) {
	ns, _ := underlayNS(t, "vx-repair")
	v := openVXLANInNS(t, ns, VXLANConfig{Name: testVXLAN, Local: underlayA, MAC: MACFor("a")})
	b := peer("b", underlayB, "192.0.2.64/26")
	setPeers(t, v, b)
	dev := "dev " + testVXLAN
	ns.Run(t, "sh", "-c", "ip route del 192.0.2.64/26 "+dev+
		" && ip neigh replace 192.0.2.64 lladdr 02:00:00:00:00:09 nud permanent "+dev+
		" && bridge fdb del "+b.MAC.String()+" "+dev+" self"+
		" && ip neigh add 192.0.2.9 lladdr 02:00:00:00:00:09 nud permanent "+dev+
		" && bridge fdb append 02:00:00:00:00:09 "+dev+" dst 2001:db8:46::9 self permanent"+
		" && ip route add 192.0.2.8/30 via 192.0.2.9 "+dev+" onlink proto static")
	setPeers(t, v, b)
	checkState(t, ns, "after repair", wantState(b))
}

// TestVXLANSetPeersIdempotent checks that a repeated SetPeers changes
// nothing, not even for an instant (a delete and re-add would drop
// packets): the first route and neighbour events after it are those of a
// later, real change. (The kernel announces no write that leaves an entry
// as it was, so this does not count writes; SetPeers avoids those by
// comparing with what the kernel holds.)
func TestVXLANSetPeersIdempotent(t *testing.T) {
	ns, _ := underlayNS(t, "vx-idem")
	v := openVXLANInNS(t, ns, VXLANConfig{Name: testVXLAN, Local: underlayA, MAC: MACFor("a")})
	b := peer("b", underlayB, "192.0.2.64/26", "192.0.2.200/32")
	c := peer("c", underlayC, "192.0.2.128/26")
	setPeers(t, v, b, c)
	events := subscribeOverlay(t, ns)

	setPeers(t, v, b, c)
	checkState(t, ns, "after the repeated call", wantState(b, c))

	d := peer("d", netip.MustParseAddr("2001:db8:46::4"), "192.0.2.192/26")
	setPeers(t, v, b, c, d)
	if got, want := events.next(t), "neigh fdb "+d.MAC.String(); got != want {
		t.Errorf("first neighbour event = %q, want %q (the repeated SetPeers changed something)", got, want)
	}
	if got, want := events.nextRoute(t), "route 192.0.2.192/26"; got != want {
		t.Errorf("first route event = %q, want %q (the repeated SetPeers changed something)", got, want)
	}
}

// TestVXLANSetPeersRefusalChangesNothing checks that contradicting peers
// leave the programmed state alone.
func TestVXLANSetPeersRefusalChangesNothing(t *testing.T) {
	ns, _ := underlayNS(t, "vx-refusal")
	v := openVXLANInNS(t, ns, VXLANConfig{Name: testVXLAN, Local: underlayA, MAC: MACFor("a")})
	b := peer("b", underlayB, "192.0.2.64/26")
	setPeers(t, v, b)
	clash := peer("c", underlayC, "192.0.2.64/26")
	err := v.SetPeers([]Peer{b, clash})
	if want := "failed to set peers of VXLAN vx4o6: prefix 192.0.2.64/26 is owned by both peers b and c"; err == nil || err.Error() != want {
		t.Errorf("SetPeers = %v, want %q", err, want)
	}
	checkState(t, ns, "after the refusal", wantState(b))
}

// overlayEvents are the kernel's neighbour (FDB included) and route
// notifications for the VXLAN device, from subscriptions inside its
// namespace that the test closes and drains when it ends.
type overlayEvents struct {
	index  int
	neighs chan netlink.NeighUpdate
	routes chan netlink.RouteUpdate
}

func subscribeOverlay(t *testing.T, ns *netnstest.NS) *overlayEvents {
	t.Helper()
	link, err := ns.Netlink().LinkByName(testVXLAN)
	if err != nil {
		t.Fatalf("VXLAN not found: %v", err)
	}
	e := &overlayEvents{index: link.Attrs().Index, neighs: make(chan netlink.NeighUpdate, 16), routes: make(chan netlink.RouteUpdate, 16)}
	done := make(chan struct{})
	var subscribed []func() // drains a subscription's channel until its goroutine closes it
	t.Cleanup(func() {
		close(done)
		for _, drain := range subscribed {
			drain()
		}
	})
	err = ns.Do(func() error {
		if err := netlink.NeighSubscribe(e.neighs, done); err != nil {
			return err
		}
		subscribed = append(subscribed, func() {
			for range e.neighs {
			}
		})
		if err := netlink.RouteSubscribe(e.routes, done); err != nil {
			return err
		}
		subscribed = append(subscribed, func() {
			for range e.routes {
			}
		})
		return nil
	})
	if err != nil {
		t.Fatalf("subscribing to netlink events in %s: %v", ns.Name, err)
	}
	return e
}

// next returns the next neighbour event on the device: "neigh fdb MAC" or
// "neigh IP".
func (e *overlayEvents) next(t *testing.T) string {
	t.Helper()
	for {
		select {
		case u := <-e.neighs:
			if u.LinkIndex != e.index {
				continue
			}
			if u.Family == unix.AF_BRIDGE {
				return "neigh fdb " + u.HardwareAddr.String()
			}
			return fmt.Sprintf("neigh %v", u.IP)
		case <-time.After(waitTimeout):
			t.Fatal("no neighbour event on the VXLAN")
			return ""
		}
	}
}

// nextRoute returns the next route event on the device: "route DST".
func (e *overlayEvents) nextRoute(t *testing.T) string {
	t.Helper()
	for {
		select {
		case u := <-e.routes:
			if u.LinkIndex != e.index {
				continue
			}
			return fmt.Sprintf("route %v", u.Dst)
		case <-time.After(waitTimeout):
			t.Fatal("no route event on the VXLAN")
			return ""
		}
	}
}
