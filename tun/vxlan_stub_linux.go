package tun

// TEMPORARY: replaced by the vxlan branch. These are the declarations
// cmd/4over6d codes against, so that it compiles before tun/vxlan_linux.go
// lands; nothing here touches the kernel.

import (
	"errors"
	"net"
	"net/netip"
)

// VXLANConfig describes the node's overlay device (stub).
type VXLANConfig struct {
	Name  string
	VNI   int
	Port  int
	Local netip.Addr
	MTU   int
	MAC   net.HardwareAddr
}

// Peer is another node as the overlay needs it (stub).
type Peer struct {
	Name     string
	Underlay netip.Addr
	MAC      net.HardwareAddr
	Prefixes []netip.Prefix
}

// VXLAN is the node's overlay device (stub).
type VXLAN struct{}

// OpenVXLAN creates nothing (stub).
func OpenVXLAN(cfg VXLANConfig) (*VXLAN, error) { return &VXLAN{}, nil }

// MACFor derives a node's overlay MAC from its name (stub: a fixed one).
func MACFor(node string) net.HardwareAddr { return net.HardwareAddr{0x02, 0, 0, 0, 0, 1} }

// Name is the device name (stub).
func (v *VXLAN) Name() string { return "" }

// MAC is the device address (stub).
func (v *VXLAN) MAC() net.HardwareAddr { return nil }

// MTU is the device MTU (stub).
func (v *VXLAN) MTU() int { return 0 }

// SetPeers programs nothing (stub).
func (v *VXLAN) SetPeers(peers []Peer) error { return errors.New("vxlan: not implemented yet") }

// Close removes nothing (stub).
func (v *VXLAN) Close() error { return nil }

// RemoveStaleVXLAN removes nothing (stub).
func RemoveStaleVXLAN(name string) error { return nil }
