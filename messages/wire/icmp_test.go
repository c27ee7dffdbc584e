package wire

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"testing"
)

var (
	tunAddr    = netip.MustParseAddr("192.0.2.1")
	clientAddr = netip.MustParseAddr("192.0.2.2")
	farHost    = netip.MustParseAddr("198.51.100.2")
)

// testPacket is an IPv4 packet for these tests: fields are set directly,
// the payload is a counting pattern, and the header checksum is filled in
// by sum16, not by the package under test.
type testPacket struct {
	tos      byte
	flags    uint16 // flags and fragment offset, as on the wire
	id       uint16
	proto    byte
	src, dst netip.Addr
	options  []byte // a multiple of 4 bytes
	payload  []byte // nil: length bytes of pattern
	length   int    // payload length when payload is nil
}

func (p testPacket) build() []byte {
	headerLen := ipv4MinHeader + len(p.options)
	payload := p.payload
	if payload == nil {
		payload = make([]byte, p.length)
		for i := range payload {
			payload[i] = byte(i*7 + i>>8)
		}
	}
	pkt := make([]byte, headerLen+len(payload))
	pkt[0] = 4<<4 | byte(headerLen/4)
	pkt[1] = p.tos
	binary.BigEndian.PutUint16(pkt[2:], uint16(len(pkt)))
	binary.BigEndian.PutUint16(pkt[4:], p.id)
	binary.BigEndian.PutUint16(pkt[6:], p.flags)
	pkt[8], pkt[9] = 61, p.proto
	src, dst := p.src, p.dst
	if !src.IsValid() {
		src = clientAddr
	}
	if !dst.IsValid() {
		dst = farHost
	}
	s, d := src.As4(), dst.As4()
	copy(pkt[12:], s[:])
	copy(pkt[16:], d[:])
	copy(pkt[ipv4MinHeader:], p.options)
	copy(pkt[headerLen:], payload)
	binary.BigEndian.PutUint16(pkt[10:], ^sum16(pkt[:headerLen]))
	return pkt
}

// sum16 is the Internet checksum's folded ones'-complement sum done the
// slow and obvious way (RFC 1071, 16 bits at a time), as an independent
// check of the package's checksums: data with a valid checksum sums to
// 0xffff.
func sum16(b []byte) uint16 {
	var sum uint32
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(b[i])<<8 | uint32(b[i+1])
	}
	if len(b)%2 == 1 {
		sum += uint32(b[len(b)-1]) << 8
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	return uint16(sum)
}

const protoTCP, protoUDP = 6, 17

func TestAppendFragNeeded(t *testing.T) {
	tcp := testPacket{flags: ipv4FlagDF, proto: protoTCP, length: 1480}
	tests := []struct {
		name   string
		pkt    []byte
		prefix []byte
		mtu    int
		quote  int // bytes of pkt quoted
		tos    byte
	}{
		{"TCP segment", tcp.build(), nil, 1400, 28, icmpTOS},
		{"appended after a prefix", tcp.build(), []byte("prefix"), 1400, 28, icmpTOS},
		{"TOS kept, ECN and precedence not", testPacket{tos: 0x3b, flags: ipv4FlagDF, proto: protoUDP, length: 1600}.build(), nil, 1500, 28, 0xc0 | 0x1a},
		{"header options quoted whole", testPacket{flags: ipv4FlagDF, proto: protoUDP, options: []byte{1, 1, 1, 0}, length: 2000}.build(), nil, 576, 32, icmpTOS},
		{"largest header", testPacket{flags: ipv4FlagDF, proto: protoUDP, options: make([]byte, 40), length: 1500}.build(), nil, 1400, 68, icmpTOS},
		{"payload shorter than 8 bytes", testPacket{flags: ipv4FlagDF, proto: 253, length: 3}.build(), nil, 1400, 23, icmpTOS},
		{"first fragment", testPacket{flags: ipv4FlagDF | ipv4FlagMF, proto: protoUDP, length: 1480}.build(), nil, 1280, 28, icmpTOS},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			orig := bytes.Clone(tt.pkt)
			out := AppendFragNeeded(bytes.Clone(tt.prefix), tunAddr, tt.pkt, tt.mtu)
			if !bytes.Equal(tt.pkt, orig) {
				t.Fatal("the quoted packet was modified")
			}
			if !bytes.HasPrefix(out, tt.prefix) {
				t.Fatalf("prefix %q not kept: %x", tt.prefix, out)
			}
			ip := out[len(tt.prefix):]
			checkFragNeeded(t, ip, tt.pkt, tt.mtu)
			if want := 20 + 8 + tt.quote; len(ip) != want || len(ip) > FragNeededMaxLen {
				t.Errorf("packet has %d bytes, want %d (at most FragNeededMaxLen %d)", len(ip), want, FragNeededMaxLen)
			}
			if ip[1] != tt.tos {
				t.Errorf("TOS %#x, want %#x", ip[1], tt.tos)
			}
			if got := ip[28:]; !bytes.Equal(got, tt.pkt[:tt.quote]) {
				t.Errorf("quote %x, want the first %d bytes of the packet", got, tt.quote)
			}
		})
	}
}

// checkFragNeeded checks every field of an ICMP fragmentation-needed
// packet about pkt, with checksums verified by sum16.
func checkFragNeeded(t *testing.T, ip, pkt []byte, mtu int) {
	t.Helper()
	parsed, src, dst, err := ParseIPv4(ip)
	if err != nil || len(parsed) != len(ip) {
		t.Fatalf("not a whole IPv4 packet (%v): %x", err, ip)
	}
	if ip[0] != 0x45 || ip[8] != icmpTTL || ip[9] != ProtoICMP {
		t.Errorf("version/IHL %#x, TTL %d, protocol %d; want 0x45, %d, 1", ip[0], ip[8], ip[9], icmpTTL)
	}
	if id, frag := binary.BigEndian.Uint16(ip[4:]), binary.BigEndian.Uint16(ip[6:]); id != 0 || frag != ipv4FlagDF {
		t.Errorf("ID %d, flags/offset %#x; want 0 and DF only", id, frag)
	}
	if src != tunAddr || dst != netip.AddrFrom4([4]byte(pkt[12:16])) {
		t.Errorf("from %v to %v, want from %v to the packet's source", src, dst, tunAddr)
	}
	if s := sum16(ip[:20]); s != 0xffff {
		t.Errorf("IPv4 header checksum does not verify (sum %#x)", s)
	}
	icmp := ip[20:]
	if icmp[0] != 3 || icmp[1] != 4 {
		t.Errorf("ICMP type %d code %d, want 3 and 4", icmp[0], icmp[1])
	}
	if s := sum16(icmp); s != 0xffff {
		t.Errorf("ICMP checksum does not verify (sum %#x)", s)
	}
	if unused, next := binary.BigEndian.Uint16(icmp[4:]), binary.BigEndian.Uint16(icmp[6:]); unused != 0 || int(next) != mtu {
		t.Errorf("unused field %#x, next-hop MTU %d; want 0 and %d", unused, next, mtu)
	}
	if !bytes.HasPrefix(pkt, icmp[8:]) {
		t.Errorf("quote %x is not the start of the packet", icmp[8:])
	}
}

func TestAppendFragNeededFitsItsBuffer(t *testing.T) {
	pkt := testPacket{flags: ipv4FlagDF, proto: protoUDP, options: make([]byte, 40), length: 1500}.build()
	buf := make([]byte, 0, FragNeededMaxLen)
	if out := AppendFragNeeded(buf, tunAddr, pkt, 1400); &out[0] != &buf[:1][0] {
		t.Fatal("the largest message did not fit FragNeededMaxLen")
	}
	allocs := testing.AllocsPerRun(100, func() { _ = AppendFragNeeded(buf, tunAddr, pkt, 1400) })
	if allocs != 0 {
		t.Errorf("%v allocations per call into a large enough buffer, want 0", allocs)
	}
}

func TestICMPErrorAllowed(t *testing.T) {
	icmp := func(typ byte) []byte {
		return testPacket{proto: ProtoICMP, payload: []byte{typ, 0, 0, 0, 0, 0, 0, 0}}.build()
	}
	tests := []struct {
		name string
		pkt  []byte
		want bool
	}{
		{"TCP", testPacket{proto: protoTCP, length: 40}.build(), true},
		{"UDP with DF", testPacket{proto: protoUDP, flags: ipv4FlagDF, length: 40}.build(), true},
		{"first fragment", testPacket{proto: protoUDP, flags: ipv4FlagMF, length: 40}.build(), true},
		{"middle fragment", testPacket{proto: protoUDP, flags: ipv4FlagMF | 185, length: 40}.build(), false},
		{"last fragment", testPacket{proto: protoUDP, flags: 185, length: 40}.build(), false},
		{"echo request", icmp(8), true},
		{"echo reply", icmp(0), true},
		{"timestamp request", icmp(13), true},
		{"address mask reply", icmp(18), true},
		{"destination unreachable", icmp(3), false},
		{"source quench", icmp(4), false},
		{"redirect", icmp(5), false},
		{"time exceeded", icmp(11), false},
		{"parameter problem", icmp(12), false},
		{"unknown ICMP type", icmp(42), false},
		{"ICMP without a type byte", testPacket{proto: ProtoICMP}.build(), false},
		{"echo request as a later fragment", testPacket{proto: ProtoICMP, flags: 1, payload: []byte{8, 0, 0, 0}}.build(), false},
		{"ICMP behind header options", testPacket{proto: ProtoICMP, options: []byte{1, 1, 1, 0}, payload: []byte{8, 0}}.build(), true},
		{"error behind header options", testPacket{proto: ProtoICMP, options: []byte{1, 1, 1, 0}, payload: []byte{11, 0}}.build(), false},
		{"to a multicast group", testPacket{proto: protoUDP, dst: netip.MustParseAddr("224.0.0.251"), length: 40}.build(), false},
		{"to the limited broadcast", testPacket{proto: protoUDP, dst: netip.MustParseAddr("255.255.255.255"), length: 40}.build(), false},
		{"from 0.0.0.0", testPacket{proto: protoUDP, src: netip.MustParseAddr("0.0.0.0"), length: 40}.build(), false},
		{"from loopback", testPacket{proto: protoUDP, src: netip.MustParseAddr("127.0.0.1"), length: 40}.build(), false},
		{"from multicast", testPacket{proto: protoUDP, src: netip.MustParseAddr("239.1.2.3"), length: 40}.build(), false},
		{"from class E", testPacket{proto: protoUDP, src: netip.MustParseAddr("240.0.0.1"), length: 40}.build(), false},
		{"shorter than a header", make([]byte, 19), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := ICMPErrorAllowed(tt.pkt); got != tt.want {
				t.Errorf("ICMPErrorAllowed = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestDontFragment(t *testing.T) {
	for _, tt := range []struct {
		flags uint16
		want  bool
	}{{0, false}, {ipv4FlagDF, true}, {ipv4FlagMF, false}, {ipv4FlagDF | ipv4FlagMF | 3, true}, {0x8000, false}} {
		if got := DontFragment(testPacket{flags: tt.flags, proto: protoUDP}.build()); got != tt.want {
			t.Errorf("flags %#04x: DontFragment = %v, want %v", tt.flags, got, tt.want)
		}
	}
}

// FuzzFragNeeded builds the error about every packet ParseIPv4 accepts and
// checks it field by field; ICMPErrorAllowed must not panic on any input.
func FuzzFragNeeded(f *testing.F) {
	f.Add(echoRequest, uint16(1400))
	f.Add(testPacket{flags: ipv4FlagDF, proto: protoTCP, length: 1480}.build(), uint16(1400))
	f.Add(testPacket{flags: ipv4FlagDF, proto: protoUDP, options: make([]byte, 40), length: 3}.build(), uint16(576))
	f.Add([]byte{0x4f, 0, 0, 60}, uint16(68))
	f.Fuzz(func(t *testing.T, data []byte, mtu uint16) {
		_ = ICMPErrorAllowed(data)
		pkt, _, _, err := ParseIPv4(data)
		if err != nil {
			return
		}
		ip := AppendFragNeeded(nil, tunAddr, pkt, int(mtu))
		if len(ip) > FragNeededMaxLen {
			t.Fatalf("%d bytes, more than FragNeededMaxLen", len(ip))
		}
		checkFragNeeded(t, ip, pkt, int(mtu))
		headerLen := int(pkt[0]&0x0f) * 4
		if want := min(headerLen+8, len(pkt)); len(ip) != 28+want {
			t.Fatalf("quotes %d bytes, want %d", len(ip)-28, want)
		}
	})
}
