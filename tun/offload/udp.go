package offload

import (
	"encoding/binary"

	"github.com/4over6d/4over6d/tun/checksum"
)

// udpHeadLen is the IPv4 (without options) plus UDP header length of every
// datagram CoalesceUDP merges.
const udpHeadLen = ipv4MinHeader + udpHeader

// CoalesceUDP is Coalesce for UDP, for a TUN with TUN_F_USO4 (a kernel
// without UDP offload rejects the write): it decides how many datagrams at
// the start of pkts go to the kernel in one GSO_UDP_L4 write and returns
// n >= 1 for a non-empty pkts, with h, head and the write laid out as for
// Coalesce. The kernel forwards, NATs and delivers the run as one packet
// and cuts it into the datagrams again where it must (at the latest at
// the receiving socket), which is the per-datagram stack pass a 4over6d
// forwarding UDP spent most of its CPU in (docs/performance.md).
//
// Only a run the kernel's segmentation turns back into exactly the same
// bytes is merged: consecutive datagrams of one flow (addresses, ports),
// with the same TOS, TTL and fragment field (DF or nothing; no fragments),
// no IPv4 options, IP IDs counting up by one, a UDP length matching the
// IPv4 one, valid IPv4 and non-zero valid UDP checksums, and every payload
// but the last exactly the first one's size; at most MaxUDPSegments
// datagrams and 65535 bytes. The run ends at the first datagram that does
// not fit, so nothing is reordered.
func CoalesceUDP(pkts [][]byte, scratch []byte) (n int, h Header, head []byte) {
	if len(pkts) == 0 {
		return 0, Header{}, nil
	}
	size, ok := udpMergeable(pkts[0])
	if !ok {
		return 1, Header{}, nil
	}
	total := size
	n = 1
	for n < len(pkts) && n < MaxUDPSegments {
		next, ok := udpMergeable(pkts[n])
		if !ok || next > size || udpHeadLen+total+next > maxIPv4Len || !udpFollows(pkts[0], pkts[n], n) {
			break
		}
		total += next
		n++
		if next < size {
			break
		}
	}
	if n == 1 {
		return 1, Header{}, nil
	}
	head = udpMergedHeader(scratch, pkts[0][:udpHeadLen], total)
	h = Header{
		Flags:      FlagNeedsChecksum,
		GSOType:    GSOUDPL4,
		HdrLen:     udpHeadLen,
		GSOSize:    uint16(size),
		CsumStart:  ipv4MinHeader,
		CsumOffset: 6,
	}
	return n, h, head
}

// udpMergeable parses pkt and returns its payload size if it may take part
// in a merge.
func udpMergeable(pkt []byte) (payload int, ok bool) {
	if len(pkt) <= udpHeadLen || pkt[0] != 0x45 || pkt[9] != protoUDP {
		return 0, false
	}
	ip, udp := pkt[:ipv4MinHeader], pkt[ipv4MinHeader:]
	frag := binary.BigEndian.Uint16(ip[6:])
	switch {
	case int(binary.BigEndian.Uint16(ip[2:])) != len(pkt),
		int(binary.BigEndian.Uint16(udp[4:])) != len(udp),
		frag != 0 && frag != uint16(ipFlagDF)<<8, // no fragments
		binary.BigEndian.Uint16(udp[6:]) == 0,    // no checksum: the kernel would add one
		binary.BigEndian.Uint16(ip[10:]) != ipHeaderChecksum(ip),
		checksum.Fold(checksum.Sum(udp, pseudoHeader(ip, protoUDP, len(udp)))) != 0xffff:
		return 0, false
	}
	return len(pkt) - udpHeadLen, true
}

// udpFollows reports whether pkt may be the i-th datagram of the run
// starting with first: the same flow and IPv4 fields, the ID i further on.
func udpFollows(first, pkt []byte, i int) bool {
	return first[1] == pkt[1] && // TOS
		first[6] == pkt[6] && first[7] == pkt[7] && // fragment field
		first[8] == pkt[8] && // TTL
		binary.BigEndian.Uint16(pkt[4:]) == binary.BigEndian.Uint16(first[4:])+uint16(i) &&
		string(first[12:24]) == string(pkt[12:24]) // addresses and ports
}

// udpMergedHeader writes the header of the merged packet into scratch: the
// first datagram's headers with the merged IPv4 and UDP lengths, a fresh
// IPv4 checksum, and the UDP checksum field seeded with the pseudo-header
// sum of the merged length, which the kernel adjusts per datagram.
func udpMergedHeader(scratch, first []byte, payload int) []byte {
	head := scratch[:udpHeadLen]
	copy(head, first)
	ip, udp := head[:ipv4MinHeader], head[ipv4MinHeader:]
	binary.BigEndian.PutUint16(ip[2:], uint16(udpHeadLen+payload))
	binary.BigEndian.PutUint16(ip[10:], ipHeaderChecksum(ip))
	binary.BigEndian.PutUint16(udp[4:], uint16(udpHeader+payload))
	binary.BigEndian.PutUint16(udp[6:], checksum.Fold(pseudoHeader(ip, protoUDP, udpHeader+payload)))
	return head
}
