// Package checksum is the Internet checksum (RFC 1071) of IPv4 headers and
// of ICMP, TCP and UDP packets, the one implementation the server, the
// client, the load generator and the test helpers share.
//
// A checksum is computed in two steps: Sum adds bytes to an unfolded
// accumulator, and Fold reduces it to 16 bits. Pieces of one message can
// be summed apart (a pseudo-header, then the segment) as long as every
// piece but the last has an even length, so that the 16-bit words line up.
package checksum

import (
	"encoding/binary"
	"math/bits"
)

// Sum adds b to the unfolded ones'-complement sum acc, as big-endian 16-bit
// words with an odd last byte padded with zero.
//
// The server verifies every TCP segment before merging it into a GSO write
// and the splitter checksums every byte a GSO read carries: with the plain
// loop (big-endian 64-bit words, one carry chain) this was 11% of the
// server's uplink CPU. This loop is about twice as fast on a 1500-byte
// packet, 1.5x on 64 KiB and 1.3x on 64 bytes (BenchmarkSum, against that
// loop in the same runs on the 2-core bench VM; docs/performance.md), for
// two reasons. It loads words in little-endian order (a plain load on
// amd64 and arm64) and reverses the bytes of the sum once at the end,
// which RFC 1071 allows (swapping the bytes of every 16-bit word swaps the
// bytes of their sum, and the order of the four 16-bit words in a 64-bit
// one does not change it), so no word needs a byte swap. And it runs two
// add-with-carry chains, one per 32-byte half of each 64-byte block, each
// counting its carries in a register of its own, so the CPU can work on
// both at once instead of waiting on a single carry flag. Four chains over
// 128 bytes measured no faster (presumably the loads are then the limit),
// and a loop that copies while it sums was slower than copy followed by
// Sum (copy moves 16 bytes or more a store, such a loop 8).
func Sum(b []byte, acc uint64) uint64 {
	var s0, s1, n0, n1, c uint64
	for len(b) >= 64 {
		w := b[:64]
		s0, c = bits.Add64(s0, binary.LittleEndian.Uint64(w[0:]), 0)
		s0, c = bits.Add64(s0, binary.LittleEndian.Uint64(w[8:]), c)
		s0, c = bits.Add64(s0, binary.LittleEndian.Uint64(w[16:]), c)
		s0, c = bits.Add64(s0, binary.LittleEndian.Uint64(w[24:]), c)
		n0 += c
		s1, c = bits.Add64(s1, binary.LittleEndian.Uint64(w[32:]), 0)
		s1, c = bits.Add64(s1, binary.LittleEndian.Uint64(w[40:]), c)
		s1, c = bits.Add64(s1, binary.LittleEndian.Uint64(w[48:]), c)
		s1, c = bits.Add64(s1, binary.LittleEndian.Uint64(w[56:]), c)
		n1 += c
		b = b[64:]
	}
	for len(b) >= 8 {
		s0, c = bits.Add64(s0, binary.LittleEndian.Uint64(b), 0)
		n0 += c
		b = b[8:]
	}
	s1, c = bits.Add64(s1, tail(b), 0)
	n1 += c
	// The carry counts are at most len(b)/8, far from overflowing, and
	// each carry stands for 2^64, which is 1 in ones'-complement arithmetic.
	s := add(add(s0, s1), n0+n1)
	return add(acc, bits.ReverseBytes64(s))
}

// tail loads the last 0 to 7 bytes of a message as a little-endian word
// padded with zeros, keeping each byte at the position a full word would
// give it, without copying them to a buffer.
func tail(b []byte) uint64 {
	var t uint64
	var shift uint
	if len(b) >= 4 {
		t = uint64(binary.LittleEndian.Uint32(b))
		shift = 32
		b = b[4:]
	}
	if len(b) >= 2 {
		t |= uint64(binary.LittleEndian.Uint16(b)) << shift
		shift += 16
		b = b[2:]
	}
	if len(b) == 1 {
		t |= uint64(b[0]) << shift
	}
	return t
}

// add is a + b in ones'-complement arithmetic: the carry out of the top
// bit comes back in at the bottom.
func add(a, b uint64) uint64 {
	s, c := bits.Add64(a, b, 0)
	return s + c
}

// Fold reduces an unfolded sum to 16 bits by adding the carries back in.
// It returns 0 only for a zero sum; a packet whose checksum verifies folds
// to 0xffff.
func Fold(acc uint64) uint16 {
	acc = acc>>32 + acc&0xffffffff
	acc = acc>>32 + acc&0xffffffff
	acc = acc>>16 + acc&0xffff
	acc = acc>>16 + acc&0xffff
	return uint16(acc)
}

// Checksum returns the value for the checksum field of b, whose own
// checksum field must be zero, starting from the unfolded sum initial (a
// pseudo-header's, or 0): the complement of the folded sum. Over data that
// already holds a valid checksum it returns 0.
func Checksum(b []byte, initial uint64) uint16 {
	return ^Fold(Sum(b, initial))
}
