package tuntest_test

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"net/netip"
	"reflect"
	"testing"

	"github.com/4over6d/4over6d/tun/tuntest"
)

// onesSum is an independent RFC 1071 sum for checking the builders: it
// concatenates its chunks, pads to an even length and folds the carries.
func onesSum(chunks ...[]byte) uint16 {
	b := bytes.Join(chunks, nil)
	if len(b)%2 == 1 {
		b = append(b, 0)
	}
	var s uint64
	for i := 0; i < len(b); i += 2 {
		s += uint64(b[i])<<8 | uint64(b[i+1])
	}
	for s>>16 != 0 {
		s = s&0xffff + s>>16
	}
	return uint16(s)
}

func headerOK(pkt []byte) bool { return onesSum(pkt[:20]) == 0xffff }

func icmpOK(pkt []byte) bool { return onesSum(pkt[20:]) == 0xffff }

func udpOK(pkt []byte) bool {
	udp := pkt[20:]
	pseudo := append(bytes.Clone(pkt[12:20]), 0, 17, byte(len(udp)>>8), byte(len(udp)))
	return onesSum(pseudo, udp) == 0xffff
}

// refreshHeaderChecksum lets a test edit a header field and keep the packet
// valid, so Parse is exercised past its checksum check.
func refreshHeaderChecksum(pkt []byte) []byte {
	pkt[10], pkt[11] = 0, 0
	binary.BigEndian.PutUint16(pkt[10:], ^onesSum(pkt[:20]))
	return pkt
}

func mustHex(s string) []byte {
	b, err := hex.DecodeString(s)
	if err != nil {
		panic(err)
	}
	return b
}

func TestBuildersMatchGolden(t *testing.T) {
	// Golden bytes were produced by a separate Python builder (struct and
	// socket.inet_aton), so byte-order mistakes cannot cancel out.
	tests := []struct {
		name string
		got  []byte
		want string
	}{
		{"ping", tuntest.Ping(client, peer, 1, 1, nil), "4500001c0000000040018eaac0000201c63364020800f7fd00010001"},
		{"udp", tuntest.UDP(netip.AddrPortFrom(client, 5000), netip.AddrPortFrom(remote, 53), []byte("hello")),
			"450000210000000040117cc1c0000201cb00710913880035000daa3968656c6c6f"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if want := mustHex(tc.want); !bytes.Equal(tc.got, want) {
				t.Fatalf("built\n%x\nwant\n%x", tc.got, want)
			}
		})
	}
}

func TestChecksumsVerify(t *testing.T) {
	odd := []byte("odd")
	tests := []struct {
		name  string
		pkt   []byte
		l4OK  func([]byte) bool
		proto uint8
	}{
		{"ping empty", tuntest.Ping(client, peer, 0, 0, nil), icmpOK, 1},
		{"ping odd payload", tuntest.Ping(client, remote, 0xbeef, 0xffff, odd), icmpOK, 1},
		{"pong", tuntest.Pong(remote, client, 9, 3, bytes.Repeat([]byte{0xff}, 64)), icmpOK, 1},
		{"udp empty", tuntest.UDP(netip.AddrPortFrom(client, 1), netip.AddrPortFrom(peer, 2), nil), udpOK, 17},
		{"udp odd payload", tuntest.UDP(netip.AddrPortFrom(peer, 65535), netip.AddrPortFrom(remote, 443), odd), udpOK, 17},
		{"udp large", tuntest.UDP(netip.AddrPortFrom(client, 40000), netip.AddrPortFrom(remote, 9), bytes.Repeat([]byte{0xfe}, 1400)), udpOK, 17},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if tc.pkt[9] != tc.proto || int(binary.BigEndian.Uint16(tc.pkt[2:])) != len(tc.pkt) {
				t.Fatalf("header says proto %d, length %d; want %d, %d", tc.pkt[9], binary.BigEndian.Uint16(tc.pkt[2:]), tc.proto, len(tc.pkt))
			}
			if !headerOK(tc.pkt) {
				t.Fatalf("IPv4 header checksum does not verify: %x", tc.pkt[:20])
			}
			if !tc.l4OK(tc.pkt) {
				t.Fatalf("transport checksum does not verify: %x", tc.pkt[20:])
			}
			// The checks must be able to fail: corrupt one byte in each part.
			bad := bytes.Clone(tc.pkt)
			bad[15] ^= 0x01 // source address
			if headerOK(bad) {
				t.Fatal("header check accepted a corrupted source address")
			}
			if tc.proto == 17 && udpOK(bad) {
				t.Fatal("UDP check ignored the pseudo-header")
			}
			bad = bytes.Clone(tc.pkt)
			bad[len(bad)-1] ^= 0x01
			if tc.l4OK(bad) {
				t.Fatal("transport check accepted a corrupted last byte")
			}
		})
	}
}

func TestParseRoundTrips(t *testing.T) {
	fragment := tuntest.UDP(netip.AddrPortFrom(client, 1), netip.AddrPortFrom(peer, 2), []byte("x"))
	tests := []struct {
		name string
		pkt  []byte
		want tuntest.Summary
	}{
		{
			name: "ping",
			pkt:  tuntest.Ping(client, peer, 0x1234, 7, []byte("abc")),
			want: tuntest.Summary{Src: client, Dst: peer, Proto: 1, ICMPType: 8, ID: 0x1234, Seq: 7, Payload: []byte("abc")},
		},
		{
			name: "pong",
			pkt:  tuntest.Pong(peer, client, 0x1234, 7, nil),
			want: tuntest.Summary{Src: peer, Dst: client, Proto: 1, ICMPType: 0, ID: 0x1234, Seq: 7},
		},
		{
			name: "udp",
			pkt:  tuntest.UDP(netip.AddrPortFrom(client, 5353), netip.AddrPortFrom(remote, 53), []byte("query")),
			want: tuntest.Summary{Src: client, Dst: remote, Proto: 17, SrcPort: 5353, DstPort: 53, Payload: []byte("query")},
		},
		{
			name: "trailing bytes ignored",
			pkt:  append(tuntest.UDP(netip.AddrPortFrom(client, 1), netip.AddrPortFrom(peer, 2), []byte("x")), 0, 0, 0),
			want: tuntest.Summary{Src: client, Dst: peer, Proto: 17, SrcPort: 1, DstPort: 2, Payload: []byte("x")},
		},
		{
			name: "udp without checksum",
			pkt: func() []byte {
				p := tuntest.UDP(netip.AddrPortFrom(client, 1), netip.AddrPortFrom(peer, 2), []byte("x"))
				p[26], p[27] = 0, 0
				return p
			}(),
			want: tuntest.Summary{Src: client, Dst: peer, Proto: 17, SrcPort: 1, DstPort: 2, Payload: []byte("x")},
		},
		{
			name: "fragment keeps the IP payload",
			pkt: func() []byte {
				p := bytes.Clone(fragment)
				p[6] |= 0x20 // more fragments
				return refreshHeaderChecksum(p)
			}(),
			want: tuntest.Summary{Src: client, Dst: peer, Proto: 17, Payload: fragment[20:]},
		},
		{
			name: "other protocol keeps the IP payload",
			pkt: func() []byte {
				p := tuntest.Ping(client, peer, 1, 1, nil)
				p[9] = 6
				return refreshHeaderChecksum(p)
			}(),
			want: tuntest.Summary{Src: client, Dst: peer, Proto: 6, Payload: []byte{8, 0, 0xf7, 0xfd, 0, 1, 0, 1}},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tuntest.Parse(tc.pkt)
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if !bytes.Equal(got.Payload, tc.want.Payload) {
				t.Fatalf("Payload = %x, want %x", got.Payload, tc.want.Payload)
			}
			got.Payload, tc.want.Payload = nil, nil
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("Parse = %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestParseRejectsJunk(t *testing.T) {
	ping := func() []byte { return tuntest.Ping(client, peer, 1, 1, []byte("data")) }
	udp := func() []byte {
		return tuntest.UDP(netip.AddrPortFrom(client, 1), netip.AddrPortFrom(peer, 2), []byte("data"))
	}
	edit := func(pkt []byte, f func([]byte)) []byte { f(pkt); return pkt }
	tests := []struct {
		name string
		pkt  []byte
	}{
		{"nil", nil},
		{"short", ping()[:19]},
		{"ipv6", edit(make([]byte, 40), func(p []byte) { p[0] = 0x60 })},
		{"header length below 20", refreshHeaderChecksum(edit(ping(), func(p []byte) { p[0] = 0x44 }))},
		{"header length past packet", refreshHeaderChecksum(edit(ping(), func(p []byte) { p[0] = 0x4f }))},
		{"total length past packet", ping()[:30]},
		{"total length below header", refreshHeaderChecksum(edit(ping(), func(p []byte) { p[2], p[3] = 0, 19 }))},
		{"bad header checksum", edit(ping(), func(p []byte) { p[8]-- })},
		{"truncated icmp", refreshHeaderChecksum(edit(ping()[:27], func(p []byte) { p[2], p[3] = 0, 27 }))},
		{"bad icmp checksum", edit(ping(), func(p []byte) { p[len(p)-1] ^= 1 })},
		{"truncated udp", refreshHeaderChecksum(edit(udp()[:27], func(p []byte) { p[2], p[3] = 0, 27 }))},
		{"udp length mismatch", edit(udp(), func(p []byte) { p[25]-- })},
		{"bad udp checksum", edit(udp(), func(p []byte) { p[len(p)-1] ^= 1 })},
		{"udp address changed", refreshHeaderChecksum(edit(udp(), func(p []byte) { p[19]++ }))},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if s, err := tuntest.Parse(tc.pkt); !errors.Is(err, tuntest.ErrMalformed) {
				t.Fatalf("Parse(%x) = (%+v, %v), want ErrMalformed", tc.pkt, s, err)
			}
		})
	}
}

func TestBuildersPanicOnIPv6(t *testing.T) {
	v6 := netip.MustParseAddr("2001:db8::1")
	tests := []struct {
		name  string
		build func()
	}{
		{"ping", func() { tuntest.Ping(v6, peer, 1, 1, nil) }},
		{"pong", func() { tuntest.Pong(client, v6, 1, 1, nil) }},
		{"udp", func() { tuntest.UDP(netip.AddrPortFrom(v6, 1), netip.AddrPortFrom(peer, 2), nil) }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			defer func() {
				if recover() == nil {
					t.Fatal("built an IPv4 packet with an IPv6 address")
				}
			}()
			tc.build()
		})
	}
}

func TestTCPSegmentBuild(t *testing.T) {
	seg := tuntest.TCPSegment{
		Src: netip.MustParseAddrPort("192.0.2.7:40000"), Dst: netip.MustParseAddrPort("198.51.100.2:5201"),
		ID: 9, Seq: 1000, Ack: 77, Flags: tuntest.TCPAck | tuntest.TCPPsh, Window: 502,
		Options: []byte{1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2}, Payload: []byte("hello"),
	}
	pkt := seg.Build()
	if len(pkt) != 20+32+5 || !headerOK(pkt) {
		t.Fatalf("bad IPv4 header or length %d: %x", len(pkt), pkt)
	}
	if pkt[6] != 0x40 || pkt[9] != 6 || binary.BigEndian.Uint16(pkt[4:]) != 9 {
		t.Errorf("DF, protocol or ID wrong: %x", pkt[:20])
	}
	tcp := pkt[20:]
	pseudo := append(bytes.Clone(pkt[12:20]), 0, 6, 0, byte(len(tcp)))
	if onesSum(pseudo, tcp) != 0xffff {
		t.Error("TCP checksum does not verify")
	}
	if binary.BigEndian.Uint32(tcp[4:]) != 1000 || binary.BigEndian.Uint32(tcp[8:]) != 77 || tcp[12] != 8<<4 || tcp[13] != 0x18 ||
		binary.BigEndian.Uint16(tcp[14:]) != 502 || string(tcp[32:]) != "hello" {
		t.Errorf("TCP header fields wrong: %x", tcp)
	}
	s, err := tuntest.Parse(pkt)
	if err != nil || s.Proto != 6 {
		t.Errorf("Parse = %+v, %v", s, err)
	}
}
