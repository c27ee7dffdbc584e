package offload_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"net/netip"
	"testing"

	"github.com/4over6d/4over6d/tun/offload"
	"github.com/4over6d/4over6d/tun/tuntest"
)

var (
	client = netip.MustParseAddrPort("192.0.2.10:40000")
	server = netip.MustParseAddrPort("198.51.100.2:5201")
	// timestamps is a NOP, NOP, timestamp option block as Linux sends it.
	timestamps = []byte{1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2}
)

// stream returns n consecutive segments of one flow carrying sizes[i]
// bytes each (the last size repeats), IDs counting up, PSH on the last.
func stream(n int, sizes ...int) [][]byte {
	pkts := make([][]byte, n)
	seq := uint32(1_000_000)
	for i := range n {
		size := sizes[min(i, len(sizes)-1)]
		flags := uint8(tuntest.TCPAck)
		if i == n-1 {
			flags |= tuntest.TCPPsh
		}
		pkts[i] = segment(uint16(7+i), seq, flags, payload(i, size))
		seq += uint32(size)
	}
	return pkts
}

func segment(id uint16, seq uint32, flags uint8, data []byte) []byte {
	return tuntest.TCPSegment{
		Src: client, Dst: server, ID: id, Seq: seq, Ack: 42, Flags: flags,
		Window: 502, Options: timestamps, Payload: data,
	}.Build()
}

func payload(seed, size int) []byte {
	b := make([]byte, size)
	for i := range b {
		b[i] = byte(seed*31 + i*7)
	}
	return b
}

// gsoPacket assembles what Coalesce tells the caller to write, minus the
// virtio-net header.
func gsoPacket(pkts [][]byte, n int, head []byte) []byte {
	out := bytes.Clone(head)
	for _, p := range pkts[:n] {
		out = append(out, p[len(head):]...)
	}
	return out
}

// kernelChecksum does what the kernel does with a NEEDS_CSUM packet before
// segmenting it in software: complete the seeded checksum (TCP or UDP, by
// the IPv4 protocol field), and checks it verifies over the whole merged
// packet.
func kernelChecksum(t *testing.T, h offload.Header, pkt []byte) {
	t.Helper()
	if err := offload.CompleteChecksum(h, pkt); err != nil {
		t.Fatalf("CompleteChecksum: %v", err)
	}
	l4 := pkt[20:]
	pseudo := append(bytes.Clone(pkt[12:20]), 0, pkt[9], byte(len(l4)>>8), byte(len(l4)))
	if onesSum(pseudo, l4) != 0xffff {
		t.Fatalf("merged packet's completed checksum (protocol %d) does not verify", pkt[9])
	}
}

func split(t *testing.T, h offload.Header, pkt []byte, bufSize int) [][]byte {
	t.Helper()
	var s offload.Splitter
	if err := s.Reset(h, pkt); err != nil {
		t.Fatalf("Reset: %v", err)
	}
	want := s.Segments()
	var out [][]byte
	for !s.Done() {
		buf := make([]byte, bufSize)
		n, err := s.Next(buf)
		if err != nil {
			t.Fatalf("Next: %v", err)
		}
		out = append(out, buf[:n])
	}
	if len(out) != want {
		t.Fatalf("Segments() = %d, Next produced %d", want, len(out))
	}
	return out
}

// onesSum is a plain 16-bit RFC 1071 sum, independent of the package's
// 64-bit one.
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

func TestHeaderRoundTrip(t *testing.T) {
	h := offload.Header{Flags: 1, GSOType: 1, HdrLen: 52, GSOSize: 1448, CsumStart: 20, CsumOffset: 16}
	b := make([]byte, offload.HeaderLen)
	h.Encode(b)
	var got offload.Header
	if err := got.Decode(b); err != nil || got != h {
		t.Fatalf("Decode(Encode(%+v)) = %+v, %v", h, got, err)
	}
	if err := got.Decode(b[:9]); !errors.Is(err, offload.ErrMalformed) {
		t.Fatalf("Decode of 9 bytes: %v, want ErrMalformed", err)
	}
}

// TestCoalesceThenSplit checks the two halves against each other: what one
// side merges and the other side's kernel hands back as a GSO read must
// split into exactly the packets that went in, byte for byte.
func TestCoalesceThenSplit(t *testing.T) {
	tests := []struct {
		name  string
		pkts  [][]byte
		wantN int
	}{
		{"two full segments", stream(2, 1448), 2},
		{"45 full segments reach 64 KiB", stream(45, 1448), 45},
		{"run stops before 65535 bytes", stream(60, 1448), 45},
		{"short last segment", stream(5, 1448, 1448, 1448, 1448, 300), 5},
		{"short segment ends the run", stream(4, 1448, 1448, 100, 1448), 3},
		{"small segments", stream(64, 536), 64},
		{"one byte payloads", stream(3, 1), 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			scratch := make([]byte, offload.MaxCoalescedHeader)
			n, h, head := offload.Coalesce(tt.pkts, scratch)
			if n != tt.wantN {
				t.Fatalf("Coalesce merged %d packets, want %d", n, tt.wantN)
			}
			if h.GSOType != offload.GSOTCPv4 || h.Flags != offload.FlagNeedsChecksum || h.CsumStart != 20 || h.CsumOffset != 16 || int(h.HdrLen) != len(head) {
				t.Fatalf("header %+v for a %d-byte merged header", h, len(head))
			}
			pkt := gsoPacket(tt.pkts, n, head)
			if got := int(binary.BigEndian.Uint16(pkt[2:])); got != len(pkt) {
				t.Fatalf("merged IPv4 total length %d for %d bytes", got, len(pkt))
			}
			if onesSum(pkt[:20]) != 0xffff {
				t.Fatal("merged IPv4 header checksum does not verify")
			}
			kernelChecksum(t, h, pkt)
			segs := split(t, h, pkt, 1500)
			if len(segs) != n {
				t.Fatalf("split into %d segments, want %d", len(segs), n)
			}
			want := tt.pkts[:n]
			for i := range segs {
				if !bytes.Equal(segs[i], want[i]) {
					t.Fatalf("segment %d differs from the packet that went in:\n got %x\nwant %x", i, segs[i], want[i])
				}
			}
		})
	}
}

// TestCoalesceRefuses lists what must not be merged: each case changes the
// second of two otherwise mergeable segments (or the first).
func TestCoalesceRefuses(t *testing.T) {
	base := func() [][]byte { return stream(2, 1448) }
	resum := func(p []byte) []byte {
		// Rebuild both checksums after an edit, so only the edit differs.
		binary.BigEndian.PutUint16(p[10:], 0)
		binary.BigEndian.PutUint16(p[10:], ^onesSum(p[:20]))
		tcp := p[20:]
		binary.BigEndian.PutUint16(tcp[16:], 0)
		pseudo := append(bytes.Clone(p[12:20]), 0, p[9], byte(len(tcp)>>8), byte(len(tcp)))
		binary.BigEndian.PutUint16(tcp[16:], ^onesSum(pseudo, tcp))
		return p
	}
	tests := []struct {
		name string
		edit func(pkts [][]byte)
	}{
		{"other source port", func(p [][]byte) { p[1][21]++; resum(p[1]) }},
		{"other destination", func(p [][]byte) { p[1][19]++; resum(p[1]) }},
		{"sequence gap", func(p [][]byte) { p[1][27]++; resum(p[1]) }},
		{"other acknowledgement", func(p [][]byte) { p[1][31]++; resum(p[1]) }},
		{"other window", func(p [][]byte) { p[1][35]++; resum(p[1]) }},
		{"other urgent pointer", func(p [][]byte) { p[1][39] = 1; resum(p[1]) }},
		{"other timestamp", func(p [][]byte) { p[1][47]++; resum(p[1]) }},
		{"other TTL", func(p [][]byte) { p[1][8]--; resum(p[1]) }},
		{"other TOS", func(p [][]byte) { p[1][1] = 0x10; resum(p[1]) }},
		{"DF clear", func(p [][]byte) { p[1][6] = 0; resum(p[1]) }},
		{"fragment", func(p [][]byte) { p[1][6] |= 0x20; resum(p[1]) }},
		{"FIN", func(p [][]byte) { p[1][33] |= tuntest.TCPFin; resum(p[1]) }},
		{"CWR", func(p [][]byte) { p[1][33] |= tuntest.TCPCwr; resum(p[1]) }},
		{"SYN first", func(p [][]byte) { p[0][33] |= tuntest.TCPSyn; resum(p[0]) }},
		{"PSH first", func(p [][]byte) { p[0][33] |= tuntest.TCPPsh; resum(p[0]) }},
		{"bad TCP checksum", func(p [][]byte) { p[1][60]++ }},
		{"bad IPv4 checksum", func(p [][]byte) { p[1][10]++ }},
		{"bad first TCP checksum", func(p [][]byte) { p[0][60]++ }},
		{"UDP", func(p [][]byte) { p[1] = tuntest.UDP(client, server, make([]byte, 1448)) }},
		{"pure ACK", func(p [][]byte) { p[1] = segment(8, 1_001_448, tuntest.TCPAck, nil) }},
		{"larger than first", func(p [][]byte) { p[1] = segment(8, 1_001_448, tuntest.TCPAck, make([]byte, 1449)) }},
		{"truncated", func(p [][]byte) { p[1] = p[1][:30] }},
		{"total length short of the buffer", func(p [][]byte) { p[1] = append(p[1], 0) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { checkNotMerged(t, offload.Coalesce, base, tt.edit) })
	}
}

// checkNotMerged makes sure that a pair from base merges, and that after
// edit coalesce writes the first packet as it is.
func checkNotMerged(t *testing.T, coalesce func([][]byte, []byte) (int, offload.Header, []byte), base func() [][]byte, edit func([][]byte)) {
	t.Helper()
	pkts := base()
	if n, _, _ := coalesce(pkts, make([]byte, offload.MaxCoalescedHeader)); n != 2 {
		t.Fatalf("control: unedited pair merged %d packets, want 2", n)
	}
	edit(pkts)
	n, h, head := coalesce(pkts, make([]byte, offload.MaxCoalescedHeader))
	if n != 1 || h != (offload.Header{}) || head != nil {
		t.Fatalf("coalesce = %d, %+v, %d header bytes; want 1 packet written as is", n, h, len(head))
	}
}

func TestCoalesceEmptyAndSingle(t *testing.T) {
	scratch := make([]byte, offload.MaxCoalescedHeader)
	if n, _, _ := offload.Coalesce(nil, scratch); n != 0 {
		t.Fatalf("Coalesce(nil) = %d, want 0", n)
	}
	if n, h, _ := offload.Coalesce(stream(1, 100), scratch); n != 1 || h != (offload.Header{}) {
		t.Fatalf("Coalesce(one packet) = %d, %+v", n, h)
	}
}

func TestSplitFlags(t *testing.T) {
	// A merged packet carrying CWR and FIN, as a sender's TSO packet may:
	// CWR belongs on the first segment only, FIN and PSH on the last only.
	pkts := stream(3, 1000)
	scratch := make([]byte, offload.MaxCoalescedHeader)
	n, h, head := offload.Coalesce(pkts, scratch)
	if n != 3 {
		t.Fatalf("merged %d, want 3", n)
	}
	head[33] |= tuntest.TCPCwr | tuntest.TCPFin
	pkt := gsoPacket(pkts, n, head)
	kernelChecksum(t, h, pkt)
	segs := split(t, h, pkt, 1500)
	wantFlags := []uint8{
		tuntest.TCPAck | tuntest.TCPCwr,
		tuntest.TCPAck,
		tuntest.TCPAck | tuntest.TCPPsh | tuntest.TCPFin,
	}
	for i, s := range segs {
		if s[33] != wantFlags[i] {
			t.Errorf("segment %d flags %#x, want %#x", i, s[33], wantFlags[i])
		}
		if _, err := tuntest.Parse(s); err != nil {
			t.Errorf("segment %d: %v", i, err)
		}
	}
}

func TestSplitRejects(t *testing.T) {
	good := gsoOf(t, stream(3, 1000))
	tests := []struct {
		name string
		h    func(offload.Header) offload.Header
		pkt  func([]byte) []byte
	}{
		{"not GSO", func(h offload.Header) offload.Header { h.GSOType = offload.GSONone; return h }, nil},
		{"UDP GSO type", func(h offload.Header) offload.Header { h.GSOType = 3; return h }, nil},
		{"zero GSO size", func(h offload.Header) offload.Header { h.GSOSize = 0; return h }, nil},
		{"checksum start not TCP", func(h offload.Header) offload.Header { h.CsumStart = 24; return h }, nil},
		{"IPv6", nil, func(p []byte) []byte { p[0] = 0x60; return p }},
		{"UDP packet", nil, func(p []byte) []byte { p[9] = 17; return p }},
		{"total length mismatch", nil, func(p []byte) []byte { return p[:len(p)-1] }},
		{"headers only", nil, func(p []byte) []byte { binary.BigEndian.PutUint16(p[2:], 52); return p[:52] }},
		{"TCP header past the end", nil, func(p []byte) []byte { p[32] = 0xf0; binary.BigEndian.PutUint16(p[2:], 60); return p[:60] }},
		{"runt", nil, func(p []byte) []byte { return p[:10] }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, pkt := good.h, bytes.Clone(good.pkt)
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
			if _, err := s.Next(make([]byte, 1500)); !errors.Is(err, offload.ErrMalformed) {
				t.Fatalf("Next after a rejected Reset = %v, want ErrMalformed", err)
			}
		})
	}
}

func TestSplitBufferTooSmall(t *testing.T) {
	g := gsoOf(t, stream(3, 1000))
	var s offload.Splitter
	if err := s.Reset(g.h, g.pkt); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Next(make([]byte, 1000)); !errors.Is(err, offload.ErrMalformed) {
		t.Fatalf("Next into a 1000-byte buffer = %v, want ErrMalformed", err)
	}
}

type gso struct {
	h   offload.Header
	pkt []byte
}

func gsoOf(t testing.TB, pkts [][]byte) gso {
	t.Helper()
	n, h, head := offload.Coalesce(pkts, make([]byte, offload.MaxCoalescedHeader))
	if n != len(pkts) {
		t.Fatalf("merged %d of %d", n, len(pkts))
	}
	return gso{h: h, pkt: gsoPacket(pkts, n, head)}
}

func TestCompleteChecksum(t *testing.T) {
	udp := tuntest.UDP(client, server, payload(1, 333))
	tcp := segment(1, 5, tuntest.TCPAck, payload(2, 777))
	tests := []struct {
		name string
		pkt  []byte
		off  uint16
	}{
		{"UDP", udp, 6},
		{"TCP", tcp, 16},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			want := bytes.Clone(tt.pkt)
			pkt := bytes.Clone(tt.pkt)
			// Seed the field the way the kernel leaves it: the folded
			// pseudo-header sum, not complemented.
			l4 := pkt[20:]
			pseudo := append(bytes.Clone(pkt[12:20]), 0, pkt[9], byte(len(l4)>>8), byte(len(l4)))
			binary.BigEndian.PutUint16(l4[tt.off:], onesSum(pseudo))
			h := offload.Header{Flags: offload.FlagNeedsChecksum, CsumStart: 20, CsumOffset: tt.off}
			if err := offload.CompleteChecksum(h, pkt); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(pkt, want) {
				t.Fatalf("checksum %x, want %x", pkt[20+tt.off:22+tt.off], want[20+tt.off:22+tt.off])
			}
		})
	}
	t.Run("no flag leaves the packet alone", func(t *testing.T) {
		pkt := bytes.Clone(udp)
		pkt[26] ^= 0xff
		before := bytes.Clone(pkt)
		if err := offload.CompleteChecksum(offload.Header{CsumStart: 20, CsumOffset: 6}, pkt); err != nil || !bytes.Equal(pkt, before) {
			t.Fatalf("packet changed or error %v", err)
		}
	})
	t.Run("field outside the packet", func(t *testing.T) {
		h := offload.Header{Flags: offload.FlagNeedsChecksum, CsumStart: 20, CsumOffset: uint16(len(udp))}
		if err := offload.CompleteChecksum(h, bytes.Clone(udp)); !errors.Is(err, offload.ErrMalformed) {
			t.Fatalf("err = %v, want ErrMalformed", err)
		}
	})
}

// TestChecksumMatchesReference runs the 64-bit checksum over random
// lengths through CompleteChecksum and compares with the 16-bit reference.
func TestChecksumMatchesReference(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for range 500 {
		size := r.IntN(3000)
		pkt := tuntest.UDP(client, server, payload(r.IntN(100), size))
		binary.BigEndian.PutUint16(pkt[26:], 0)
		h := offload.Header{Flags: offload.FlagNeedsChecksum, CsumStart: 20, CsumOffset: 6}
		if err := offload.CompleteChecksum(h, pkt); err != nil {
			t.Fatal(err)
		}
		// The field was seeded with 0, so the result must be the plain
		// checksum of the UDP bytes (0 sent as 0xffff).
		check := binary.BigEndian.Uint16(pkt[26:])
		binary.BigEndian.PutUint16(pkt[26:], 0)
		want := ^onesSum(pkt[20:])
		if want == 0 {
			want = 0xffff
		}
		if check != want {
			t.Fatalf("size %d: checksum %#x, want %#x", size, check, want)
		}
	}
}
