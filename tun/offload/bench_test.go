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
