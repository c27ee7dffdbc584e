// Package offload lets a TUN opened with IFF_VNET_HDR move TCP/IPv4 in
// 64 KiB super-packets while the tunnel itself still carries ordinary,
// MTU-sized packets. The kernel hands a reader GSO packets (one read for up
// to 45 segments) and packets whose checksum it left for "hardware" to
// finish; Splitter and CompleteChecksum turn those into packets a peer can
// use. On the way in, Coalesce merges adjacent segments of one TCP flow
// into one GSO write, so the kernel forwards (and NATs) one big packet
// instead of each segment in its own write(2): that per-packet work was
// most of the server's CPU (docs/performance.md).
//
// The layout is the legacy virtio_net_hdr of include/uapi/linux/virtio_net.h
// in native byte order, which is what a TUN uses unless TUNSETVNETLE/BE is
// set. Only IPv4 is handled, since the tunnel carries nothing else; the
// owner enables TUN_F_CSUM and TUN_F_TSO4, and where the kernel has UDP
// segmentation offload (6.2 on) TUN_F_USO4 with TUN_F_USO6 (the kernel
// takes them only together), so the kernel segments every other GSO type
// itself before a read. UDP goes the same way as TCP: Splitter cuts a
// UDP/IPv4 GSO read into datagrams, and CoalesceUDP merges a run of one
// flow's equal-sized datagrams into one GSO_UDP_L4 write.
package offload

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/4over6d/4over6d/tun/checksum"
)

// HeaderLen is the size of the virtio-net header in front of every packet
// read from or written to a TUN opened with IFF_VNET_HDR.
const HeaderLen = 10

// Header flags and GSO types used by the TUN.
const (
	// FlagNeedsChecksum says the L4 checksum is only seeded with the
	// pseudo-header and must be completed from CsumStart on.
	FlagNeedsChecksum = 1
	// GSONone marks an ordinary packet.
	GSONone = 0
	// GSOTCPv4 marks a TCP/IPv4 super-packet to be cut into GSOSize
	// payload segments.
	GSOTCPv4 = 1
	// GSOUDPL4 marks a UDP super-packet to be cut into datagrams of
	// GSOSize payload bytes (VIRTIO_NET_HDR_GSO_UDP_L4, kernel 6.2 on).
	GSOUDPL4 = 5
)

// MaxUDPSegments is the most datagrams CoalesceUDP merges into one UDP GSO
// write: the kernel's UDP_MAX_SEGMENTS, 64 before 6.9 and 128 since; the
// lower value keeps a write valid on every kernel with UDP offload.
const MaxUDPSegments = 64

const (
	ipv4MinHeader = 20
	tcpMinHeader  = 20
	udpHeader     = 8
	protoTCP      = 6
	protoUDP      = 17
	maxIPv4Len    = 65535

	tcpFlagFIN = 0x01
	tcpFlagSYN = 0x02
	tcpFlagRST = 0x04
	tcpFlagPSH = 0x08
	tcpFlagACK = 0x10
	tcpFlagURG = 0x20
	tcpFlagECE = 0x40
	tcpFlagCWR = 0x80

	ipFlagDF = 0x40 // in the high byte of the fragment field
	ipFlagMF = 0x20
)

// ErrMalformed is wrapped by every error about a packet or header the
// kernel would not have produced; the owner drops that packet and counts it.
var ErrMalformed = errors.New("malformed offload packet")

func malformed(format string, args ...any) error {
	return fmt.Errorf("%s: %w", fmt.Sprintf(format, args...), ErrMalformed)
}

// Header is a decoded virtio_net_hdr.
type Header struct {
	Flags      uint8
	GSOType    uint8
	HdrLen     uint16
	GSOSize    uint16
	CsumStart  uint16
	CsumOffset uint16
}

// Decode reads the header at the start of b.
func (h *Header) Decode(b []byte) error {
	if len(b) < HeaderLen {
		return malformed("virtio-net header of %d bytes", len(b))
	}
	h.Flags, h.GSOType = b[0], b[1]
	h.HdrLen = binary.NativeEndian.Uint16(b[2:])
	h.GSOSize = binary.NativeEndian.Uint16(b[4:])
	h.CsumStart = binary.NativeEndian.Uint16(b[6:])
	h.CsumOffset = binary.NativeEndian.Uint16(b[8:])
	return nil
}

// Encode writes the header into the first HeaderLen bytes of b.
func (h Header) Encode(b []byte) {
	b[0], b[1] = h.Flags, h.GSOType
	binary.NativeEndian.PutUint16(b[2:], h.HdrLen)
	binary.NativeEndian.PutUint16(b[4:], h.GSOSize)
	binary.NativeEndian.PutUint16(b[6:], h.CsumStart)
	binary.NativeEndian.PutUint16(b[8:], h.CsumOffset)
}

// CompleteChecksum finishes the L4 checksum of a non-GSO packet that the
// kernel marked FlagNeedsChecksum: the field at CsumStart+CsumOffset holds
// the pseudo-header sum, and the checksum over everything from CsumStart
// completes it. A packet without the flag is left alone.
func CompleteChecksum(h Header, pkt []byte) error {
	if h.Flags&FlagNeedsChecksum == 0 {
		return nil
	}
	start, field := int(h.CsumStart), int(h.CsumStart)+int(h.CsumOffset)
	if field+2 > len(pkt) || start < ipv4MinHeader {
		return malformed("checksum at %d+%d outside a %d-byte packet", h.CsumStart, h.CsumOffset, len(pkt))
	}
	check := ^checksum.Fold(checksum.Sum(pkt[start:], 0))
	if check == 0 && len(pkt) > 9 && pkt[9] == protoUDP {
		check = 0xffff // zero means "no checksum" in UDP (RFC 768)
	}
	binary.BigEndian.PutUint16(pkt[field:], check)
	return nil
}
