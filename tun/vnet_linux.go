//go:build linux

package tun

// Offloads: with IFF_VNET_HDR every read and write carries a virtio-net
// header, and TUNSETOFFLOAD tells the kernel it may hand us TCP/IPv4 and
// (kernel 6.2 on) UDP GSO packets (up to 64 KiB) and packets with
// unfinished checksums. Reads split those into ordinary packets for the
// tunnel (tun/offload.Splitter); writes merge runs of one flow's segments
// or equal-sized datagrams into one GSO packet (offload.Coalesce,
// offload.CoalesceUDP), so the kernel forwards, NATs and delivers one
// packet where it would otherwise run its whole stack once per packet. water cannot set
// IFF_VNET_HDR, so this path opens /dev/net/tun itself; water remains the
// path without offloads.

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/4over6d/4over6d/tun/offload"
)

// offloadFeatures is what the device accepts from and hands to the kernel:
// partial checksums and TCP/IPv4 segmentation. Everything else (TCP with
// ECN, TCP/IPv6) the kernel segments before the TUN sees it.
const offloadFeatures = unix.TUN_F_CSUM | unix.TUN_F_TSO4

// udpOffloadFeatures adds UDP segmentation where the kernel has it (6.2
// on; it takes USO4 only together with USO6). IPv6 UDP GSO packets are
// then handed over unsplit and dropped as malformed, like any IPv6 packet
// the tunnel cannot carry.
const udpOffloadFeatures = offloadFeatures | unix.TUN_F_USO4 | unix.TUN_F_USO6

// maxWriteIovecs bounds one merged write: the virtio-net header, the merged
// IPv4+TCP header and one payload per packet of a batch.
const maxWriteIovecs = 2 + 128

// OffloadStats counts what the offloads did, so an operator can see them
// at work (or not) in the metrics.
type OffloadStats struct {
	// GSOReads is the number of GSO packets read; SegmentsRead the
	// packets they were split into.
	GSOReads, SegmentsRead uint64
	// GSOWrites is the number of merged writes; SegmentsWritten the
	// packets merged into them.
	GSOWrites, SegmentsWritten uint64
	// Malformed counts packets the kernel handed over that could not be
	// split or checksummed, and were dropped.
	Malformed uint64
	// UDPGSOWrites is the part of GSOWrites that merged UDP datagrams,
	// UDPSegmentsWritten the datagrams merged into them.
	UDPGSOWrites, UDPSegmentsWritten uint64
}

// vnet is the per-device state of the offload path. The reader half
// (rbuf, split) is used only by the goroutine calling Read and the writer
// half (scratch, iov, hdr) only by the one calling Write, as Device
// requires one of each at a time.
type vnet struct {
	// usoErr is nil when the kernel took UDP segmentation offload, and
	// says why not otherwise; only then does write merge datagrams.
	usoErr  error
	rbuf    []byte
	split   offload.Splitter
	scratch []byte
	iov     []unix.Iovec
	hdr     [offload.HeaderLen]byte
	zero    [offload.HeaderLen]byte

	gsoReads, segmentsRead, gsoWrites, segmentsWritten, malformed atomic.Uint64
	udpGSOWrites, udpSegmentsWritten                              atomic.Uint64
}

func newVnet(usoErr error) *vnet {
	return &vnet{
		usoErr:  usoErr,
		rbuf:    make([]byte, offload.HeaderLen+MaxPacket),
		scratch: make([]byte, offload.MaxCoalescedHeader),
		iov:     make([]unix.Iovec, 0, maxWriteIovecs),
	}
}

// openOffload creates the TUN name with IFF_VNET_HDR and enables the
// offloads, UDP segmentation too if the kernel takes it (usoErr says why
// not). The descriptor is non-blocking, so os.NewFile puts it behind
// the netpoller exactly like water's.
func openOffload(name string, multiQueue bool) (_ *os.File, _ string, usoErr error, _ error) {
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if err != nil {
		return nil, "", nil, fmt.Errorf("failed to open /dev/net/tun: %w", err)
	}
	ifr, err := unix.NewIfreq(name)
	if err == nil {
		flags := uint16(unix.IFF_TUN | unix.IFF_NO_PI | unix.IFF_VNET_HDR)
		if multiQueue {
			flags |= unix.IFF_MULTI_QUEUE
		}
		ifr.SetUint16(flags)
		err = unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr)
	}
	if err != nil {
		unix.Close(fd)
		return nil, "", nil, fmt.Errorf("failed to create TUN %s with virtio-net headers: %w", name, err)
	}
	if err := unix.IoctlSetInt(fd, unix.TUNSETOFFLOAD, udpOffloadFeatures); err != nil {
		usoErr = fmt.Errorf("failed to enable UDP segmentation offload on TUN %s (kernel before 6.2?): %w", name, err)
		if err := unix.IoctlSetInt(fd, unix.TUNSETOFFLOAD, offloadFeatures); err != nil {
			unix.Close(fd)
			return nil, "", nil, fmt.Errorf("failed to enable checksum and TCP segmentation offload on TUN %s: %w", name, err)
		}
	}
	return os.NewFile(uintptr(fd), "/dev/net/tun"), ifr.Name(), usoErr, nil
}

// drain is the offload counterpart of the plain drain: it first hands out
// segments left from a GSO packet an earlier call could not fit, then reads
// until the fd would block or bufs is full.
func (v *vnet) drain(fd int, bufs [][]byte, sizes []int, n int) (int, error) {
	for n < len(bufs) {
		if !v.split.Done() {
			n = v.emit(bufs, sizes, n)
			continue
		}
		size, ok, err := readPacket(fd, v.rbuf)
		if !ok {
			return n, err
		}
		n = v.unpack(v.rbuf[:size], bufs, sizes, n)
	}
	return n, nil
}

// unpack turns one read into packets: an ordinary packet is copied into
// bufs[n] with its checksum completed; a GSO packet starts the splitter.
func (v *vnet) unpack(b []byte, bufs [][]byte, sizes []int, n int) int {
	var h offload.Header
	if err := h.Decode(b); err != nil {
		v.malformed.Add(1)
		return n
	}
	pkt := b[offload.HeaderLen:]
	if h.GSOType != offload.GSONone {
		if err := v.split.Reset(h, pkt); err != nil {
			v.malformed.Add(1)
			return n
		}
		v.gsoReads.Add(1)
		v.segmentsRead.Add(uint64(v.split.Segments()))
		return v.emit(bufs, sizes, n)
	}
	if len(pkt) > len(bufs[n]) || offload.CompleteChecksum(h, pkt) != nil {
		v.malformed.Add(1)
		return n
	}
	sizes[n] = copy(bufs[n], pkt)
	return n + 1
}

// emit moves segments of the current GSO packet into bufs until either
// runs out.
func (v *vnet) emit(bufs [][]byte, sizes []int, n int) int {
	for n < len(bufs) && !v.split.Done() {
		size, err := v.split.Next(bufs[n])
		if err != nil {
			v.malformed.Add(1)
			v.split = offload.Splitter{}
			return n
		}
		sizes[n] = size
		n++
	}
	return n
}

// write sends bufs with one writev(2) per merged run or single packet and
// returns how many packets went out before the first error.
func (v *vnet) write(d *Linux, bufs [][]byte) (int, error) {
	for i := 0; i < len(bufs); {
		n, h, head := v.coalesce(bufs[i:min(len(bufs), i+maxWriteIovecs-2)])
		v.iov = v.iov[:0]
		if n == 1 {
			v.iov = appendIovec(v.iov, v.zero[:], bufs[i])
		} else {
			h.Encode(v.hdr[:])
			v.iov = appendIovec(v.iov, v.hdr[:], head)
			for _, p := range bufs[i : i+n] {
				v.iov = appendIovec(v.iov, p[len(head):])
			}
			v.gsoWrites.Add(1)
			v.segmentsWritten.Add(uint64(n))
			if h.GSOType == offload.GSOUDPL4 {
				v.udpGSOWrites.Add(1)
				v.udpSegmentsWritten.Add(uint64(n))
			}
		}
		err := v.writev(d)
		runtime.KeepAlive(bufs)
		if err != nil {
			return i, err
		}
		i += n
	}
	return len(bufs), nil
}

// coalesce merges a TCP run, or with UDP offload a UDP run, at the start
// of pkts (see offload.Coalesce).
func (v *vnet) coalesce(pkts [][]byte) (int, offload.Header, []byte) {
	n, h, head := offload.Coalesce(pkts, v.scratch)
	if n == 1 && v.usoErr == nil {
		return offload.CoalesceUDP(pkts, v.scratch)
	}
	return n, h, head
}

func appendIovec(iov []unix.Iovec, bufs ...[]byte) []unix.Iovec {
	for _, b := range bufs {
		if len(b) == 0 {
			continue
		}
		vec := unix.Iovec{Base: &b[0]}
		vec.SetLen(len(b))
		iov = append(iov, vec)
	}
	return iov
}

// writev issues one writev(2) of v.iov. A TUN write takes the whole packet
// or fails, so a short count never needs a retry.
func (v *vnet) writev(d *Linux) error {
	var errno unix.Errno
	err := d.raw.Write(func(fd uintptr) bool {
		for {
			_, _, errno = unix.Syscall(unix.SYS_WRITEV, fd, uintptr(unsafe.Pointer(&v.iov[0])), uintptr(len(v.iov)))
			if errno != unix.EINTR {
				return errno != unix.EAGAIN
			}
		}
	})
	clear(v.iov) // drop the pointers into pooled packet buffers
	if err != nil {
		return err
	}
	if errno != 0 {
		return errno
	}
	return nil
}

func (v *vnet) stats() OffloadStats {
	return OffloadStats{
		GSOReads:        v.gsoReads.Load(),
		SegmentsRead:    v.segmentsRead.Load(),
		GSOWrites:       v.gsoWrites.Load(),
		SegmentsWritten: v.segmentsWritten.Load(),
		Malformed:       v.malformed.Load(),

		UDPGSOWrites:       v.udpGSOWrites.Load(),
		UDPSegmentsWritten: v.udpSegmentsWritten.Load(),
	}
}

// errOffloadOff is the reason Offload reports when offloads were not asked
// for.
var errOffloadOff = errors.New("offloads disabled by configuration")

// UDPOffload reports whether UDP segmentation offload is on, and if not,
// why: offloads are off altogether (the reason Offload gives), or the
// kernel refused it (before 6.2) while TCP offloads work on without it.
func (d *Linux) UDPOffload() (bool, error) {
	if d.vnet == nil {
		_, err := d.Offload()
		return false, err
	}
	return d.vnet.usoErr == nil, d.vnet.usoErr
}
