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
// words with an odd last byte padded with zero. It works on 64-bit words
// with end-around carry, because the offload splitter checksums every byte
// a GSO read carries and a 16-bit loop would cost more than the copy itself.
func Sum(b []byte, acc uint64) uint64 {
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
