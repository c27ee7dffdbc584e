package offload

import "github.com/4over6d/4over6d/tun/checksum"

// pseudoHeader is the unfolded sum of the IPv4 pseudo-header that TCP and
// UDP checksums cover: both addresses, the protocol and the L4 length.
func pseudoHeader(ip []byte, proto uint8, l4Len int) uint64 {
	return checksum.Sum(ip[12:20], uint64(proto)+uint64(l4Len))
}

// ipHeaderChecksum returns the checksum of the IPv4 header ip (options
// included), skipping the checksum field itself. Both pieces have even
// lengths, so summing them apart keeps the 16-bit word alignment.
func ipHeaderChecksum(ip []byte) uint16 {
	return ^checksum.Fold(checksum.Sum(ip[12:], checksum.Sum(ip[:10], 0)))
}
