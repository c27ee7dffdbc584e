package offload_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"

	"github.com/4over6d/4over6d/tun/offload"
	"github.com/4over6d/4over6d/tun/tuntest"
)

// datagram builds a UDP/IPv4 datagram of the test flow with IP ID id and
// DF set, as a connected Linux UDP socket sends them.
func datagram(id uint16, data []byte) []byte {
	p := tuntest.UDP(client, server, data)
	binary.BigEndian.PutUint16(p[4:], id)
	p[6] = 0x40
	return refreshIPv4(p)
}

func refreshIPv4(p []byte) []byte {
	binary.BigEndian.PutUint16(p[10:], 0)
	binary.BigEndian.PutUint16(p[10:], ^onesSum(p[:20]))
	return p
}

// refreshUDP rebuilds both checksums of a datagram after an edit.
func refreshUDP(p []byte) []byte {
	refreshIPv4(p)
	udp := p[20:]
	binary.BigEndian.PutUint16(udp[6:], 0)
	pseudo := append(bytes.Clone(p[12:20]), 0, 17, byte(len(udp)>>8), byte(len(udp)))
	check := ^onesSum(pseudo, udp)
	if check == 0 {
		check = 0xffff
	}
	binary.BigEndian.PutUint16(udp[6:], check)
	return p
}

// datagrams returns n datagrams of one flow carrying sizes[i] bytes each
// (the last size repeats), IDs counting up from 7.
func datagrams(n int, sizes ...int) [][]byte {
	pkts := make([][]byte, n)
	for i := range n {
		pkts[i] = datagram(uint16(7+i), payload(i, sizes[min(i, len(sizes)-1)]))
	}
	return pkts
}

// TestCoalesceUDPThenSplit checks the UDP halves against each other: a
// merged run, completed and split as a peer's reader would get it from
// its kernel, must give back exactly the datagrams that went in.
func TestCoalesceUDPThenSplit(t *testing.T) {
	tests := []struct {
		name  string
		pkts  [][]byte
		wantN int
	}{
		{"two datagrams", datagrams(2, 1400), 2},
		{"46 of 1400 bytes reach 64 KiB", datagrams(46, 1400), 46},
		{"run stops before 65535 bytes", datagrams(60, 1400), 46},
		{"64-byte datagrams stop at the segment limit", datagrams(128, 64), offload.MaxUDPSegments},
		{"short last datagram", datagrams(5, 1000, 1000, 1000, 1000, 10), 5},
		{"short datagram ends the run", datagrams(4, 1000, 1000, 99, 1000), 3},
		{"one byte payloads", datagrams(3, 1), 3},
		{"ID wraps", [][]byte{datagram(0xffff, payload(1, 100)), datagram(0, payload(2, 100))}, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			scratch := make([]byte, offload.MaxCoalescedHeader)
			n, h, head := offload.CoalesceUDP(tt.pkts, scratch)
			if n != tt.wantN {
				t.Fatalf("CoalesceUDP merged %d datagrams, want %d", n, tt.wantN)
			}
			if h.GSOType != offload.GSOUDPL4 || h.Flags != offload.FlagNeedsChecksum || h.CsumStart != 20 || h.CsumOffset != 6 || h.HdrLen != 28 || len(head) != 28 {
				t.Fatalf("header %+v for a %d-byte merged header", h, len(head))
			}
			if int(h.GSOSize) != len(tt.pkts[0])-28 {
				t.Fatalf("GSO size %d, want the first payload's %d", h.GSOSize, len(tt.pkts[0])-28)
			}
			pkt := gsoPacket(tt.pkts, n, head)
			if got := int(binary.BigEndian.Uint16(pkt[2:])); got != len(pkt) {
				t.Fatalf("merged IPv4 total length %d for %d bytes", got, len(pkt))
			}
			if got := int(binary.BigEndian.Uint16(pkt[24:])); got != len(pkt)-20 {
				t.Fatalf("merged UDP length %d for %d bytes", got, len(pkt)-20)
			}
			if onesSum(pkt[:20]) != 0xffff {
				t.Fatal("merged IPv4 header checksum does not verify")
			}
			kernelChecksum(t, h, pkt)
			segs := split(t, h, pkt, 1500)
			if len(segs) != n {
				t.Fatalf("split into %d datagrams, want %d", len(segs), n)
			}
			for i := range segs {
				if !bytes.Equal(segs[i], tt.pkts[i]) {
					t.Fatalf("datagram %d differs from the one that went in:\n got %x\nwant %x", i, segs[i], tt.pkts[i])
				}
			}
		})
	}
}

// TestCoalesceUDPRefuses lists what must not be merged: each case edits the
// second of two otherwise mergeable datagrams (or the first).
func TestCoalesceUDPRefuses(t *testing.T) {
	tests := []struct {
		name string
		edit func(pkts [][]byte)
	}{
		{"other source port", func(p [][]byte) { p[1][21]++; refreshUDP(p[1]) }},
		{"other destination port", func(p [][]byte) { p[1][23]++; refreshUDP(p[1]) }},
		{"other source", func(p [][]byte) { p[1][15]++; refreshUDP(p[1]) }},
		{"other destination", func(p [][]byte) { p[1][19]++; refreshUDP(p[1]) }},
		{"other TTL", func(p [][]byte) { p[1][8]--; refreshUDP(p[1]) }},
		{"other TOS", func(p [][]byte) { p[1][1] = 0x10; refreshUDP(p[1]) }},
		{"ID gap", func(p [][]byte) { p[1][5]++; refreshUDP(p[1]) }},
		{"same ID", func(p [][]byte) { p[1][5]--; refreshUDP(p[1]) }},
		{"DF clear on one", func(p [][]byte) { p[1][6] = 0; refreshUDP(p[1]) }},
		{"fragment", func(p [][]byte) { p[1][6] |= 0x20; refreshUDP(p[1]) }},
		{"fragment first", func(p [][]byte) { p[0][6] = 0x20; refreshUDP(p[0]) }},
		{"fragment offset", func(p [][]byte) { p[1][7] = 1; refreshUDP(p[1]) }},
		{"no checksum", func(p [][]byte) { p[1][26], p[1][27] = 0, 0 }},
		{"no checksum first", func(p [][]byte) { p[0][26], p[0][27] = 0, 0 }},
		{"bad UDP checksum", func(p [][]byte) { p[1][40]++ }},
		{"bad IPv4 checksum", func(p [][]byte) { p[1][10]++ }},
		{"UDP length short", func(p [][]byte) { binary.BigEndian.PutUint16(p[1][24:], 100); refreshUDP(p[1]) }},
		{"larger than first", func(p [][]byte) { p[1] = datagram(8, payload(1, 1401)) }},
		{"TCP", func(p [][]byte) { p[1] = segment(8, 1, tuntest.TCPAck, payload(1, 1400)) }},
		{"IPv4 options first", func(p [][]byte) {
			opt := append(append(append([]byte{}, p[0][:20]...), 1, 1, 1, 0), p[0][20:]...)
			opt[0] = 0x46
			binary.BigEndian.PutUint16(opt[2:], uint16(len(opt)))
			p[0] = refreshIPv4(opt)
		}},
		{"empty payload", func(p [][]byte) { p[0] = datagram(7, nil) }},
		{"truncated", func(p [][]byte) { p[1] = p[1][:30] }},
		{"total length short of the buffer", func(p [][]byte) { p[1] = append(p[1], 0) }},
	}
	base := func() [][]byte { return datagrams(2, 1400) }
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { checkNotMerged(t, offload.CoalesceUDP, base, tt.edit) })
	}
}

func TestCoalesceUDPEmptySingleAndNoDF(t *testing.T) {
	scratch := make([]byte, offload.MaxCoalescedHeader)
	if n, _, _ := offload.CoalesceUDP(nil, scratch); n != 0 {
		t.Fatalf("CoalesceUDP(nil) = %d, want 0", n)
	}
	if n, h, _ := offload.CoalesceUDP(datagrams(1, 100), scratch); n != 1 || h != (offload.Header{}) {
		t.Fatalf("CoalesceUDP(one datagram) = %d, %+v", n, h)
	}
	// Without DF (an unconnected or PMTU-less sender) the IDs matter for
	// reassembly; counting up, they survive the kernel's segmentation.
	pkts := datagrams(3, 500)
	for _, p := range pkts {
		p[6] = 0
		refreshIPv4(p)
	}
	if n, _, _ := offload.CoalesceUDP(pkts, scratch); n != 3 {
		t.Fatalf("CoalesceUDP(3 datagrams without DF) = %d, want 3", n)
	}
	// Coalesce (TCP) leaves UDP alone, and CoalesceUDP leaves TCP alone.
	if n, _, _ := offload.Coalesce(datagrams(3, 500), scratch); n != 1 {
		t.Fatalf("Coalesce merged %d datagrams, want them left to CoalesceUDP", n)
	}
	if n, _, _ := offload.CoalesceUDP(stream(3, 1000), scratch); n != 1 {
		t.Fatalf("CoalesceUDP merged %d TCP segments", n)
	}
}

// TestSplitUDPKernelGSO splits a UDP GSO packet laid out as the kernel
// hands it over from a UDP_SEGMENT socket: the UDP length and checksum
// field are the kernel's own and must be replaced per datagram.
func TestSplitUDPKernelGSO(t *testing.T) {
	want := datagrams(4, 1200, 1200, 1200, 77)
	scratch := make([]byte, offload.MaxCoalescedHeader)
	n, h, head := offload.CoalesceUDP(want, scratch)
	if n != 4 {
		t.Fatalf("merged %d, want 4", n)
	}
	pkt := gsoPacket(want, n, head)
	binary.BigEndian.PutUint16(pkt[24:], 0xdead) // whatever the kernel left
	binary.BigEndian.PutUint16(pkt[26:], 0xbeef)
	segs := split(t, h, pkt, 1500)
	for i := range segs {
		if !bytes.Equal(segs[i], want[i]) {
			t.Fatalf("datagram %d:\n got %x\nwant %x", i, segs[i], want[i])
		}
		if _, err := tuntest.Parse(segs[i]); err != nil {
			t.Fatalf("datagram %d: %v", i, err)
		}
	}
}

func TestSplitUDPRejects(t *testing.T) {
	pkts := datagrams(3, 1000)
	n, goodH, head := offload.CoalesceUDP(pkts, make([]byte, offload.MaxCoalescedHeader))
	if n != 3 {
		t.Fatalf("merged %d", n)
	}
	good := gsoPacket(pkts, n, head)
	tests := []struct {
		name string
		h    func(offload.Header) offload.Header
		pkt  func([]byte) []byte
	}{
		{"TCP GSO type on UDP", func(h offload.Header) offload.Header { h.GSOType = offload.GSOTCPv4; return h }, nil},
		{"zero GSO size", func(h offload.Header) offload.Header { h.GSOSize = 0; return h }, nil},
		{"checksum start not UDP", func(h offload.Header) offload.Header { h.CsumStart = 24; return h }, nil},
		{"IPv6", nil, func(p []byte) []byte { p[0] = 0x60; return p }},
		{"TCP packet", nil, func(p []byte) []byte { p[9] = 6; return p }},
		{"total length mismatch", nil, func(p []byte) []byte { return p[:len(p)-1] }},
		{"headers only", nil, func(p []byte) []byte { binary.BigEndian.PutUint16(p[2:], 28); return p[:28] }},
		{"UDP header cut", nil, func(p []byte) []byte { binary.BigEndian.PutUint16(p[2:], 24); return p[:24] }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, pkt := goodH, bytes.Clone(good)
			if tt.h != nil {
				h = tt.h(h)
			}
			if tt.pkt != nil {
				pkt = tt.pkt(pkt)
			}
			var s offload.Splitter
			if err := s.Reset(h, pkt); !errors.Is(err, offload.ErrMalformed) {
				t.Fatalf("Reset = %v, want ErrMalformed", err)
			}
			if !s.Done() || s.Segments() != 0 {
				t.Fatalf("a rejected packet left %d segments to emit", s.Segments())
			}
		})
	}
}
