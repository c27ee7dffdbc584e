package tun

import (
	"encoding/binary"
	"net/netip"
)

// Protocol numbers and ICMP types the tests build and parse.
const (
	protoICMP       = 1
	protoUDP        = 17
	icmpEchoReply   = 0
	icmpEchoRequest = 8
	ipv4HeaderLen   = 20
	udpHeaderLen    = 8
	icmpHeaderLen   = 8
)

// ipv4Packet is the part of a parsed IPv4 packet the tests look at.
type ipv4Packet struct {
	src, dst netip.Addr
	proto    byte
	payload  []byte
}

// parseIPv4 returns the header fields of an IPv4 packet without options
// handling beyond skipping them; ok is false for anything else (IPv6, runts).
func parseIPv4(b []byte) (ipv4Packet, bool) {
	if len(b) < ipv4HeaderLen || b[0]>>4 != 4 {
		return ipv4Packet{}, false
	}
	hl := int(b[0]&0x0f) * 4
	total := int(binary.BigEndian.Uint16(b[2:4]))
	if hl < ipv4HeaderLen || total < hl || total > len(b) {
		return ipv4Packet{}, false
	}
	return ipv4Packet{
		src:     netip.AddrFrom4([4]byte(b[12:16])),
		dst:     netip.AddrFrom4([4]byte(b[16:20])),
		proto:   b[9],
		payload: b[hl:total],
	}, true
}

// udpPorts returns the source and destination ports of a UDP payload.
func udpPorts(udp []byte) (src, dst uint16) {
	return binary.BigEndian.Uint16(udp[0:2]), binary.BigEndian.Uint16(udp[2:4])
}

// buildIPv4 prepends a 20-byte header with a valid checksum to payload.
func buildIPv4(src, dst netip.Addr, proto byte, payload []byte) []byte {
	b := make([]byte, ipv4HeaderLen+len(payload))
	b[0] = 0x45
	binary.BigEndian.PutUint16(b[2:4], uint16(len(b)))
	b[8] = 64
	b[9] = proto
	s, d := src.As4(), dst.As4()
	copy(b[12:16], s[:])
	copy(b[16:20], d[:])
	binary.BigEndian.PutUint16(b[10:12], checksum(b[:ipv4HeaderLen], 0))
	copy(b[ipv4HeaderLen:], payload)
	return b
}

// buildUDP returns a complete IPv4/UDP packet whose UDP checksum covers the
// pseudo-header, so the receiving kernel accepts it.
func buildUDP(src, dst netip.AddrPort, payload []byte) []byte {
	udp := make([]byte, udpHeaderLen+len(payload))
	binary.BigEndian.PutUint16(udp[0:2], src.Port())
	binary.BigEndian.PutUint16(udp[2:4], dst.Port())
	binary.BigEndian.PutUint16(udp[4:6], uint16(len(udp)))
	copy(udp[udpHeaderLen:], payload)
	sum := checksum(udp, sumWords(udpPseudoHeader(src.Addr(), dst.Addr(), len(udp)), 0))
	if sum == 0 {
		sum = 0xffff
	}
	binary.BigEndian.PutUint16(udp[6:8], sum)
	return buildIPv4(src.Addr(), dst.Addr(), protoUDP, udp)
}

func udpPseudoHeader(src, dst netip.Addr, udpLen int) []byte {
	pseudo := make([]byte, 0, 12)
	pseudo = append(pseudo, src.AsSlice()...)
	pseudo = append(pseudo, dst.AsSlice()...)
	pseudo = append(pseudo, 0, protoUDP)
	return binary.BigEndian.AppendUint16(pseudo, uint16(udpLen))
}

// udpChecksumValid verifies the UDP checksum of p, which the kernel leaves
// unfinished for a TUN with checksum offload to complete.
func udpChecksumValid(p ipv4Packet) bool {
	return checksum(p.payload, sumWords(udpPseudoHeader(p.src, p.dst, len(p.payload)), 0)) == 0
}

// buildEchoRequest returns an IPv4 ICMP echo request.
func buildEchoRequest(src, dst netip.Addr, id, seq uint16, data []byte) []byte {
	icmp := make([]byte, icmpHeaderLen+len(data))
	icmp[0] = icmpEchoRequest
	binary.BigEndian.PutUint16(icmp[4:6], id)
	binary.BigEndian.PutUint16(icmp[6:8], seq)
	copy(icmp[icmpHeaderLen:], data)
	binary.BigEndian.PutUint16(icmp[2:4], checksum(icmp, 0))
	return buildIPv4(src, dst, protoICMP, icmp)
}

// checksum is the Internet checksum (RFC 1071) of b, starting from a
// partial sum.
func checksum(b []byte, initial uint32) uint16 {
	sum := sumWords(b, initial)
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	return ^uint16(sum)
}

func sumWords(b []byte, sum uint32) uint32 {
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(binary.BigEndian.Uint16(b[i : i+2]))
	}
	if len(b)%2 == 1 {
		sum += uint32(b[len(b)-1]) << 8
	}
	return sum
}
