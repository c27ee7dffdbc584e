// Package tun is the seam between 4over6d and the kernel's IPv4 side: a
// batch-sized Device interface, the Linux implementation (water for the file
// descriptor, netlink for addresses and links, nftables for NAT), and the
// forwarding setup a tunnel server needs. It knows nothing about sessions or
// frames, so the actors can be tested against an in-memory fake.
package tun

import (
	"errors"
	"time"
)

// MaxPacket bounds the size of one packet read from or written to a Device.
// IPv4 total length is 16 bits, so no IPv4 packet is larger.
const MaxPacket = 65535

// ErrClosed is returned by Read and Write once the device is closed, so an
// owner can tell an orderly shutdown from an I/O failure.
var ErrClosed = errors.New("tun device closed")

// Device is one layer-3 tunnel interface carrying raw IPv4 packets (no
// packet-information header). It is sized for batching: Read fills several
// buffers per call so the TUN actor pays one actor message per batch rather
// than per packet.
type Device interface {
	// Name is the kernel interface name, for logs and status.
	Name() string
	// MTU is the largest packet the device carries; sessions use it to
	// drop oversize client packets before they reach the kernel.
	MTU() int
	// Read blocks until at least one packet is available, then copies up
	// to len(bufs) packets into bufs, storing each length in sizes, and
	// returns how many it filled. Every buffer must hold MaxPacket bytes
	// or at least MTU bytes.
	Read(bufs [][]byte, sizes []int) (int, error)
	// Write sends every packet in bufs to the kernel and returns how many
	// were written before the first error.
	Write(bufs [][]byte) (int, error)
	// SetReadDeadline makes a pending or future Read return an error once
	// t has passed; the zero time clears it. The TUN actor uses it to stop
	// its reader goroutine on restart without closing the device.
	SetReadDeadline(t time.Time) error
	// Close releases the device; pending Reads return ErrClosed.
	Close() error
}
