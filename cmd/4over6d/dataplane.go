package main

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sync"

	"github.com/4over6d/4over6d/actors"
	"github.com/4over6d/4over6d/tun"
)

// peerSetter is the VXLAN device as the data plane uses it (*tun.VXLAN).
type peerSetter interface {
	SetPeers(peers []tun.Peer) error
}

// routeTable is the TUN as the data plane uses it (*tun.Linux).
type routeTable interface {
	AddRoutes(prefixes []netip.Prefix) error
	DeleteRoutes(prefixes []netip.Prefix) error
}

// dataPlane is a fleet node's kernel side (actors.DataPlane): other nodes'
// blocks and claims go to the VXLAN device, and the single addresses this
// node claimed inside other nodes' blocks are routed back to its own TUN
// by /32 routes, which win over the peers' shorter prefixes. The engine
// calls it from one goroutine; the mutex makes it safe from any.
type dataPlane struct {
	overlay peerSetter
	tun     routeTable

	mu sync.Mutex
	// local holds the /32 routes that are on the TUN, or may be after a
	// failed AddRoutes, so a later SetLocal without them removes them.
	local map[netip.Addr]bool
}

var _ actors.DataPlane = (*dataPlane)(nil)

func newDataPlane(overlay peerSetter, dev routeTable) *dataPlane {
	return &dataPlane{overlay: overlay, tun: dev, local: map[netip.Addr]bool{}}
}

// SetPeers hands the other nodes to the VXLAN device.
func (d *dataPlane) SetPeers(peers []actors.FleetPeer) error {
	out := make([]tun.Peer, 0, len(peers))
	for _, p := range peers {
		out = append(out, tun.Peer{Name: p.Name, Underlay: p.Underlay, MAC: p.MAC, Prefixes: slices.Clone(p.Prefixes)})
	}
	if err := d.overlay.SetPeers(out); err != nil {
		return fmt.Errorf("failed to program %d fleet peers: %w", len(out), err)
	}
	return nil
}

// SetLocal makes the TUN's /32 routes exactly addrs: it adds the new ones
// and deletes those no longer given. A route that failed to go stays
// tracked, so the next call tries again; deleting one already gone is not
// an error.
func (d *dataPlane) SetLocal(addrs []netip.Addr) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	var errs []error
	want := make(map[netip.Addr]bool, len(addrs))
	for _, a := range addrs {
		if !a.Is4() {
			errs = append(errs, fmt.Errorf("failed to route %v to the TUN: not an IPv4 address", a))
			continue
		}
		want[a] = true
	}
	add, del := hostRoutes(want, d.local), hostRoutes(d.local, want)
	if len(add) > 0 {
		errs = append(errs, d.tun.AddRoutes(add))
		for _, p := range add {
			d.local[p.Addr()] = true
		}
	}
	if len(del) > 0 {
		err := d.tun.DeleteRoutes(del)
		if err == nil {
			for _, p := range del {
				delete(d.local, p.Addr())
			}
		}
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// hostRoutes are the /32 prefixes of the addresses in a but not in b,
// sorted so that the kernel sees the same calls for the same sets.
func hostRoutes(a, b map[netip.Addr]bool) []netip.Prefix {
	var out []netip.Prefix
	for addr := range a {
		if !b[addr] {
			out = append(out, netip.PrefixFrom(addr, 32))
		}
	}
	slices.SortFunc(out, func(x, y netip.Prefix) int { return x.Addr().Compare(y.Addr()) })
	return out
}
