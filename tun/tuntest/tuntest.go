// Package tuntest is an in-memory tun.Device and an IPv4 packet builder, so
// the actors can be driven end to end in `go test` without a kernel, root or
// a network namespace. The test plays the kernel: it injects what the kernel
// would hand the server and reads back what the server wrote.
//
// The fake starts no goroutines: blocking is done with channels and the read
// deadline with a timer local to each Read, so goleak stays quiet.
package tuntest

import (
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/4over6d/4over6d/tun"
)

// queueLen bounds both queues. It is far above what a unit test keeps in
// flight, so Inject only blocks and Write only drops when a test forgets to
// read, which is then visible through Dropped.
const queueLen = 4096

var _ tun.Device = (*Device)(nil)

// ErrPacketSize is returned by Write for an empty packet or one above the
// MTU, so a test notices a session that should have dropped it first.
var ErrPacketSize = errors.New("packet size outside 1..MTU")

// Device is a fake tun.Device. What the server writes is captured on
// Written, what the test injects is returned by Read, so a test can assert
// on packets instead of on kernel side effects.
type Device struct {
	name string
	mtu  int

	in        chan []byte   // injected packets, returned by Read
	out       chan []byte   // written packets, handed to the test
	closed    chan struct{} // closed by Close
	closeOnce sync.Once
	dropped   atomic.Uint64
	// reading counts Reads in progress and maxReading the most at once:
	// a device has one reader, and a second one is a bug worth catching.
	reading, maxReading atomic.Int32
	panicWrites         atomic.Int32 // Writes left that panic

	mu       sync.Mutex
	deadline time.Time
	// rearm is closed and replaced on every SetReadDeadline so a Read
	// already waiting picks up the new deadline.
	rearm    chan struct{}
	loopback netip.Prefix
}

// New returns an open Device that reports name and mtu, as the Linux
// driver would for the interface it created.
func New(name string, mtu int) *Device {
	return &Device{
		name:   name,
		mtu:    mtu,
		in:     make(chan []byte, queueLen),
		out:    make(chan []byte, queueLen),
		closed: make(chan struct{}),
		rearm:  make(chan struct{}),
	}
}

// Inject queues a copy of pkt to be returned by Read, as if the kernel had
// routed it into the tunnel. It blocks only while the queue is full; after
// Close it discards pkt, since a closed device has no reader. It panics if
// pkt is empty or larger than the MTU, because the kernel never hands the
// server such a packet and a test doing so is a bug in the test.
func (d *Device) Inject(pkt []byte) {
	if len(pkt) == 0 || len(pkt) > d.mtu {
		panic(fmt.Sprintf("tuntest: Inject of %d-byte packet on %s with MTU %d", len(pkt), d.name, d.mtu))
	}
	if d.isClosed() {
		return
	}
	select {
	case d.in <- clone(pkt):
	case <-d.closed:
	}
}

// Pending is the number of injected packets no Read has taken yet, so a
// test can wait for the reader to have a packet in hand (e.g. before it
// stops the reader) instead of guessing with a sleep.
func (d *Device) Pending() int {
	return len(d.in)
}

// Written delivers a copy of every packet the server wrote, in order, so a
// test can assert on what reached the kernel.
func (d *Device) Written() <-chan []byte {
	return d.out
}

// Dropped counts packets lost because a queue was full: written packets
// nobody read from Written, and loopback packets that found the read queue
// full (the kernel drops those too). A test that expects every packet can
// assert it is zero.
func (d *Device) Dropped() uint64 {
	return d.dropped.Load()
}

// SetLoopback makes every packet later written with an IPv4 destination
// inside p also come back out of Read, the way the kernel routes traffic
// between two clients of the server back into the tunnel. The zero Prefix
// turns loopback off.
func (d *Device) SetLoopback(p netip.Prefix) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.loopback = p
}

// Name returns the name given to New.
func (d *Device) Name() string {
	return d.name
}

// MTU returns the MTU given to New.
func (d *Device) MTU() int {
	return d.mtu
}

// Read blocks until at least one injected packet is queued, the read
// deadline passes or the device is closed, then copies up to len(bufs)
// queued packets without blocking again. A passed deadline yields an error
// matching os.ErrDeadlineExceeded, as with the real device's file.
func (d *Device) Read(bufs [][]byte, sizes []int) (int, error) {
	now := d.reading.Add(1)
	defer d.reading.Add(-1)
	for {
		old := d.maxReading.Load()
		if now <= old || d.maxReading.CompareAndSwap(old, now) {
			break
		}
	}
	if err := d.checkReadBuffers(bufs, sizes); err != nil {
		return 0, err
	}
	first, err := d.waitPacket()
	if err != nil {
		return 0, err
	}
	sizes[0] = copy(bufs[0], first)
	n := 1
	for n < len(bufs) {
		select {
		case pkt := <-d.in:
			sizes[n] = copy(bufs[n], pkt)
			n++
		default:
			return n, nil
		}
	}
	return n, nil
}

// checkReadBuffers enforces the tun.Device contract up front, so a packet
// is never taken off the queue and then lost for lack of room.
func (d *Device) checkReadBuffers(bufs [][]byte, sizes []int) error {
	if len(bufs) == 0 || len(sizes) < len(bufs) {
		return fmt.Errorf("failed to read from %s with %d buffers and %d sizes: %w", d.name, len(bufs), len(sizes), io.ErrShortBuffer)
	}
	for i, b := range bufs {
		if len(b) < d.mtu {
			return fmt.Errorf("failed to read from %s: buffer %d holds %d bytes, MTU is %d: %w", d.name, i, len(b), d.mtu, io.ErrShortBuffer)
		}
	}
	return nil
}

// waitPacket returns the next injected packet, starting over whenever
// SetReadDeadline moves the deadline.
func (d *Device) waitPacket() ([]byte, error) {
	for {
		d.mu.Lock()
		deadline, rearm := d.deadline, d.rearm
		d.mu.Unlock()
		pkt, err := d.waitUntil(deadline, rearm)
		if pkt != nil || err != nil {
			return pkt, err
		}
	}
}

// waitUntil waits for a packet until deadline (none if zero) and returns
// nil, nil if rearm fires first.
func (d *Device) waitUntil(deadline time.Time, rearm <-chan struct{}) ([]byte, error) {
	if d.isClosed() {
		return nil, tun.ErrClosed
	}
	var expired <-chan time.Time
	if !deadline.IsZero() {
		wait := time.Until(deadline)
		if wait <= 0 {
			return nil, fmt.Errorf("failed to read from %s: %w", d.name, os.ErrDeadlineExceeded)
		}
		timer := time.NewTimer(wait)
		defer timer.Stop()
		expired = timer.C
	}
	select {
	case pkt := <-d.in:
		return pkt, nil
	case <-d.closed:
		return nil, tun.ErrClosed
	case <-expired:
		return nil, fmt.Errorf("failed to read from %s: %w", d.name, os.ErrDeadlineExceeded)
	case <-rearm:
		return nil, nil
	}
}

// Write captures a copy of each packet for Written and, if its destination
// is in the loopback prefix, queues another copy for Read. Like the kernel
// it refuses empty packets and packets above the MTU, returning how many
// were written before the refused one.
func (d *Device) Write(bufs [][]byte) (int, error) {
	if d.isClosed() {
		return 0, tun.ErrClosed
	}
	if d.panicWrites.Add(-1) >= 0 {
		panic("tuntest: injected panic in Write")
	}
	d.panicWrites.Store(-1)
	d.mu.Lock()
	loopback := d.loopback
	d.mu.Unlock()

	for i, pkt := range bufs {
		if len(pkt) == 0 || len(pkt) > d.mtu {
			return i, fmt.Errorf("failed to write %d-byte packet to %s with MTU %d: %w", len(pkt), d.name, d.mtu, ErrPacketSize)
		}
		d.offer(d.out, pkt)
		if loopback.IsValid() && loopback.Contains(destination(pkt)) {
			d.offer(d.in, pkt)
		}
	}
	return len(bufs), nil
}

// offer queues a copy of pkt on q, or counts it as dropped if q is full, so
// a test that never drains a queue cannot deadlock the server.
func (d *Device) offer(q chan<- []byte, pkt []byte) {
	select {
	case q <- clone(pkt):
	default:
		d.dropped.Add(1)
	}
}

// MaxConcurrentReads is the most Reads that were ever in progress at once;
// more than one means two readers shared the device.
func (d *Device) MaxConcurrentReads() int { return int(d.maxReading.Load()) }

// PanicOnWrites makes the next n calls to Write panic, as a driver bug
// would, so a test can check what the writer's owner does with its batch.
func (d *Device) PanicOnWrites(n int) { d.panicWrites.Store(int32(n)) }

// SetReadDeadline sets the deadline for pending and future Reads; the zero
// time clears it. A pending Read re-evaluates at once.
func (d *Device) SetReadDeadline(t time.Time) error {
	if d.isClosed() {
		return tun.ErrClosed
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.deadline = t
	close(d.rearm)
	d.rearm = make(chan struct{})
	return nil
}

// Close makes pending and future Reads and Writes return tun.ErrClosed.
// Closing twice is harmless, so an owner and a test cleanup may both close.
func (d *Device) Close() error {
	d.closeOnce.Do(func() { close(d.closed) })
	return nil
}

func (d *Device) isClosed() bool {
	select {
	case <-d.closed:
		return true
	default:
		return false
	}
}

func clone(pkt []byte) []byte {
	return append([]byte(nil), pkt...)
}

// destination is pkt's IPv4 destination, or the invalid Addr if pkt is not
// an IPv4 packet; the invalid Addr is in no prefix.
func destination(pkt []byte) netip.Addr {
	if len(pkt) < ipv4HeaderLen || pkt[0]>>4 != 4 {
		return netip.Addr{}
	}
	return netip.AddrFrom4([4]byte(pkt[16:20]))
}
