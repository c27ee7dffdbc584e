package main

import (
	"encoding/binary"
	"net/netip"

	"github.com/4over6d/4over6d/messages/wire"
	"github.com/4over6d/4over6d/tun/checksum"
)

const (
	ipv4HeaderLen = 20
	udpHeaderLen  = 8
)

// udpFrame is a 102 frame holding one IPv4/UDP packet from a session's
// leased address. It is built once per session; next() bumps the IPv4 ID and
// the sequence number in the payload, so each send only rewrites a few
// bytes and the header checksum.
type udpFrame struct {
	buf []byte // 5-byte frame header, then the packet
	id  uint16
	seq uint64
}

func newUDPFrame(src netip.Addr, sport uint16, dst netip.AddrPort, size int) *udpFrame {
	pkt := make([]byte, size)
	pkt[0] = 0x45 // IPv4, 20-byte header
	binary.BigEndian.PutUint16(pkt[2:], uint16(size))
	binary.BigEndian.PutUint16(pkt[6:], 0x4000) // don't fragment
	pkt[8] = 64                                 // TTL
	pkt[9] = 17                                 // UDP
	s4, d4 := src.As4(), dst.Addr().As4()
	copy(pkt[12:16], s4[:])
	copy(pkt[16:20], d4[:])
	udp := pkt[ipv4HeaderLen:]
	binary.BigEndian.PutUint16(udp[0:], sport)
	binary.BigEndian.PutUint16(udp[2:], dst.Port())
	binary.BigEndian.PutUint16(udp[4:], uint16(size-ipv4HeaderLen))
	// UDP checksum 0: "no checksum", legal over IPv4, and NAT keeps it so.
	return &udpFrame{buf: wire.AppendFrame(nil, wire.TypeDataRequest, pkt)}
}

// next advances the frame to the next packet and returns it.
func (f *udpFrame) next() []byte {
	f.id++
	f.seq++
	pkt := f.buf[wire.HeaderLen:]
	binary.BigEndian.PutUint16(pkt[4:], f.id)
	if len(pkt) >= ipv4HeaderLen+udpHeaderLen+8 {
		binary.BigEndian.PutUint64(pkt[ipv4HeaderLen+udpHeaderLen:], f.seq)
	}
	pkt[10], pkt[11] = 0, 0
	binary.BigEndian.PutUint16(pkt[10:], checksum.Checksum(pkt[:ipv4HeaderLen], 0))
	return f.buf
}
