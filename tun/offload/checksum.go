package offload

import (
	"encoding/binary"
	"math/bits"
)

// sum adds b to the unfolded ones'-complement sum acc (RFC 1071). It works
// on 64-bit big-endian words with end-around carry, because the splitter
// checksums every byte a GSO read carries and a 16-bit loop would cost
// more than the copy itself.
func sum(b []byte, acc uint64) uint64 {
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

// fold reduces an unfolded sum to 16 bits by adding the carries back in.
func fold(acc uint64) uint16 {
	acc = acc>>32 + acc&0xffffffff
	acc = acc>>32 + acc&0xffffffff
	acc = acc>>16 + acc&0xffff
	acc = acc>>16 + acc&0xffff
	return uint16(acc)
}

// pseudoHeader is the unfolded sum of the IPv4 pseudo-header that TCP and
// UDP checksums cover: both addresses, the protocol and the L4 length.
func pseudoHeader(ip []byte, proto uint8, l4Len int) uint64 {
	return sum(ip[12:20], uint64(proto)+uint64(l4Len))
}

// ipHeaderChecksum returns the checksum of the IPv4 header ip (options
// included), skipping the checksum field itself. Both pieces have even
// lengths, so summing them apart keeps the 16-bit word alignment.
func ipHeaderChecksum(ip []byte) uint16 {
	return ^fold(sum(ip[12:], sum(ip[:10], 0)))
}
