package wire

// The ICMP error the server originates as the router at the client's end
// of the tunnel: "fragmentation needed and DF set" (RFC 792, with the
// next-hop MTU of RFC 1191) for a client's packet that does not fit the TUN
// MTU and may not be fragmented, so that the client's path MTU discovery
// learns the tunnel's MTU instead of its packets vanishing. RFC 1812 says
// when a router must not answer with an error at all (ICMPErrorAllowed).

import (
	"encoding/binary"
	"net/netip"
	"slices"

	"github.com/4over6d/4over6d/tun/checksum"
)

// ICMP numbers used by the server.
const (
	// ProtoICMP is the IPv4 protocol number of ICMP.
	ProtoICMP = 1
	// ICMPTypeDestUnreachable is the ICMP type of "destination unreachable".
	ICMPTypeDestUnreachable = 3
	// ICMPCodeFragNeeded is its code for "fragmentation needed and DF set".
	ICMPCodeFragNeeded = 4
)

// IPv4 header fields the ICMP and fragmentation code read and write.
const (
	ipv4FlagDF     = 0x4000 // don't fragment
	ipv4FlagMF     = 0x2000 // more fragments
	ipv4OffsetMask = 0x1fff // fragment offset, in 8-byte units
	ipv4MaxHeader  = 60
	// icmpTOS is the TOS byte of the errors the server sends: precedence 6
	// (internetwork control), as RFC 1812 4.3.2.5 asks of ICMP errors.
	icmpTOS = 0xc0
	// icmpTTL is the TTL of the errors, the usual initial TTL of Linux.
	icmpTTL = 64
)

// ICMP message layout.
const (
	icmpHeaderLen = 8
	// icmpQuoteData is how much of the offending packet's payload an error
	// quotes after its header: RFC 792's 64 bits, which hold the ports of
	// UDP and TCP and TCP's sequence number, all a host needs to find the
	// connection the error is about.
	icmpQuoteData = 8
	// FragNeededMaxLen is the largest packet AppendFragNeeded produces:
	// its own IPv4 and ICMP headers, then a quoted header with the most
	// options IPv4 allows and 8 bytes of payload.
	FragNeededMaxLen = ipv4MinHeader + icmpHeaderLen + ipv4MaxHeader + icmpQuoteData
)

// DontFragment reports whether the DF flag of pkt, a packet ParseIPv4
// accepted, is set: such a packet must not be fragmented on its way, and
// one that does not fit is answered with "fragmentation needed".
func DontFragment(pkt []byte) bool {
	return binary.BigEndian.Uint16(pkt[6:8])&ipv4FlagDF != 0
}

// icmpQueries are the ICMP types that are not errors (RFC 792, RFC 950,
// RFC 1256): echo, router advertisement and solicitation, timestamp,
// information and address mask, requests and replies.
var icmpQueries = [256]bool{0: true, 8: true, 9: true, 10: true, 13: true, 14: true, 15: true, 16: true, 17: true, 18: true}

// ICMPErrorAllowed reports whether a router may answer pkt, a packet
// ParseIPv4 accepted, with an ICMP error (RFC 1812 4.3.2.7): not when pkt
// is itself an ICMP error (nor an ICMP message too short to tell, or of a
// type it does not know, which Linux treats as errors too), as errors about
// errors can loop; not for a fragment other than the first, since only the
// first holds the header the sender can match; not for a packet to a
// multicast or broadcast address; and not when its source does not name a
// single host.
func ICMPErrorAllowed(pkt []byte) bool {
	if len(pkt) < ipv4MinHeader {
		return false
	}
	if binary.BigEndian.Uint16(pkt[6:8])&ipv4OffsetMask != 0 {
		return false
	}
	src, dst := netip.AddrFrom4([4]byte(pkt[12:16])), netip.AddrFrom4([4]byte(pkt[16:20]))
	if !unicastHost(src) || dst.IsMulticast() || dst == netip.AddrFrom4([4]byte{255, 255, 255, 255}) {
		return false
	}
	if pkt[9] != ProtoICMP {
		return true
	}
	headerLen := int(pkt[0]&0x0f) * 4
	return len(pkt) > headerLen && icmpQueries[pkt[headerLen]]
}

// unicastHost reports whether a names one host: not "this network"
// (0.0.0.0/8), loopback, multicast, the reserved 240.0.0.0/4 or the
// limited broadcast address.
func unicastHost(a netip.Addr) bool {
	first := a.As4()[0]
	return first != 0 && first != 127 && first < 224
}

// AppendFragNeeded appends to b an IPv4 packet from src (the server's TUN
// address) to the source of pkt, a packet ParseIPv4 accepted, carrying an
// ICMP "fragmentation needed and DF set" with next-hop MTU mtu (RFC 1191)
// and quoting pkt's IPv4 header, options included, and the first 8 bytes
// of its payload (RFC 792). Both checksums are filled in. It panics if src
// is not IPv4. Callers check ICMPErrorAllowed first.
func AppendFragNeeded(b []byte, src netip.Addr, pkt []byte, mtu int) []byte {
	if !src.Is4() {
		panic("wire: ICMP error from a non-IPv4 address " + src.String())
	}
	quote := min(int(pkt[0]&0x0f)*4+icmpQuoteData, len(pkt))
	total := ipv4MinHeader + icmpHeaderLen + quote
	at := len(b)
	b = slices.Grow(b, total)[:at+total]
	ip := b[at:]
	clear(ip)
	ip[0] = 4<<4 | ipv4MinHeader/4
	ip[1] = icmpTOS | pkt[1]&0x1e // keep the offending packet's TOS bits, not its ECN
	binary.BigEndian.PutUint16(ip[2:4], uint16(total))
	// An atomic datagram (RFC 6864): DF set, so the zero ID is never used
	// for reassembly.
	binary.BigEndian.PutUint16(ip[6:8], ipv4FlagDF)
	ip[8], ip[9] = icmpTTL, ProtoICMP
	s := src.As4()
	copy(ip[12:16], s[:])
	copy(ip[16:20], pkt[12:16])
	binary.BigEndian.PutUint16(ip[10:12], checksum.Checksum(ip[:ipv4MinHeader], 0))

	icmp := ip[ipv4MinHeader:]
	icmp[0], icmp[1] = ICMPTypeDestUnreachable, ICMPCodeFragNeeded
	binary.BigEndian.PutUint16(icmp[6:8], uint16(mtu))
	copy(icmp[icmpHeaderLen:], pkt[:quote])
	binary.BigEndian.PutUint16(icmp[2:4], checksum.Checksum(icmp, 0))
	return b
}
