package offload

import (
	"bytes"
	"encoding/binary"

	"github.com/4over6d/4over6d/tun/checksum"
)

// MaxCoalescedHeader is the largest IPv4+TCP header Coalesce writes into
// its scratch buffer: IPv4 without options and TCP with the most options.
const MaxCoalescedHeader = ipv4MinHeader + 60

// segment is what Coalesce needs to know about one candidate packet.
type segment struct {
	hlen    int
	payload int
	seq     uint32
	psh     bool
}

// Coalesce decides how many packets at the start of pkts go to the kernel
// in one write; it returns n >= 1 for a non-empty pkts. With n == 1 the
// first packet is written unchanged behind a zero Header. With n > 1 the
// packets are consecutive segments of one TCP/IPv4 flow: h is their GSO
// header, head (in scratch, at least MaxCoalescedHeader bytes) the merged
// IPv4+TCP header, and the write is head followed by pkts[i][len(head):]
// for i < n. The kernel then handles them as the one packet a GRO-capable
// NIC would have built and segments again only if it must.
//
// Only what GRO would merge is merged: DF set and no IPv4 options; ACK
// with at most PSH besides (PSH ends a run); the same addresses, TOS,
// TTL, ports, acknowledgement, window, urgent pointer and TCP options;
// sequence numbers that follow on; every payload but the last exactly the
// first one's size. Each
// packet's IPv4 and TCP checksums are verified first, so a corrupt packet
// is written on its own and dropped by the kernel, never given a fresh
// checksum by the merge.
func Coalesce(pkts [][]byte, scratch []byte) (n int, h Header, head []byte) {
	if len(pkts) == 0 {
		return 0, Header{}, nil
	}
	first, ok := mergeable(pkts[0])
	if !ok || first.psh {
		return 1, Header{}, nil
	}
	mss, total := first.payload, first.payload
	n = 1
	for n < len(pkts) {
		next, ok := mergeable(pkts[n])
		if !ok || !follows(pkts[0], first, pkts[n], next, total) || next.payload > mss || first.hlen+total+next.payload > maxIPv4Len {
			break
		}
		total += next.payload
		n++
		if next.psh || next.payload < mss {
			break
		}
	}
	if n == 1 {
		return 1, Header{}, nil
	}
	head = mergedHeader(scratch, pkts[0][:first.hlen], total, pkts[n-1])
	h = Header{
		Flags:      FlagNeedsChecksum,
		GSOType:    GSOTCPv4,
		HdrLen:     uint16(first.hlen),
		GSOSize:    uint16(mss),
		CsumStart:  ipv4MinHeader,
		CsumOffset: 16,
	}
	return n, h, head
}

// mergeable parses pkt and reports whether it may take part in a merge.
func mergeable(pkt []byte) (segment, bool) {
	if len(pkt) < ipv4MinHeader || pkt[0] != 0x45 || pkt[9] != protoTCP {
		return segment{}, false // cheaply, before tcpHeaders builds an error
	}
	ihl, hlen, err := tcpHeaders(pkt)
	if err != nil || ihl != ipv4MinHeader || hlen == len(pkt) {
		return segment{}, false
	}
	ip, tcp := pkt[:ihl], pkt[ihl:]
	flags := tcp[13]
	switch {
	case int(binary.BigEndian.Uint16(ip[2:])) != len(pkt),
		ip[6] != ipFlagDF || ip[7] != 0, // DF set, MF clear, offset 0
		flags&^tcpFlagPSH != tcpFlagACK,
		binary.BigEndian.Uint16(ip[10:]) != ipHeaderChecksum(ip),
		checksum.Fold(checksum.Sum(tcp, pseudoHeader(ip, protoTCP, len(tcp)))) != 0xffff:
		return segment{}, false
	}
	return segment{
		hlen:    hlen,
		payload: len(pkt) - hlen,
		seq:     binary.BigEndian.Uint32(tcp[4:]),
		psh:     flags&tcpFlagPSH != 0,
	}, true
}

// follows reports whether pkt (described by s) continues the run that
// starts with first (described by f) and so far carries total bytes.
func follows(first []byte, f segment, pkt []byte, s segment, total int) bool {
	if s.hlen != f.hlen || s.seq != f.seq+uint32(total) {
		return false
	}
	a, b := first[ipv4MinHeader:f.hlen], pkt[ipv4MinHeader:s.hlen]
	return first[1] == pkt[1] && // TOS
		first[8] == pkt[8] && // TTL
		bytes.Equal(first[12:20], pkt[12:20]) && // addresses
		bytes.Equal(a[0:4], b[0:4]) && // ports
		bytes.Equal(a[8:12], b[8:12]) && // acknowledgement
		a[12] == b[12] && a[13]&^tcpFlagPSH == b[13]&^tcpFlagPSH && // offset, flags
		bytes.Equal(a[14:16], b[14:16]) && // window
		bytes.Equal(a[18:20], b[18:20]) && // urgent pointer (meaningless without URG, but kept exact)
		bytes.Equal(a[20:], b[20:]) // options
}

// mergedHeader writes the header of the merged packet into scratch: the
// first packet's headers with the merged total length, a fresh IPv4
// checksum, PSH if the last packet had it, and the TCP checksum field
// seeded with the pseudo-header sum for the kernel to complete.
func mergedHeader(scratch, first []byte, payload int, last []byte) []byte {
	head := scratch[:len(first)]
	copy(head, first)
	ip, tcp := head[:ipv4MinHeader], head[ipv4MinHeader:]
	binary.BigEndian.PutUint16(ip[2:], uint16(len(head)+payload))
	binary.BigEndian.PutUint16(ip[10:], ipHeaderChecksum(ip))
	tcp[13] |= last[ipv4MinHeader+13] & tcpFlagPSH
	binary.BigEndian.PutUint16(tcp[16:], checksum.Fold(pseudoHeader(ip, protoTCP, len(tcp)+payload)))
	return head
}
