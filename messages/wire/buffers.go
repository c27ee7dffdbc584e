package wire

import "sync"

// Packet buffers come in two size classes. Almost every packet fits the
// small class (the TUN MTU is at most 1500 by default); the large class
// exists so a client's legal 64 KiB IPv4 packet is never truncated.
const (
	SmallPacketBuf = 2048
	LargePacketBuf = 65536
	// BatchCap is the most packets moved in one batch: one actor message
	// in the server (enough to amortise the hand-off over many packets,
	// measured per batch in docs/performance.md, "Go benchmarks of the hot
	// path", while keeping latency for the first packet low), one TUN read
	// in the client.
	BatchCap = 64
)

var (
	smallBufs = sync.Pool{New: func() any { return new([SmallPacketBuf]byte) }}
	largeBufs = sync.Pool{New: func() any { return new([LargePacketBuf]byte) }}
)

// GetPacketBuf lends a buffer with room for n bytes, returned with
// ReleasePacket. Lending instead of allocating keeps the hot path free of
// garbage: a buffer travels from a reader to a writer and back to the pool.
func GetPacketBuf(n int) []byte {
	if n <= SmallPacketBuf {
		return smallBufs.Get().(*[SmallPacketBuf]byte)[:n]
	}
	return largeBufs.Get().(*[LargePacketBuf]byte)[:n]
}

// ReleasePacket gives a buffer from GetPacketBuf back. Buffers of any other
// capacity are left to the garbage collector, so releasing a foreign slice is
// harmless.
func ReleasePacket(p []byte) {
	switch cap(p) {
	case SmallPacketBuf:
		smallBufs.Put((*[SmallPacketBuf]byte)(p[:SmallPacketBuf]))
	case LargePacketBuf:
		largeBufs.Put((*[LargePacketBuf]byte)(p[:LargePacketBuf]))
	}
}
