package tun

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// removeStaleLink deletes a persistent TUN named name, such as one left by
// `ip tuntap add` or a crashed program that set TUNSETPERSIST, so that Open
// starts from a clean interface. (The TUNs Open creates are not persistent:
// the kernel removes them when their file descriptor closes, even on
// kill -9.) It refuses to touch a non-persistent TUN, which exists only
// while a process holds it (another running server), and links of other
// types (a misconfigured name such as eth0), since those are not ours.
func removeStaleLink(links *netlink.Handle, name string) error {
	link, err := links.LinkByName(name)
	if errors.As(err, new(netlink.LinkNotFoundError)) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("failed to look up interface %s: %w", name, err)
	}
	tuntap, ok := link.(*netlink.Tuntap)
	if !ok {
		return fmt.Errorf("failed to open TUN %s: an interface of type %s has that name", name, link.Type())
	}
	if tuntap.NonPersist {
		return fmt.Errorf("failed to open TUN %s: it is in use by another process", name)
	}
	if err := links.LinkDel(link); err != nil {
		return fmt.Errorf("failed to delete stale TUN %s: %w", name, err)
	}
	return nil
}

// configureLink gives the fresh TUN its MTU and server address, turns IPv6
// off on it and brings it up, in that order so that no IPv6 traffic is ever
// generated on it.
func configureLink(links *netlink.Handle, index int, name string, cfg Config) error {
	link, err := links.LinkByIndex(index)
	if err != nil {
		return fmt.Errorf("failed to look up TUN %s: %w", name, err)
	}
	if err := links.LinkSetMTU(link, cfg.MTU); err != nil {
		return fmt.Errorf("failed to set MTU %d on TUN %s: %w", cfg.MTU, name, err)
	}
	server := netip.PrefixFrom(ServerAddr(cfg.Prefix), cfg.Prefix.Bits())
	if err := links.AddrAdd(link, &netlink.Addr{IPNet: ipNet(server)}); err != nil {
		return fmt.Errorf("failed to add address %v to TUN %s: %w", server, name, err)
	}
	if err := disableIPv6(name); err != nil {
		return err
	}
	if err := links.LinkSetUp(link); err != nil {
		return fmt.Errorf("failed to bring TUN %s up: %w", name, err)
	}
	return nil
}

// disableIPv6 stops the kernel from giving the TUN (or the VXLAN) a
// link-local address and sending router solicitations and MLD reports into
// the IPv4-only tunnel.
// The sysctl is resolved in the calling thread's network namespace; a
// kernel without IPv6 has no such file, which is fine.
func disableIPv6(name string) error {
	path := filepath.Join("/proc/sys/net/ipv6/conf", name, "disable_ipv6")
	err := setSysctl(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("failed to disable IPv6 on %s: %w", name, err)
	}
	return nil
}

// deleteLink removes the TUN by index if it outlived its file descriptor,
// which happens only if something made it persistent. Looking it up by
// index and checking the name avoids deleting a newer interface that reused
// the name.
func deleteLink(links *netlink.Handle, index int, name string) error {
	link, err := links.LinkByIndex(index)
	if errors.As(err, new(netlink.LinkNotFoundError)) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("failed to look up TUN %s: %w", name, err)
	}
	if link.Attrs().Name != name {
		return nil
	}
	if err := links.LinkDel(link); err != nil && !errors.Is(err, unix.ENODEV) {
		return fmt.Errorf("failed to delete TUN %s: %w", name, err)
	}
	return nil
}

// DefaultRouteInterface returns the name of the interface that carries the
// IPv4 default route of the main table in the calling thread's network
// namespace, so the server can log where the pool's traffic leaves now and
// warn when nothing routes it.
// With several default routes it picks the one with the lowest metric; with
// none it returns "" and no error.
func DefaultRouteInterface() (string, error) {
	filter := &netlink.Route{Table: unix.RT_TABLE_MAIN}
	routes, err := netlink.RouteListFiltered(netlink.FAMILY_V4, filter, netlink.RT_FILTER_TABLE)
	if err != nil {
		return "", fmt.Errorf("failed to list IPv4 routes: %w", err)
	}
	index := defaultRouteLink(routes)
	if index == 0 {
		return "", nil
	}
	link, err := netlink.LinkByIndex(index)
	if err != nil {
		return "", fmt.Errorf("failed to look up default route interface %d: %w", index, err)
	}
	return link.Attrs().Name, nil
}

// defaultRouteLink returns the link index of the unicast default route with
// the lowest metric, taking the first next hop of a multipath route, or 0.
func defaultRouteLink(routes []netlink.Route) int {
	index, metric := 0, 0
	for _, r := range routes {
		if r.Type != unix.RTN_UNICAST || !isDefault(r.Dst) {
			continue
		}
		link := r.LinkIndex
		if link == 0 && len(r.MultiPath) > 0 {
			link = r.MultiPath[0].LinkIndex
		}
		if link != 0 && (index == 0 || r.Priority < metric) {
			index, metric = link, r.Priority
		}
	}
	return index
}

func isDefault(dst *net.IPNet) bool {
	if dst == nil {
		return true
	}
	ones, _ := dst.Mask.Size()
	return ones == 0
}

// ipNet converts a prefix, keeping its host bits, to the form netlink takes.
func ipNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

// RemoveStaleLink deletes a leftover persistent TUN named name in the
// calling thread's network namespace (nothing to do if there is none). It
// refuses a TUN that a process holds, which is a running server's, and an
// interface of another type. Used by `4over6d cleanup`.
func RemoveStaleLink(name string) error {
	links, err := netlink.NewHandle()
	if err != nil {
		return fmt.Errorf("failed to open netlink: %w", err)
	}
	defer links.Close()
	return removeStaleLink(links, name)
}
