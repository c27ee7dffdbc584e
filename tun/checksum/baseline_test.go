package checksum_test

import (
	"encoding/binary"
	"fmt"
	"math/bits"
	"testing"

	"github.com/4over6d/4over6d/tun/checksum"
)

// sumBaseline is the Sum that the two-chain loop replaced (big-endian 64-bit
// words, one carry chain, 32 bytes a loop), kept so that BenchmarkSum
// measures the speed-up as a ratio in one run on the same machine, and
// checked against the reference so that the ratio compares two correct sums.
func sumBaseline(b []byte, acc uint64) uint64 {
	var carry uint64
	for len(b) >= 32 {
		acc, carry = bits.Add64(acc, binary.BigEndian.Uint64(b), carry)
		acc, carry = bits.Add64(acc, binary.BigEndian.Uint64(b[8:]), carry)
		acc, carry = bits.Add64(acc, binary.BigEndian.Uint64(b[16:]), carry)
		acc, carry = bits.Add64(acc, binary.BigEndian.Uint64(b[24:]), carry)
		b = b[32:]
	}
	for len(b) >= 8 {
		acc, carry = bits.Add64(acc, binary.BigEndian.Uint64(b), carry)
		b = b[8:]
	}
	acc, carry = bits.Add64(acc, carry, 0)
	var tail [8]byte
	copy(tail[:], b)
	acc, carry = bits.Add64(acc, binary.BigEndian.Uint64(tail[:]), 0)
	return acc + carry
}

// sink keeps the benchmarked sums alive so the compiler cannot drop them.
var sink uint64

// BenchmarkSum compares Sum with sumBaseline on a small packet, a full
// 1500-byte one and a 64 KiB GSO packet. Compare the two lines of a size
// from the same run (benchstat's old/new columns): the machine is shared,
// so only ratios mean something.
func BenchmarkSum(b *testing.B) {
	impls := []struct {
		name string
		sum  func([]byte, uint64) uint64
	}{
		{"baseline", sumBaseline},
		{"sum", checksum.Sum},
	}
	for _, n := range []int{64, 1500, 65536} {
		buf := make([]byte, n)
		for i := range buf {
			buf[i] = byte(i*7 + 3)
		}
		for _, im := range impls {
			b.Run(fmt.Sprintf("%s/%d", im.name, n), func(b *testing.B) {
				b.SetBytes(int64(n))
				b.ReportAllocs()
				for b.Loop() {
					sink = im.sum(buf, sink)
				}
			})
		}
	}
}
