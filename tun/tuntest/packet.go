package tuntest

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"

	"github.com/4over6d/4over6d/tun"
	"github.com/4over6d/4over6d/tun/checksum"
)

const (
	ipv4HeaderLen = 20
	icmpHeaderLen = 8
	udpHeaderLen  = 8

	protoICMP = 1
	protoUDP  = 17

	icmpEchoReply   = 0
	icmpEchoRequest = 8

	defaultTTL = 64
)

// ErrMalformed is wrapped by every Parse error, so a test can tell "not a
// packet" apart from a failed assertion on a packet.
var ErrMalformed = errors.New("malformed IPv4 packet")

// Ping builds an ICMP echo request from src to dst, the packet a client or
// the kernel sends to probe reachability through the tunnel. It panics if
// src or dst is not IPv4.
func Ping(src, dst netip.Addr, id, seq uint16, payload []byte) []byte {
	return icmpEcho(icmpEchoRequest, src, dst, id, seq, payload)
}

// Pong builds the ICMP echo reply to a Ping with the same id, seq and
// payload, so a test can answer on behalf of the far side. It panics if src
// or dst is not IPv4.
func Pong(src, dst netip.Addr, id, seq uint16, payload []byte) []byte {
	return icmpEcho(icmpEchoReply, src, dst, id, seq, payload)
}

func icmpEcho(typ uint8, src, dst netip.Addr, id, seq uint16, payload []byte) []byte {
	pkt := ipv4(protoICMP, src, dst, icmpHeaderLen+len(payload))
	icmp := pkt[ipv4HeaderLen:]
	icmp[0] = typ
	binary.BigEndian.PutUint16(icmp[4:], id)
	binary.BigEndian.PutUint16(icmp[6:], seq)
	copy(icmp[icmpHeaderLen:], payload)
	binary.BigEndian.PutUint16(icmp[2:], checksum.Checksum(icmp, 0))
	return pkt
}

// UDP builds a UDP datagram from src to dst carrying payload, the simplest
// transport to check that ports and data cross the tunnel untouched. It
// panics if src or dst is not IPv4.
func UDP(src, dst netip.AddrPort, payload []byte) []byte {
	pkt := ipv4(protoUDP, src.Addr(), dst.Addr(), udpHeaderLen+len(payload))
	udp := pkt[ipv4HeaderLen:]
	binary.BigEndian.PutUint16(udp[0:], src.Port())
	binary.BigEndian.PutUint16(udp[2:], dst.Port())
	binary.BigEndian.PutUint16(udp[4:], uint16(len(udp)))
	copy(udp[udpHeaderLen:], payload)
	check := checksum.Checksum(udp, pseudoHeader(pkt))
	if check == 0 {
		// Zero means "no checksum" in UDP over IPv4 (RFC 768).
		check = 0xffff
	}
	binary.BigEndian.PutUint16(udp[6:], check)
	return pkt
}

// ipv4 returns a packet with a complete IPv4 header (no options, DF unset,
// header checksum filled in) and room for an l4Len-byte payload.
func ipv4(proto uint8, src, dst netip.Addr, l4Len int) []byte {
	if !src.Is4() || !dst.Is4() {
		panic(fmt.Sprintf("tuntest: IPv4 packet from %v to %v", src, dst))
	}
	total := ipv4HeaderLen + l4Len
	if total > tun.MaxPacket {
		panic(fmt.Sprintf("tuntest: IPv4 packet of %d bytes exceeds %d", total, tun.MaxPacket))
	}
	pkt := make([]byte, total)
	pkt[0] = 4<<4 | ipv4HeaderLen/4
	binary.BigEndian.PutUint16(pkt[2:], uint16(total))
	pkt[8] = defaultTTL
	pkt[9] = proto
	s, d := src.As4(), dst.As4()
	copy(pkt[12:], s[:])
	copy(pkt[16:], d[:])
	binary.BigEndian.PutUint16(pkt[10:], checksum.Checksum(pkt[:ipv4HeaderLen], 0))
	return pkt
}

// Summary is the part of a packet that tests assert on, so they compare
// fields rather than bytes.
type Summary struct {
	// Src and Dst are the IPv4 addresses.
	Src, Dst netip.Addr
	// Proto is the IPv4 protocol number (1 ICMP, 17 UDP).
	Proto uint8
	// ICMPType is set for ICMP (8 echo request, 0 echo reply).
	ICMPType uint8
	// ID and Seq are set for ICMP echo requests and replies.
	ID, Seq uint16
	// SrcPort and DstPort are set for UDP.
	SrcPort, DstPort uint16
	// Payload is the echo data, the UDP payload, or for any other packet
	// (other protocols, fragments) everything after the IPv4 header. It
	// aliases the parsed packet.
	Payload []byte
}

// Parse decodes an IPv4 packet into a Summary, verifying the header, ICMP
// and UDP checksums, so an assertion also catches a packet the server
// corrupted. Bytes past the IPv4 total length are ignored. Every error
// wraps ErrMalformed.
func Parse(pkt []byte) (Summary, error) {
	if len(pkt) < ipv4HeaderLen {
		return Summary{}, malformed("%d bytes is shorter than an IPv4 header", len(pkt))
	}
	if v := pkt[0] >> 4; v != 4 {
		return Summary{}, malformed("IP version %d", v)
	}
	hlen := int(pkt[0]&0x0f) * 4
	total := int(binary.BigEndian.Uint16(pkt[2:]))
	if hlen < ipv4HeaderLen || total < hlen || total > len(pkt) {
		return Summary{}, malformed("header length %d and total length %d in %d bytes", hlen, total, len(pkt))
	}
	if checksum.Fold(checksum.Sum(pkt[:hlen], 0)) != 0xffff {
		return Summary{}, malformed("bad IPv4 header checksum")
	}
	pkt = pkt[:total]
	s := Summary{
		Src:     netip.AddrFrom4([4]byte(pkt[12:16])),
		Dst:     netip.AddrFrom4([4]byte(pkt[16:20])),
		Proto:   pkt[9],
		Payload: pkt[hlen:],
	}
	fragment := binary.BigEndian.Uint16(pkt[6:])&0x3fff != 0 // MF flag or offset
	if fragment {
		return s, nil
	}
	switch s.Proto {
	case protoICMP:
		return parseICMP(s, pkt[hlen:])
	case protoUDP:
		return parseUDP(s, pkt, pkt[hlen:])
	}
	return s, nil
}

func parseICMP(s Summary, icmp []byte) (Summary, error) {
	if len(icmp) < icmpHeaderLen {
		return Summary{}, malformed("%d-byte ICMP message", len(icmp))
	}
	if checksum.Fold(checksum.Sum(icmp, 0)) != 0xffff {
		return Summary{}, malformed("bad ICMP checksum")
	}
	s.ICMPType = icmp[0]
	if s.ICMPType == icmpEchoRequest || s.ICMPType == icmpEchoReply {
		s.ID = binary.BigEndian.Uint16(icmp[4:])
		s.Seq = binary.BigEndian.Uint16(icmp[6:])
	}
	s.Payload = icmp[icmpHeaderLen:]
	return s, nil
}

func parseUDP(s Summary, pkt, udp []byte) (Summary, error) {
	if len(udp) < udpHeaderLen {
		return Summary{}, malformed("%d-byte UDP datagram", len(udp))
	}
	if n := int(binary.BigEndian.Uint16(udp[4:])); n != len(udp) {
		return Summary{}, malformed("UDP length %d in %d bytes", n, len(udp))
	}
	if binary.BigEndian.Uint16(udp[6:]) != 0 && checksum.Fold(checksum.Sum(udp, pseudoHeader(pkt))) != 0xffff {
		return Summary{}, malformed("bad UDP checksum")
	}
	s.SrcPort = binary.BigEndian.Uint16(udp[0:])
	s.DstPort = binary.BigEndian.Uint16(udp[2:])
	s.Payload = udp[udpHeaderLen:]
	return s, nil
}

func malformed(format string, args ...any) error {
	return fmt.Errorf("failed to parse: %s: %w", fmt.Sprintf(format, args...), ErrMalformed)
}

// pseudoHeader is the partial sum of the IPv4 pseudo-header that the UDP
// and TCP checksums cover: addresses, protocol and L4 length.
func pseudoHeader(pkt []byte) uint64 {
	hlen := int(pkt[0]&0x0f) * 4
	return checksum.Sum(pkt[12:20], uint64(pkt[9])+uint64(len(pkt)-hlen))
}

// TCP flag bits for TCPSegment.Flags.
const (
	TCPFin = 0x01
	TCPSyn = 0x02
	TCPPsh = 0x08
	TCPAck = 0x10
	TCPCwr = 0x80
)

const (
	protoTCP     = 6
	tcpHeaderLen = 20
	ipv4FlagDF   = 0x4000
)

// TCPSegment describes a TCP/IPv4 segment as a bulk sender's kernel emits
// it (DF set), for tests of the offload code that splits and merges them.
type TCPSegment struct {
	Src, Dst netip.AddrPort
	ID       uint16
	Seq, Ack uint32
	Flags    uint8
	Window   uint16
	// Options are raw TCP options, padded by the caller to a multiple of
	// four bytes.
	Options []byte
	Payload []byte
}

// Build returns the segment with valid IPv4 and TCP checksums. It panics
// on non-IPv4 addresses or options that are not a multiple of four bytes.
func (s TCPSegment) Build() []byte {
	if len(s.Options)%4 != 0 || len(s.Options) > 40 {
		panic(fmt.Sprintf("tuntest: %d bytes of TCP options", len(s.Options)))
	}
	hlen := tcpHeaderLen + len(s.Options)
	pkt := ipv4(protoTCP, s.Src.Addr(), s.Dst.Addr(), hlen+len(s.Payload))
	binary.BigEndian.PutUint16(pkt[4:], s.ID)
	binary.BigEndian.PutUint16(pkt[6:], ipv4FlagDF)
	pkt[10], pkt[11] = 0, 0
	binary.BigEndian.PutUint16(pkt[10:], checksum.Checksum(pkt[:ipv4HeaderLen], 0))
	tcp := pkt[ipv4HeaderLen:]
	binary.BigEndian.PutUint16(tcp[0:], s.Src.Port())
	binary.BigEndian.PutUint16(tcp[2:], s.Dst.Port())
	binary.BigEndian.PutUint32(tcp[4:], s.Seq)
	binary.BigEndian.PutUint32(tcp[8:], s.Ack)
	tcp[12] = byte(hlen/4) << 4
	tcp[13] = s.Flags
	binary.BigEndian.PutUint16(tcp[14:], s.Window)
	copy(tcp[tcpHeaderLen:], s.Options)
	copy(tcp[hlen:], s.Payload)
	binary.BigEndian.PutUint16(tcp[16:], checksum.Checksum(tcp, pseudoHeader(pkt)))
	return pkt
}
