package offload_test

import (
	"testing"

	"github.com/4over6d/4over6d/tun/offload"
)

// BenchmarkCoalesce merges a batch of 44 full segments (one 64 KiB GSO
// write), checksums verified: the cost a writer pays per batch.
func BenchmarkCoalesce(b *testing.B) {
	pkts := stream(44, 1448)
	scratch := make([]byte, offload.MaxCoalescedHeader)
	b.SetBytes(int64(44 * 1448))
	b.ReportAllocs()
	for b.Loop() {
		if n, _, _ := offload.Coalesce(pkts, scratch); n != 44 {
			b.Fatalf("merged %d", n)
		}
	}
}

// BenchmarkSplit cuts one 64 KiB GSO read into 44 segments with full
// checksums: the cost a reader pays per GSO packet.
func BenchmarkSplit(b *testing.B) {
	g := gsoOf(b, stream(44, 1448))
	bufs := make([][]byte, 44)
	for i := range bufs {
		bufs[i] = make([]byte, 1500)
	}
	b.SetBytes(int64(len(g.pkt)))
	b.ReportAllocs()
	var s offload.Splitter
	for b.Loop() {
		if err := s.Reset(g.h, g.pkt); err != nil {
			b.Fatal(err)
		}
		for i := 0; !s.Done(); i++ {
			if _, err := s.Next(bufs[i]); err != nil {
				b.Fatal(err)
			}
		}
	}
}

// BenchmarkCoalesceUDP merges a batch of 46 datagrams of 1400 bytes (one
// 64 KiB UDP GSO write), checksums verified.
func BenchmarkCoalesceUDP(b *testing.B) {
	pkts := datagrams(46, 1400)
	scratch := make([]byte, offload.MaxCoalescedHeader)
	b.SetBytes(int64(46 * 1400))
	b.ReportAllocs()
	for b.Loop() {
		if n, _, _ := offload.CoalesceUDP(pkts, scratch); n != 46 {
			b.Fatalf("merged %d", n)
		}
	}
}

// BenchmarkSplitUDP cuts one 64 KiB UDP GSO read into 46 datagrams with
// full checksums.
func BenchmarkSplitUDP(b *testing.B) {
	pkts := datagrams(46, 1400)
	n, h, head := offload.CoalesceUDP(pkts, make([]byte, offload.MaxCoalescedHeader))
	if n != 46 {
		b.Fatalf("merged %d", n)
	}
	pkt := gsoPacket(pkts, n, head)
	bufs := make([][]byte, 46)
	for i := range bufs {
		bufs[i] = make([]byte, 1500)
	}
	b.SetBytes(int64(len(pkt)))
	b.ReportAllocs()
	var s offload.Splitter
	for b.Loop() {
		if err := s.Reset(h, pkt); err != nil {
			b.Fatal(err)
		}
		for i := 0; !s.Done(); i++ {
			if _, err := s.Next(bufs[i]); err != nil {
				b.Fatal(err)
			}
		}
	}
}

// BenchmarkCoalesceMixed is a batch that merges nothing (alternating UDP
// and ICMP-like packets): the per-packet cost of finding out, which must
// not allocate.
func BenchmarkCoalesceMixed(b *testing.B) {
	pkts := datagrams(2, 64)
	pkts[1][9] = 1 // not TCP nor UDP
	scratch := make([]byte, offload.MaxCoalescedHeader)
	b.ReportAllocs()
	for b.Loop() {
		offload.Coalesce(pkts, scratch)
		offload.CoalesceUDP(pkts, scratch)
	}
}
