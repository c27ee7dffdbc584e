package offload_test

import (
	"bytes"
	"testing"

	"github.com/4over6d/4over6d/tun/offload"
	"github.com/4over6d/4over6d/tun/tuntest"
)

// FuzzSplit feeds arbitrary headers and packets to the Splitter, as a
// buggy or hostile kernel could: it must reject or split, never panic, and
// never emit more than Segments() segments that exceed their buffer.
func FuzzSplit(f *testing.F) {
	pkts := stream(3, 1000)
	n, h, head := offload.Coalesce(pkts, make([]byte, offload.MaxCoalescedHeader))
	hb := make([]byte, offload.HeaderLen)
	h.Encode(hb)
	f.Add(hb, gsoPacket(pkts, n, head))
	f.Add(hb, []byte{0x45})
	d := datagrams(3, 1000)
	n, h, head = offload.CoalesceUDP(d, make([]byte, offload.MaxCoalescedHeader))
	h.Encode(hb)
	f.Add(bytes.Clone(hb), gsoPacket(d, n, head))
	f.Fuzz(func(t *testing.T, hdr, pkt []byte) {
		var h offload.Header
		if h.Decode(hdr) != nil {
			return
		}
		var s offload.Splitter
		if s.Reset(h, pkt) != nil {
			return
		}
		want, got := s.Segments(), 0
		buf := make([]byte, 1500)
		for !s.Done() {
			n, err := s.Next(buf)
			if err != nil {
				return
			}
			if n > len(buf) {
				t.Fatalf("segment of %d bytes in a %d-byte buffer", n, len(buf))
			}
			got++
		}
		if got != want {
			t.Fatalf("Segments() = %d, emitted %d", want, got)
		}
	})
}

// FuzzCoalesce merges arbitrary packet pairs: it must never panic, and
// whatever it merges must split back into the same packets.
func FuzzCoalesce(f *testing.F) {
	p := stream(2, 1448)
	f.Add(p[0], p[1])
	f.Add(p[0], tuntest.UDP(client, server, []byte("x")))
	f.Fuzz(func(t *testing.T, a, b []byte) {
		pkts := [][]byte{a, b}
		n, h, head := offload.Coalesce(pkts, make([]byte, offload.MaxCoalescedHeader))
		if n < 1 || n > 2 {
			t.Fatalf("Coalesce = %d for two packets", n)
		}
		if n == 1 {
			return
		}
		pkt := gsoPacket(pkts, n, head)
		kernelChecksum(t, h, pkt)
		segs := split(t, h, pkt, 65535)
		for i, s := range segs {
			want := pkts[i]
			if string(s[:20]) != string(want[:20]) || string(s[20:]) != string(want[20:]) {
				// IDs are the only field allowed to differ: Coalesce
				// does not require them to count up.
				if !sameButID(s, want) {
					t.Fatalf("segment %d:\n got %x\nwant %x", i, s, want)
				}
			}
		}
	})
}

// sameButID compares two IPv4 packets ignoring the ID and header checksum.
func sameButID(a, b []byte) bool {
	if len(a) != len(b) {
		return false
	}
	return string(a[:4]) == string(b[:4]) && string(a[6:10]) == string(b[6:10]) && string(a[12:]) == string(b[12:])
}

// FuzzCoalesceUDP merges arbitrary datagram pairs: it must never panic,
// and whatever it merges must split back into the same bytes, IDs
// included (CoalesceUDP requires them to count up).
func FuzzCoalesceUDP(f *testing.F) {
	p := datagrams(2, 1400)
	f.Add(p[0], p[1])
	f.Add(p[0], datagram(8, []byte("x")))
	f.Add(p[0], stream(1, 100)[0])
	f.Fuzz(func(t *testing.T, a, b []byte) {
		pkts := [][]byte{a, b}
		n, h, head := offload.CoalesceUDP(pkts, make([]byte, offload.MaxCoalescedHeader))
		if n < 1 || n > 2 {
			t.Fatalf("CoalesceUDP = %d for two datagrams", n)
		}
		if n == 1 {
			return
		}
		pkt := gsoPacket(pkts, n, head)
		kernelChecksum(t, h, pkt)
		for i, s := range split(t, h, pkt, 65535) {
			if string(s) != string(pkts[i]) {
				t.Fatalf("datagram %d:\n got %x\nwant %x", i, s, pkts[i])
			}
		}
	})
}
