package tun

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// hostBits is the prefix length of a client's tunnel address: the client
// owns one address and reaches everything else through routes via the
// device, so no connected subnet is implied.
const hostBits = 32

// ClientConfig describes the TUN a tunnel client owns: its name, its MTU
// and the address the server leased to it. Unlike Config there is no pool:
// the client holds a single address.
type ClientConfig struct {
	// Name is the kernel interface name, at most 15 bytes.
	Name string
	// MTU is the interface MTU, between 68 and MaxPacket.
	MTU int
	// Addr is the leased IPv4 address, assigned as a /32.
	Addr netip.Addr
	// Offload asks for checksum and TCP segmentation offload, as in
	// Config.
	Offload bool
}

func (cfg ClientConfig) validate() error {
	switch {
	case cfg.Name == "" || len(cfg.Name) >= unix.IFNAMSIZ:
		return fmt.Errorf("failed to open TUN: name %q must have 1 to %d bytes", cfg.Name, unix.IFNAMSIZ-1)
	case cfg.MTU < minMTU || cfg.MTU > MaxPacket:
		return fmt.Errorf("failed to open TUN %s: MTU %d is outside %d..%d", cfg.Name, cfg.MTU, minMTU, MaxPacket)
	case !cfg.Addr.Is4():
		return fmt.Errorf("failed to open TUN %s: address %v is not IPv4", cfg.Name, cfg.Addr)
	}
	return nil
}

// OpenClient creates a client's TUN interface cfg.Name in the calling
// thread's network namespace with cfg.Addr/32, the MTU, IPv6 disabled and
// the link up. Stale persistent TUNs are handled as by Open, and the TUN is
// likewise not persistent, so it disappears when the client dies. Routes
// are added separately (AddRoutes), since which ones is the client's policy.
func OpenClient(cfg ClientConfig) (*Linux, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	links, err := netlink.NewHandle()
	if err != nil {
		return nil, fmt.Errorf("failed to open netlink handle: %w", err)
	}
	dev, err := openClient(links, cfg)
	if err != nil {
		links.Close()
		return nil, err
	}
	return dev, nil
}

func openClient(links *netlink.Handle, cfg ClientConfig) (*Linux, error) {
	dev, err := create(links, cfg.Name, cfg.MTU, cfg.Offload)
	if err != nil {
		return nil, err
	}
	if err := dev.configureClient(cfg.Addr); err != nil {
		dev.file.Close()
		return nil, err
	}
	return dev, nil
}

// configureClient sets MTU, address and IPv6 off before bringing the link
// up, so that no IPv6 traffic is ever generated on it.
func (d *Linux) configureClient(addr netip.Addr) error {
	link, err := d.links.LinkByIndex(d.index)
	if err != nil {
		return fmt.Errorf("failed to look up TUN %s: %w", d.name, err)
	}
	if err := d.links.LinkSetMTU(link, d.mtu); err != nil {
		return fmt.Errorf("failed to set MTU %d on TUN %s: %w", d.mtu, d.name, err)
	}
	if err := d.addHostAddr(link, addr); err != nil {
		return err
	}
	if err := disableIPv6(d.name); err != nil {
		return err
	}
	if err := d.links.LinkSetUp(link); err != nil {
		return fmt.Errorf("failed to bring TUN %s up: %w", d.name, err)
	}
	return nil
}

// ReplaceAddr makes addr/32 the only IPv4 address of the device, for a
// client whose server leased it a different address after a reconnect. The
// new address is added before the old ones are removed: the kernel flushes
// every route through a device that loses its last IPv4 address, and the
// client's routes must survive the change.
func (d *Linux) ReplaceAddr(addr netip.Addr) error {
	if !addr.Is4() {
		return fmt.Errorf("failed to set address of TUN %s: %v is not IPv4", d.name, addr)
	}
	link, err := d.links.LinkByIndex(d.index)
	if err != nil {
		return fmt.Errorf("failed to look up TUN %s: %w", d.name, err)
	}
	old, err := d.links.AddrList(link, netlink.FAMILY_V4)
	if err != nil {
		return fmt.Errorf("failed to list addresses of TUN %s: %w", d.name, err)
	}
	want := netip.PrefixFrom(addr, hostBits)
	if err := d.addHostAddr(link, addr); err != nil && !errors.Is(err, unix.EEXIST) {
		return err
	}
	for _, a := range old {
		if prefixOf(a) == want {
			continue
		}
		if err := d.links.AddrDel(link, &a); err != nil {
			return fmt.Errorf("failed to remove address %v from TUN %s: %w", a.IPNet, d.name, err)
		}
	}
	return nil
}

func (d *Linux) addHostAddr(link netlink.Link, addr netip.Addr) error {
	p := netip.PrefixFrom(addr, hostBits)
	if err := d.links.AddrAdd(link, &netlink.Addr{IPNet: ipNet(p)}); err != nil {
		return fmt.Errorf("failed to add address %v to TUN %s: %w", p, d.name, err)
	}
	return nil
}

// prefixOf converts a netlink address back to a prefix, or the zero
// Prefix if it is malformed.
func prefixOf(a netlink.Addr) netip.Prefix {
	ip, ok := netip.AddrFromSlice(a.IP)
	if !ok {
		return netip.Prefix{}
	}
	ones, _ := a.Mask.Size()
	return netip.PrefixFrom(ip.Unmap(), ones)
}
