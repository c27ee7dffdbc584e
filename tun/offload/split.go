package offload

import (
	"encoding/binary"

	"github.com/4over6d/4over6d/tun/checksum"
)

// Splitter cuts one TCP/IPv4 or UDP/IPv4 GSO packet into the segments the
// kernel would have put on a wire, one per Next call, so a reader can
// spread a 64 KiB read over several batch buffers. Each segment gets its
// own total length, IP ID (incremented per segment) and header checksum;
// a TCP segment its sequence number and a complete TCP checksum, with FIN
// and PSH on the last segment only and CWR on the first only, as in the
// kernel's own segmentation; a UDP datagram its UDP length and a complete
// UDP checksum (never 0, which would mean none).
//
// The Splitter points into the packet given to Reset, so that buffer must
// not be reused until Done reports true.
type Splitter struct {
	pkt  []byte
	ihl  int // IPv4 header length
	hlen int // IPv4 plus TCP or UDP header length
	udp  bool
	mss  int
	off  int // payload bytes already emitted
	seg  int // segments already emitted
}

// Reset starts splitting pkt, described by h. It fails, leaving the
// Splitter done, for anything but a well-formed TCP/IPv4 or UDP/IPv4 GSO
// packet.
func (s *Splitter) Reset(h Header, pkt []byte) error {
	*s = Splitter{}
	var ihl, hlen int
	var err error
	switch h.GSOType {
	case GSOTCPv4:
		ihl, hlen, err = tcpHeaders(pkt)
	case GSOUDPL4:
		ihl, hlen, err = udpHeaders(pkt)
	default:
		return malformed("GSO type %d is neither TCP/IPv4 nor UDP", h.GSOType)
	}
	if err != nil {
		return err
	}
	switch {
	case int(h.CsumStart) != ihl:
		return malformed("checksum start %d is not the L4 header at %d", h.CsumStart, ihl)
	case h.GSOSize == 0:
		return malformed("GSO size 0")
	case hlen == len(pkt):
		return malformed("GSO packet without payload")
	case int(binary.BigEndian.Uint16(pkt[2:])) != len(pkt):
		return malformed("IPv4 total length %d in a %d-byte GSO packet", binary.BigEndian.Uint16(pkt[2:]), len(pkt))
	}
	*s = Splitter{pkt: pkt, ihl: ihl, hlen: hlen, udp: h.GSOType == GSOUDPL4, mss: int(h.GSOSize)}
	return nil
}

// udpHeaders checks that pkt starts with IPv4 and UDP headers and returns
// their lengths. The UDP length field is not checked: in a GSO packet it
// is the kernel's business, and every datagram gets its own.
func udpHeaders(pkt []byte) (ihl, hlen int, err error) {
	if len(pkt) < ipv4MinHeader || pkt[0]>>4 != 4 {
		return 0, 0, malformed("not an IPv4 packet (%d bytes)", len(pkt))
	}
	ihl = int(pkt[0]&0x0f) * 4
	if ihl < ipv4MinHeader || pkt[9] != protoUDP || len(pkt) < ihl+udpHeader {
		return 0, 0, malformed("not a UDP/IPv4 packet (protocol %d, header %d, %d bytes)", pkt[9], ihl, len(pkt))
	}
	return ihl, ihl + udpHeader, nil
}

// tcpHeaders checks that pkt starts with IPv4 and TCP headers and returns
// their lengths.
func tcpHeaders(pkt []byte) (ihl, hlen int, err error) {
	if len(pkt) < ipv4MinHeader || pkt[0]>>4 != 4 {
		return 0, 0, malformed("not an IPv4 packet (%d bytes)", len(pkt))
	}
	ihl = int(pkt[0]&0x0f) * 4
	if ihl < ipv4MinHeader || pkt[9] != protoTCP || len(pkt) < ihl+tcpMinHeader {
		return 0, 0, malformed("not a TCP/IPv4 packet (protocol %d, header %d, %d bytes)", pkt[9], ihl, len(pkt))
	}
	hlen = ihl + int(pkt[ihl+12]>>4)*4
	if hlen < ihl+tcpMinHeader || hlen > len(pkt) {
		return 0, 0, malformed("TCP header ends at %d in a %d-byte packet", hlen, len(pkt))
	}
	return ihl, hlen, nil
}

// Done reports whether every segment has been emitted.
func (s *Splitter) Done() bool { return s.hlen+s.off >= len(s.pkt) }

// Segments returns how many segments the packet yields in total.
func (s *Splitter) Segments() int {
	if s.pkt == nil {
		return 0
	}
	return (len(s.pkt) - s.hlen + s.mss - 1) / s.mss
}

// Next writes the next segment into dst and returns its length. dst must
// hold the headers plus one GSO size of payload.
func (s *Splitter) Next(dst []byte) (int, error) {
	if s.Done() {
		return 0, malformed("no segment left")
	}
	payload := s.pkt[s.hlen+s.off:]
	payload = payload[:min(len(payload), s.mss)]
	n := s.hlen + len(payload)
	if n > len(dst) {
		return 0, malformed("segment of %d bytes exceeds a %d-byte buffer", n, len(dst))
	}
	copy(dst, s.pkt[:s.hlen])
	copy(dst[s.hlen:], payload)
	last := s.hlen+s.off+len(payload) == len(s.pkt)
	s.fixHeaders(dst[:n], last)
	s.off += len(payload)
	s.seg++
	return n, nil
}

func (s *Splitter) fixHeaders(seg []byte, last bool) {
	ip := seg[:s.ihl]
	binary.BigEndian.PutUint16(ip[2:], uint16(len(seg)))
	binary.BigEndian.PutUint16(ip[4:], binary.BigEndian.Uint16(ip[4:])+uint16(s.seg))
	binary.BigEndian.PutUint16(ip[10:], ipHeaderChecksum(ip))
	if s.udp {
		fixUDP(ip, seg[s.ihl:])
		return
	}
	tcp := seg[s.ihl:]
	binary.BigEndian.PutUint32(tcp[4:], binary.BigEndian.Uint32(tcp[4:])+uint32(s.off))
	if !last {
		tcp[13] &^= tcpFlagFIN | tcpFlagPSH
	}
	if s.seg > 0 {
		tcp[13] &^= tcpFlagCWR
	}
	binary.BigEndian.PutUint16(tcp[16:], 0)
	binary.BigEndian.PutUint16(tcp[16:], ^checksum.Fold(checksum.Sum(tcp, pseudoHeader(ip, protoTCP, len(tcp)))))
}

// fixUDP gives one datagram its UDP length and complete checksum.
func fixUDP(ip, udp []byte) {
	binary.BigEndian.PutUint16(udp[4:], uint16(len(udp)))
	binary.BigEndian.PutUint16(udp[6:], 0)
	check := ^checksum.Fold(checksum.Sum(udp, pseudoHeader(ip, protoUDP, len(udp))))
	if check == 0 {
		check = 0xffff // zero means "no checksum" (RFC 768)
	}
	binary.BigEndian.PutUint16(udp[6:], check)
}
