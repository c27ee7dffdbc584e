package tun

import (
	"cmp"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"slices"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// vxlanRouteProtocol tags the routes SetPeers installs, so that it reads
// back, and removes, only its own routes through the device.
const vxlanRouteProtocol = netlink.RouteProtocol(unix.RTPROT_STATIC)

// Peer is another node as the data plane needs it: where its VTEP is and
// which IPv4 prefixes live behind it.
type Peer struct {
	// Name is the node's fleet name, for errors.
	Name string
	// Underlay is its IPv6 underlay address, where frames for it go.
	Underlay netip.Addr
	// MAC is its VXLAN device's address (its VXLAN.MAC).
	MAC net.HardwareAddr
	// Prefixes are the IPv4 blocks and /32 claims it owns.
	Prefixes []netip.Prefix
}

// macKey is a MAC usable as a map key.
type macKey [6]byte

func (m macKey) String() string { return net.HardwareAddr(m[:]).String() }

// vtep is one FDB entry: frames for mac go to underlay.
type vtep struct {
	mac      macKey
	underlay netip.Addr
}

// vxlanState is what SetPeers manages on the device: permanent FDB
// entries, permanent IPv4 neighbours (gateway -> MAC) and its own routes
// (prefix -> gateway).
type vxlanState struct {
	fdb    map[vtep]bool
	neighs map[netip.Addr]macKey
	routes map[netip.Prefix]netip.Addr
}

func newVXLANState() vxlanState {
	return vxlanState{fdb: map[vtep]bool{}, neighs: map[netip.Addr]macKey{}, routes: map[netip.Prefix]netip.Addr{}}
}

// vxlanPlan is the state SetPeers wants, with the peers' names by MAC for
// errors.
type vxlanPlan struct {
	vxlanState
	names map[macKey]string
}

// SetPeers makes the device's FDB entries, neighbours and routes those of
// exactly these peers, the fleet's other nodes: it reads what is on the
// device, adds or replaces what is missing or changed (a prefix that moved
// to another peer is re-pointed) and removes what is no longer wanted, so
// calling it again with the same peers changes nothing, and it repairs
// entries removed behind its back. Additions come first, in the order FDB,
// neighbours, routes, so that no route ever points at an unresolved
// gateway. Peers that contradict each other (a shared MAC or prefix) or
// are malformed make it fail before it changes anything; a kernel refusal
// of one entry does not stop the others, and all refusals are returned.
func (v *VXLAN) SetPeers(peers []Peer) error {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.closed {
		return fmt.Errorf("failed to set peers of VXLAN %s: %w", v.name, ErrClosed)
	}
	want, err := planPeers(macKey(v.mac), v.local, peers)
	if err != nil {
		return fmt.Errorf("failed to set peers of VXLAN %s: %w", v.name, err)
	}
	have, err := v.installed()
	if err != nil {
		return err
	}
	return v.apply(have, want)
}

// planPeers checks the peers and computes the wanted state. Each prefix's
// gateway is its first address, except where that address is already
// another peer's gateway (a /32 claim of one peer at the start of another
// peer's block): the neighbour table maps a gateway to one MAC, so the
// block then takes its next free address. Longer prefixes choose first,
// so a /32 always gets its own address.
func planPeers(self macKey, local netip.Addr, peers []Peer) (vxlanPlan, error) {
	plan := vxlanPlan{vxlanState: newVXLANState(), names: map[macKey]string{}}
	owners := map[netip.Prefix]macKey{}
	for _, peer := range peers {
		mac, err := peer.check(self, local)
		if err != nil {
			return vxlanPlan{}, err
		}
		if other, dup := plan.names[mac]; dup {
			return vxlanPlan{}, fmt.Errorf("peers %s and %s have the same MAC %v", other, peer.Name, mac)
		}
		plan.names[mac] = peer.Name
		plan.fdb[vtep{mac, peer.Underlay}] = true
		for _, p := range peer.Prefixes {
			p = p.Masked()
			if owner, dup := owners[p]; dup && owner != mac {
				return vxlanPlan{}, fmt.Errorf("prefix %v is owned by both peers %s and %s", p, plan.names[owner], peer.Name)
			}
			owners[p] = mac
		}
	}
	return plan, plan.assignGateways(owners)
}

// check validates a peer and returns its MAC as a key.
func (p Peer) check(self macKey, local netip.Addr) (macKey, error) {
	switch {
	case !isUnderlayAddr(p.Underlay):
		return macKey{}, fmt.Errorf("peer %s: underlay address %v is not a global or unique-local IPv6 unicast address", p.Name, p.Underlay)
	case p.Underlay == local:
		return macKey{}, fmt.Errorf("peer %s: underlay address %v is this node's", p.Name, p.Underlay)
	case !isUnicastMAC(p.MAC):
		return macKey{}, fmt.Errorf("peer %s: MAC %v is not a unicast Ethernet address", p.Name, p.MAC)
	case macKey(p.MAC) == self:
		return macKey{}, fmt.Errorf("peer %s: MAC %v is this node's", p.Name, p.MAC)
	}
	for _, prefix := range p.Prefixes {
		if !prefix.IsValid() || !prefix.Addr().Is4() {
			return macKey{}, fmt.Errorf("peer %s: prefix %v is not an IPv4 prefix", p.Name, prefix)
		}
	}
	return macKey(p.MAC), nil
}

func (plan *vxlanPlan) assignGateways(owners map[netip.Prefix]macKey) error {
	prefixes := slices.SortedFunc(maps.Keys(owners), func(a, b netip.Prefix) int {
		return cmp.Or(cmp.Compare(b.Bits(), a.Bits()), a.Addr().Compare(b.Addr()))
	})
	for _, p := range prefixes {
		mac := owners[p]
		gw, ok := plan.freeGateway(p, mac)
		if !ok {
			return fmt.Errorf("prefix %v of peer %s: every address in it is another peer's gateway", p, plan.names[mac])
		}
		plan.neighs[gw] = mac
		plan.routes[p] = gw
	}
	return nil
}

// freeGateway returns the first address of p that is no other peer's
// gateway.
func (plan *vxlanPlan) freeGateway(p netip.Prefix, mac macKey) (netip.Addr, bool) {
	for gw := p.Addr(); gw.IsValid() && p.Contains(gw); gw = gw.Next() {
		if owner, taken := plan.neighs[gw]; !taken || owner == mac {
			return gw, true
		}
	}
	return netip.Addr{}, false
}

// installed reads back what SetPeers manages on the device: permanent
// FDB entries and neighbours (dynamic ones are the kernel's) and the
// routes tagged vxlanRouteProtocol.
func (v *VXLAN) installed() (vxlanState, error) {
	have := newVXLANState()
	fdb, err := v.links.NeighList(v.index, unix.AF_BRIDGE)
	if err != nil {
		return have, fmt.Errorf("failed to list FDB entries of VXLAN %s: %w", v.name, err)
	}
	for _, n := range fdb {
		underlay, ok := netip.AddrFromSlice(n.IP)
		if ok && n.Flags&unix.NTF_SELF != 0 && n.State&unix.NUD_PERMANENT != 0 && len(n.HardwareAddr) == 6 {
			have.fdb[vtep{macKey(n.HardwareAddr), underlay}] = true
		}
	}
	neighs, err := v.links.NeighList(v.index, netlink.FAMILY_V4)
	if err != nil {
		return have, fmt.Errorf("failed to list neighbours of VXLAN %s: %w", v.name, err)
	}
	for _, n := range neighs {
		gw, ok := netip.AddrFromSlice(n.IP)
		if ok && n.State&unix.NUD_PERMANENT != 0 && len(n.HardwareAddr) == 6 {
			have.neighs[gw.Unmap()] = macKey(n.HardwareAddr)
		}
	}
	routes, err := v.links.RouteListFiltered(netlink.FAMILY_V4, v.route(netip.Prefix{}, netip.Addr{}),
		netlink.RT_FILTER_OIF|netlink.RT_FILTER_TABLE|netlink.RT_FILTER_PROTOCOL)
	if err != nil {
		return have, fmt.Errorf("failed to list routes of VXLAN %s: %w", v.name, err)
	}
	for _, r := range routes {
		if r.Dst == nil {
			continue
		}
		gw, _ := netip.AddrFromSlice(r.Gw)
		have.routes[prefixOf(netlink.Addr{IPNet: r.Dst})] = gw.Unmap()
	}
	return have, nil
}

// apply turns have into want: additions and changes first, then removals.
func (v *VXLAN) apply(have vxlanState, want vxlanPlan) error {
	var errs []error
	note := func(err error) {
		if err != nil {
			errs = append(errs, err)
		}
	}
	for e := range want.fdb {
		if !have.fdb[e] {
			note(v.setFDB(e, want.names[e.mac]))
		}
	}
	for gw, mac := range want.neighs {
		if old, ok := have.neighs[gw]; !ok || old != mac {
			note(v.setNeigh(gw, mac, want.names[mac]))
		}
	}
	for p, gw := range want.routes {
		if old, ok := have.routes[p]; !ok || old != gw {
			note(v.setRoute(p, gw, want.names[want.neighs[gw]]))
		}
	}
	for p, gw := range have.routes {
		if _, ok := want.routes[p]; !ok {
			note(v.deleteRoute(p, gw))
		}
	}
	for gw := range have.neighs {
		if _, ok := want.neighs[gw]; !ok {
			note(v.deleteNeigh(gw))
		}
	}
	for e := range have.fdb {
		if !want.fdb[e] {
			note(v.deleteFDB(e))
		}
	}
	return errors.Join(errs...)
}

// fdbEntry is `bridge fdb replace MAC dev VX dst UNDERLAY self permanent`;
// replacing an entry of the same MAC moves its destination.
func (v *VXLAN) fdbEntry(e vtep) *netlink.Neigh {
	return &netlink.Neigh{
		LinkIndex:    v.index,
		Family:       unix.AF_BRIDGE,
		State:        unix.NUD_PERMANENT,
		Flags:        unix.NTF_SELF,
		IP:           e.underlay.AsSlice(),
		HardwareAddr: net.HardwareAddr(e.mac[:]),
	}
}

func (v *VXLAN) setFDB(e vtep, peer string) error {
	if err := v.links.NeighSet(v.fdbEntry(e)); err != nil {
		return fmt.Errorf("failed to add FDB entry %v -> %v of peer %s to VXLAN %s: %w", e.mac, e.underlay, peer, v.name, err)
	}
	return nil
}

func (v *VXLAN) deleteFDB(e vtep) error {
	err := v.links.NeighDel(v.fdbEntry(e))
	if err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("failed to delete FDB entry %v -> %v from VXLAN %s: %w", e.mac, e.underlay, v.name, err)
	}
	return nil
}

// neigh is `ip neigh replace GW lladdr MAC dev VX nud permanent`.
func (v *VXLAN) neigh(gw netip.Addr, mac macKey) *netlink.Neigh {
	n := &netlink.Neigh{LinkIndex: v.index, Family: netlink.FAMILY_V4, IP: gw.AsSlice()}
	if mac != (macKey{}) {
		n.State, n.HardwareAddr = unix.NUD_PERMANENT, net.HardwareAddr(mac[:])
	}
	return n
}

func (v *VXLAN) setNeigh(gw netip.Addr, mac macKey, peer string) error {
	if err := v.links.NeighSet(v.neigh(gw, mac)); err != nil {
		return fmt.Errorf("failed to add neighbour %v -> %v of peer %s to VXLAN %s: %w", gw, mac, peer, v.name, err)
	}
	return nil
}

func (v *VXLAN) deleteNeigh(gw netip.Addr) error {
	err := v.links.NeighDel(v.neigh(gw, macKey{}))
	if err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("failed to delete neighbour %v from VXLAN %s: %w", gw, v.name, err)
	}
	return nil
}

// route is `ip route replace PREFIX via GW dev VX onlink proto static`:
// onlink because the gateway is on no subnet of the device, which has no
// address.
func (v *VXLAN) route(p netip.Prefix, gw netip.Addr) *netlink.Route {
	r := &netlink.Route{LinkIndex: v.index, Table: unix.RT_TABLE_MAIN, Protocol: vxlanRouteProtocol}
	if p.IsValid() {
		r.Dst = ipNet(p)
	}
	if gw.IsValid() {
		r.Gw, r.Flags = gw.AsSlice(), int(netlink.FLAG_ONLINK)
	}
	return r
}

func (v *VXLAN) setRoute(p netip.Prefix, gw netip.Addr, peer string) error {
	if err := v.links.RouteReplace(v.route(p, gw)); err != nil {
		return fmt.Errorf("failed to route %v via %v of peer %s on VXLAN %s: %w", p, gw, peer, v.name, err)
	}
	return nil
}

func (v *VXLAN) deleteRoute(p netip.Prefix, gw netip.Addr) error {
	err := v.links.RouteDel(v.route(p, gw))
	if err != nil && !errors.Is(err, unix.ESRCH) {
		return fmt.Errorf("failed to delete route to %v via %v from VXLAN %s: %w", p, gw, v.name, err)
	}
	return nil
}
