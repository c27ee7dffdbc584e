package tun

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sync"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// The data plane between fleet nodes: each node owns one VXLAN device over
// its IPv6 underlay and programs it statically from the fleet's state, the
// way flannel's vxlan backend does, so that client-to-client traffic
// between nodes never passes through etcd, the actors or a tunnel of ours:
//
//  1. OpenVXLAN creates the device (no multicast group, no learning) on the
//     link that holds the node's underlay address.
//  2. SetPeers programs, for every other node, an FDB entry (its VTEP MAC
//     -> its underlay address), and for each IPv4 prefix it owns a route
//     `PREFIX via GW dev VX onlink` plus a permanent neighbour GW -> MAC.
//  3. The kernel then routes a packet for a peer's client into the VXLAN,
//     which resolves the route's gateway to the peer's MAC from the
//     neighbour table and the MAC to the peer's underlay address from the
//     FDB, and sends the frame there over UDP.

// Defaults of VXLANConfig.
const (
	// DefaultVNI is the VXLAN network identifier of the fleet's overlay
	// when VXLANConfig.VNI is 0. Any value shared by all nodes would do;
	// one of its own keeps the overlay apart from other VXLANs on the
	// same underlay and port.
	DefaultVNI = 4604
	// DefaultVXLANPort is the IANA VXLAN port, used when VXLANConfig.Port
	// is 0 (the kernel's own default, 8472, predates the assignment).
	DefaultVXLANPort = 4789
	// VXLANOverhead is what VXLAN over IPv6 adds to each inner IPv4
	// packet: IPv6 (40), UDP (8), VXLAN (8) and Ethernet (14) headers.
	VXLANOverhead = 70
)

// maxVNI is the largest 24-bit VXLAN network identifier.
const maxVNI = 1<<24 - 1

// VXLANConfig describes the node's overlay device.
type VXLANConfig struct {
	// Name is the kernel interface name, e.g. "4o6vx", at most 15 bytes.
	Name string
	// VNI is the VXLAN network identifier, the same on every node of a
	// fleet; 0 means DefaultVNI.
	VNI int
	// Port is the UDP port VXLAN frames are sent to and received on, the
	// same on every node; 0 means DefaultVXLANPort.
	Port int
	// Local is this node's IPv6 underlay address. It must be configured
	// on a link, which becomes the VXLAN's underlay device: frames leave
	// by it, and its MTU bounds the overlay's.
	Local netip.Addr
	// MTU is the overlay MTU; 0 means the underlay link's MTU minus
	// VXLANOverhead, the most that fits without fragmenting the underlay.
	MTU int
	// MAC is the device's address, which peers program as this node's
	// VTEP. Callers pass MACFor(node) so that it survives restarts; nil
	// keeps the random address the kernel picks, which MAC reports.
	MAC net.HardwareAddr
}

// VXLAN is the node's overlay device. SetPeers and Close may be called
// from any goroutine: the netlink handle was opened in the namespace
// OpenVXLAN ran in.
type VXLAN struct {
	name  string
	index int
	mac   net.HardwareAddr
	mtu   int
	local netip.Addr

	mu     sync.Mutex // serialises SetPeers and Close
	links  *netlink.Handle
	closed bool
}

// OpenVXLAN creates the VXLAN device cfg.Name in the calling thread's
// network namespace, on the link that holds cfg.Local, with learning off
// and no multicast group (every peer is programmed by SetPeers), sets its
// MAC and MTU, turns IPv6 off on it (the overlay carries the pool's IPv4
// only) and brings it up. A VXLAN of the same name is a leftover of a
// killed node and is replaced; a link of another type makes it fail.
func OpenVXLAN(cfg VXLANConfig) (*VXLAN, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	links, err := netlink.NewHandle()
	if err != nil {
		return nil, fmt.Errorf("failed to open netlink handle: %w", err)
	}
	v, err := openVXLAN(links, cfg)
	if err != nil {
		links.Close()
		return nil, err
	}
	return v, nil
}

func (cfg VXLANConfig) withDefaults() VXLANConfig {
	if cfg.VNI == 0 {
		cfg.VNI = DefaultVNI
	}
	if cfg.Port == 0 {
		cfg.Port = DefaultVXLANPort
	}
	return cfg
}

func (cfg VXLANConfig) validate() error {
	switch {
	case cfg.Name == "" || len(cfg.Name) >= unix.IFNAMSIZ:
		return fmt.Errorf("failed to open VXLAN: name %q must have 1 to %d bytes", cfg.Name, unix.IFNAMSIZ-1)
	case cfg.VNI < 1 || cfg.VNI > maxVNI:
		return fmt.Errorf("failed to open VXLAN %s: VNI %d is outside 1..%d", cfg.Name, cfg.VNI, maxVNI)
	case cfg.Port < 1 || cfg.Port > 65535:
		return fmt.Errorf("failed to open VXLAN %s: port %d is outside 1..65535", cfg.Name, cfg.Port)
	case !isUnderlayAddr(cfg.Local):
		return fmt.Errorf("failed to open VXLAN %s: local address %v is not a global or unique-local IPv6 unicast address", cfg.Name, cfg.Local)
	case cfg.MTU != 0 && (cfg.MTU < minMTU || cfg.MTU > MaxPacket):
		return fmt.Errorf("failed to open VXLAN %s: MTU %d is outside %d..%d", cfg.Name, cfg.MTU, minMTU, MaxPacket)
	case cfg.MAC != nil && !isUnicastMAC(cfg.MAC):
		return fmt.Errorf("failed to open VXLAN %s: MAC %v is not a unicast Ethernet address", cfg.Name, cfg.MAC)
	}
	return nil
}

// isUnderlayAddr accepts the IPv6 addresses a VXLAN can be sent from to
// another node: not link-local (the kernel would need a zone for it), not
// loopback, multicast or unspecified, not IPv4-mapped.
func isUnderlayAddr(a netip.Addr) bool {
	return a.Is6() && !a.Is4In6() && a.IsGlobalUnicast()
}

// isUnicastMAC accepts a non-zero 48-bit address with the group bit clear.
func isUnicastMAC(mac net.HardwareAddr) bool {
	return len(mac) == 6 && mac[0]&1 == 0 && [6]byte(mac) != [6]byte{}
}

// MACFor derives the VXLAN MAC of a node from its fleet-unique name: a
// locally administered unicast address, the same on every start, so that
// peers' FDB and neighbour entries stay right across a restart.
func MACFor(node string) net.HardwareAddr {
	sum := sha256.Sum256([]byte("4over6d vxlan mac\x00" + node))
	mac := net.HardwareAddr(sum[:6])
	mac[0] = mac[0]&^0x01 | 0x02
	return mac
}

func openVXLAN(links *netlink.Handle, cfg VXLANConfig) (*VXLAN, error) {
	underlay, err := underlayLink(links, cfg.Local)
	if err != nil {
		return nil, fmt.Errorf("failed to open VXLAN %s: %w", cfg.Name, err)
	}
	mtu, err := overlayMTU(cfg, underlay)
	if err != nil {
		return nil, err
	}
	if err := removeStaleVXLAN(links, cfg.Name); err != nil {
		return nil, err
	}
	link, err := createVXLAN(links, cfg, underlay, mtu)
	if err != nil {
		return nil, err
	}
	v := &VXLAN{name: cfg.Name, index: link.Attrs().Index, mac: link.Attrs().HardwareAddr, mtu: mtu, local: cfg.Local, links: links}
	if err := v.bringUp(link); err != nil {
		return nil, errors.Join(err, v.deleteLink())
	}
	return v, nil
}

// underlayLink finds the link that holds the local address, which frames
// to other nodes leave by.
func underlayLink(links *netlink.Handle, local netip.Addr) (netlink.Link, error) {
	addrs, err := links.AddrList(nil, netlink.FAMILY_V6)
	if err != nil {
		return nil, fmt.Errorf("failed to list IPv6 addresses: %w", err)
	}
	for _, a := range addrs {
		if ip, ok := netip.AddrFromSlice(a.IP); ok && ip == local {
			link, err := links.LinkByIndex(a.LinkIndex)
			if err != nil {
				return nil, fmt.Errorf("failed to look up the link of %v: %w", local, err)
			}
			return link, nil
		}
	}
	return nil, fmt.Errorf("local address %v is not configured on any interface", local)
}

// overlayMTU is cfg.MTU, or the largest MTU whose frames fit the underlay.
// A larger one would make the kernel fragment every full-sized frame.
func overlayMTU(cfg VXLANConfig, underlay netlink.Link) (int, error) {
	limit := underlay.Attrs().MTU - VXLANOverhead
	switch {
	case underlay.Attrs().Flags&net.FlagLoopback != 0:
		return 0, fmt.Errorf("failed to open VXLAN %s: local address %v is on loopback %s, not on the link that reaches the other nodes", cfg.Name, cfg.Local, underlay.Attrs().Name)
	case limit < minMTU:
		return 0, fmt.Errorf("failed to open VXLAN %s: underlay %s has MTU %d, too small for VXLAN", cfg.Name, underlay.Attrs().Name, underlay.Attrs().MTU)
	case cfg.MTU == 0:
		return limit, nil
	case cfg.MTU > limit:
		return 0, fmt.Errorf("failed to open VXLAN %s: MTU %d is larger than underlay %s's MTU %d minus %d", cfg.Name, cfg.MTU, underlay.Attrs().Name, underlay.Attrs().MTU, VXLANOverhead)
	}
	return cfg.MTU, nil
}

// createVXLAN adds the device with its final MTU and MAC, and reads it
// back for the MAC the kernel chose when cfg.MAC is nil.
func createVXLAN(links *netlink.Handle, cfg VXLANConfig, underlay netlink.Link, mtu int) (netlink.Link, error) {
	vx := &netlink.Vxlan{
		LinkAttrs:    netlink.LinkAttrs{Name: cfg.Name, MTU: mtu, HardwareAddr: cfg.MAC},
		VxlanId:      cfg.VNI,
		VtepDevIndex: underlay.Attrs().Index,
		SrcAddr:      cfg.Local.AsSlice(),
		Port:         cfg.Port,
		Learning:     false,
		UDPCSum:      true,
	}
	if err := links.LinkAdd(vx); err != nil {
		return nil, fmt.Errorf("failed to create VXLAN %s on %s: %w", cfg.Name, underlay.Attrs().Name, err)
	}
	link, err := links.LinkByName(cfg.Name)
	if err != nil {
		return nil, fmt.Errorf("failed to look up VXLAN %s: %w", cfg.Name, err)
	}
	return link, nil
}

// bringUp turns IPv6 off before the link goes up, so the kernel never
// gives it a link-local address or sends router solicitations into it.
func (v *VXLAN) bringUp(link netlink.Link) error {
	if err := disableIPv6(v.name); err != nil {
		return err
	}
	if err := v.links.LinkSetUp(link); err != nil {
		return fmt.Errorf("failed to bring VXLAN %s up: %w", v.name, err)
	}
	return nil
}

// Name returns the kernel interface name, for the nftables table and logs.
func (v *VXLAN) Name() string { return v.name }

// MAC returns the device's address, which the node publishes so that its
// peers can program it as this node's VTEP.
func (v *VXLAN) MAC() net.HardwareAddr { return slices.Clone(v.mac) }

// MTU returns the overlay MTU, for the MSS clamp of traffic leaving by it.
func (v *VXLAN) MTU() int { return v.mtu }

// Close deletes the device, which takes its routes, neighbours and FDB
// entries with it. Later calls return nil.
func (v *VXLAN) Close() error {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.closed {
		return nil
	}
	v.closed = true
	defer v.links.Close()
	return v.deleteLink()
}

// deleteLink removes the device by index, checking the name so that a
// newer interface that reused the index is left alone.
func (v *VXLAN) deleteLink() error {
	link, err := v.links.LinkByIndex(v.index)
	if errors.As(err, new(netlink.LinkNotFoundError)) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("failed to look up VXLAN %s: %w", v.name, err)
	}
	if link.Attrs().Name != v.name {
		return nil
	}
	if err := v.links.LinkDel(link); err != nil && !errors.Is(err, unix.ENODEV) {
		return fmt.Errorf("failed to delete VXLAN %s: %w", v.name, err)
	}
	return nil
}

// RemoveStaleVXLAN deletes the VXLAN device named name from the calling
// thread's network namespace if there is one (a node killed before it
// could close it), for `4over6d cleanup`. An interface of another type
// with that name is not ours and makes it fail.
func RemoveStaleVXLAN(name string) error {
	links, err := netlink.NewHandle()
	if err != nil {
		return fmt.Errorf("failed to open netlink handle: %w", err)
	}
	defer links.Close()
	return removeStaleVXLAN(links, name)
}

func removeStaleVXLAN(links *netlink.Handle, name string) error {
	link, err := links.LinkByName(name)
	if errors.As(err, new(netlink.LinkNotFoundError)) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("failed to look up interface %s: %w", name, err)
	}
	if _, ok := link.(*netlink.Vxlan); !ok {
		return fmt.Errorf("failed to remove stale VXLAN %s: an interface of type %s has that name", name, link.Type())
	}
	if err := links.LinkDel(link); err != nil {
		return fmt.Errorf("failed to delete stale VXLAN %s: %w", name, err)
	}
	return nil
}
