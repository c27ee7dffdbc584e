package wire

import (
	"encoding/binary"
	"errors"
	"net/netip"
)

// Reasons ParseIPv4 rejects a 102 payload. They are bare sentinels, so that
// rejecting a packet never allocates and callers can count drops by reason with
// errors.Is.
var (
	// ErrNotIPv4 reports a version nibble other than 4: the tunnel carries IPv4
	// only, and the TUN would reject anything else.
	ErrNotIPv4 = errors.New("messages: not an IPv4 packet")
	// ErrTruncated reports a payload shorter than the IPv4 header or than the
	// packet's own total length, as from a client that lost framing.
	ErrTruncated = errors.New("messages: truncated IPv4 packet")
	// ErrBadHeaderLen reports an IHL below 5 (20 bytes), which no valid packet has.
	ErrBadHeaderLen = errors.New("messages: IPv4 header length below 20 bytes")
	// ErrBadTotalLen reports a total length smaller than the header itself.
	ErrBadTotalLen = errors.New("messages: IPv4 total length below header length")
)

// ipv4MinHeader is the length of an IPv4 header without options.
const ipv4MinHeader = 20

// ParseIPv4 checks that a 102 payload is an IPv4 packet before it reaches the
// TUN, and returns the addresses the router needs (the source for the
// anti-spoofing check). pkt is p[:total length]: some clients send their whole
// buffer, and only the packet itself may be written to the TUN. The header
// checksum is left to the kernel, which verifies it anyway.
func ParseIPv4(p []byte) (pkt []byte, src, dst netip.Addr, err error) {
	if len(p) == 0 {
		return nil, netip.Addr{}, netip.Addr{}, ErrTruncated
	}
	if p[0]>>4 != 4 {
		return nil, netip.Addr{}, netip.Addr{}, ErrNotIPv4
	}
	if len(p) < ipv4MinHeader {
		return nil, netip.Addr{}, netip.Addr{}, ErrTruncated
	}
	headerLen := int(p[0]&0x0f) * 4
	if headerLen < ipv4MinHeader {
		return nil, netip.Addr{}, netip.Addr{}, ErrBadHeaderLen
	}
	total := int(binary.BigEndian.Uint16(p[2:4]))
	if total < headerLen {
		return nil, netip.Addr{}, netip.Addr{}, ErrBadTotalLen
	}
	if total > len(p) {
		return nil, netip.Addr{}, netip.Addr{}, ErrTruncated
	}
	src = netip.AddrFrom4([4]byte(p[12:16]))
	dst = netip.AddrFrom4([4]byte(p[16:20]))
	return p[:total], src, dst, nil
}
