package wire

import (
	"encoding/binary"
	"errors"

	"github.com/4over6d/4over6d/tun/checksum"
)

// Reasons Fragment refuses a packet. Nothing is emitted when it does.
var (
	// ErrMTUTooSmall reports an MTU that leaves no room for 8 bytes of
	// data after the packet's header.
	ErrMTUTooSmall = errors.New("messages: MTU too small for the IPv4 header and one fragment")
	// ErrBadOptions reports IPv4 options whose lengths do not add up, so
	// the copied ones cannot be told from the others.
	ErrBadOptions = errors.New("messages: malformed IPv4 options")
	// ErrBadOffset reports a fragment whose data would end beyond the
	// 64 KiB an IPv4 datagram can hold, so no offset can describe its
	// pieces (and no host could reassemble it).
	ErrBadOffset = errors.New("messages: fragment extends beyond 64 KiB")
)

// Option numbers with a meaning for fragmentation (RFC 791).
const (
	ipv4OptEnd    = 0
	ipv4OptNOP    = 1
	ipv4OptCopied = 0x80 // the copy flag: the option goes into every fragment
)

// Fragment splits pkt, a packet ParseIPv4 accepted whose DF flag is clear,
// into fragments of at most mtu bytes as RFC 791 says: every fragment's
// data but the last's is a multiple of 8 bytes, offsets count from pkt's
// own (pkt may be a fragment already), MF is set on all but the last, which
// keeps pkt's, and the header checksum is recomputed. The first fragment
// carries pkt's header whole; the others carry only the options marked to
// be copied, the rest overwritten by NOPs, as Linux does, so every header
// has the same length. Each fragment is in a buffer from GetPacketBuf,
// handed to emit in order, which then owns it. On error nothing is
// emitted.
func Fragment(pkt []byte, mtu int, emit func(frag []byte)) error {
	headerLen := int(pkt[0]&0x0f) * 4
	chunk := (mtu - headerLen) &^ 7
	if chunk < 8 {
		return ErrMTUTooSmall
	}
	later, err := laterHeader(pkt[:headerLen])
	if err != nil {
		return err
	}
	fields := binary.BigEndian.Uint16(pkt[6:8])
	start := int(fields&ipv4OffsetMask) * 8
	data := pkt[headerLen:]
	if start+len(data) > 0xffff {
		return ErrBadOffset
	}
	keep := fields &^ (ipv4FlagMF | ipv4OffsetMask) // DF and the reserved bit
	for off := 0; ; off += chunk {
		n := min(chunk, len(data)-off)
		last := off+n == len(data)
		header := later
		if off == 0 {
			header = pkt[:headerLen]
		}
		frag := GetPacketBuf(headerLen + n)
		copy(frag, header)
		copy(frag[headerLen:], data[off:off+n])
		flags := keep | uint16((start+off)/8)
		if !last || fields&ipv4FlagMF != 0 {
			flags |= ipv4FlagMF
		}
		binary.BigEndian.PutUint16(frag[2:4], uint16(headerLen+n))
		binary.BigEndian.PutUint16(frag[6:8], flags)
		frag[10], frag[11] = 0, 0
		binary.BigEndian.PutUint16(frag[10:12], checksum.Checksum(frag[:headerLen], 0))
		emit(frag)
		if last {
			return nil
		}
	}
}

// laterHeader returns the header of the fragments after the first: header
// with every option not marked to be copied overwritten by NOPs. Without
// options that is header itself.
func laterHeader(header []byte) ([]byte, error) {
	if len(header) == ipv4MinHeader {
		return header, nil
	}
	later := append([]byte(nil), header...)
	opts := later[ipv4MinHeader:]
	for i := 0; i < len(opts); {
		switch opts[i] {
		case ipv4OptEnd:
			return later, nil
		case ipv4OptNOP:
			i++
			continue
		}
		if i+1 >= len(opts) || opts[i+1] < 2 || i+int(opts[i+1]) > len(opts) {
			return nil, ErrBadOptions
		}
		n := int(opts[i+1])
		if opts[i]&ipv4OptCopied == 0 {
			for j := i; j < i+n; j++ {
				opts[j] = ipv4OptNOP
			}
		}
		i += n
	}
	return later, nil
}
