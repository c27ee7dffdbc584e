package tun

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// AddRoutes routes each IPv4 prefix through the device in the main table.
// The routes name no preferred source: the kernel takes the device's
// address, so they survive ReplaceAddr (the kernel flushes routes whose
// source address is removed). Existing routes to the same prefixes are
// replaced, which makes the call idempotent. Routes disappear with the
// device, but a client that keeps its TUN across a change of routes
// removes the old ones with DeleteRoutes.
func (d *Linux) AddRoutes(prefixes []netip.Prefix) error {
	for _, p := range prefixes {
		if !p.Addr().Is4() {
			return fmt.Errorf("failed to add route to %v via TUN %s: not an IPv4 prefix", p, d.name)
		}
		if err := d.links.RouteReplace(d.route(p)); err != nil {
			return fmt.Errorf("failed to add route to %v via TUN %s: %w", p, d.name, err)
		}
	}
	return nil
}

// DeleteRoutes removes the routes AddRoutes installed for prefixes. Routes
// that are already gone (with the device, or removed by an operator) are
// not an error, so cleanup can always run.
func (d *Linux) DeleteRoutes(prefixes []netip.Prefix) error {
	var errs []error
	for _, p := range prefixes {
		err := d.links.RouteDel(d.route(p))
		if err != nil && !errors.Is(err, unix.ESRCH) && !errors.Is(err, unix.ENODEV) {
			errs = append(errs, fmt.Errorf("failed to delete route to %v via TUN %s: %w", p, d.name, err))
		}
	}
	return errors.Join(errs...)
}

func (d *Linux) route(p netip.Prefix) *netlink.Route {
	return &netlink.Route{
		LinkIndex: d.index,
		Dst:       ipNet(p.Masked()),
		Scope:     netlink.SCOPE_LINK,
		Table:     unix.RT_TABLE_MAIN,
	}
}
