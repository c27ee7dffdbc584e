//go:build linux

package tun

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/songgao/water"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// minMTU is the smallest MTU an IPv4 link may have (RFC 791), so a smaller
// configured value is a mistake rather than a tuning choice.
const minMTU = 68

// maxPoolBits keeps room in the pool for the server address plus at least
// one client address.
const maxPoolBits = 30

// Config describes the TUN interface the server owns: its name, its MTU and
// the client address pool it routes, whose first host the TUN takes.
type Config struct {
	// Name is the kernel interface name, at most 15 bytes.
	Name string
	// MTU is the interface MTU, between 68 and MaxPacket.
	MTU int
	// Prefix is the client address pool, e.g. 192.0.2.0/24; the kernel
	// routes it to the TUN once the server address is assigned.
	Prefix netip.Prefix
	// Offload asks for checksum and TCP segmentation offload (see
	// vnet_linux.go). If the kernel refuses, the device opens without
	// and Offload on it reports why.
	Offload bool
	// Queues is how many queues (file descriptors) the interface gets,
	// 1..MaxQueues; 0 means 1. With more than one the TUN is created with
	// IFF_MULTI_QUEUE and each queue is its own Device, so one reader and
	// one writer per queue can run on different cores (OpenQueues). One
	// queue is the plain single-queue TUN, without the flag.
	Queues int
}

// MaxQueues bounds Config.Queues: far more than the cores a server has,
// well under the kernel's 256 (MAX_TAP_QUEUES).
const MaxQueues = 64

// queues is Config.Queues with 0 read as 1.
func (cfg Config) queues() int { return max(cfg.Queues, 1) }

// ServerAddr returns the first host of the prefix (192.0.2.1 for
// 192.0.2.0/24). The server's TUN takes it, so the pool allocator must never
// lease it to a client. It returns the zero Addr for an invalid prefix.
func ServerAddr(p netip.Prefix) netip.Addr {
	if !p.IsValid() {
		return netip.Addr{}
	}
	return p.Masked().Addr().Next()
}

// Linux is the Device backed by a kernel TUN interface. The file descriptor
// comes from water and sits behind Go's netpoller, so deadlines and Close
// unblock a pending Read without a dedicated thread per device.
type Linux struct {
	name   string
	mtu    int
	index  int
	file   *os.File
	raw    syscall.RawConn
	links  *netlink.Handle
	closed atomic.Bool
	// open counts the interface's queues not closed yet, shared by all of
	// them: the last Close deletes the link and closes links.
	open *atomic.Int32
	// vnet is set when the device was opened with offloads; offloadErr
	// says why it was not.
	vnet       *vnet
	offloadErr error
}

var _ Device = (*Linux)(nil)

// Open creates the TUN interface cfg.Name in the calling thread's network
// namespace, assigns it ServerAddr(cfg.Prefix) with the prefix length, sets
// its MTU, disables IPv6 on it (the tunnel carries IPv4 only, so the kernel
// must not send router solicitations or MLD reports into it) and brings it
// up. A persistent TUN of the same name is a leftover and is deleted first;
// a non-persistent TUN (held by a live process) or a link of another type
// makes Open fail instead. The TUN itself is not persistent, so the kernel
// removes it when the process dies, even by kill -9.
// Open is OpenQueues for a single queue; cfg.Queues must be 0 or 1.
func Open(cfg Config) (*Linux, error) {
	if cfg.queues() != 1 {
		return nil, fmt.Errorf("failed to open TUN %s: Open takes one queue, not %d (use OpenQueues)", cfg.Name, cfg.Queues)
	}
	devs, err := OpenQueues(cfg)
	if err != nil {
		return nil, err
	}
	return devs[0], nil
}

// OpenQueues opens the interface like Open, with cfg.Queues queues. Each
// queue is an independent Device; the link goes when the last one is
// closed (CloseQueues closes them all). The first queue also carries the
// link-wide methods (Offload reports for all, AddRoutes, DeleteRoutes).
func OpenQueues(cfg Config) ([]*Linux, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	links, err := netlink.NewHandle()
	if err != nil {
		return nil, fmt.Errorf("failed to open netlink handle: %w", err)
	}
	devs, err := open(links, cfg)
	if err != nil {
		links.Close()
		return nil, err
	}
	return devs, nil
}

// CloseQueues closes every queue, which removes the link.
func CloseQueues(devs []*Linux) error {
	errs := make([]error, 0, len(devs))
	for _, d := range devs {
		errs = append(errs, d.Close())
	}
	return errors.Join(errs...)
}

func (cfg Config) validate() error {
	switch {
	case cfg.Name == "" || len(cfg.Name) >= unix.IFNAMSIZ:
		return fmt.Errorf("failed to open TUN: name %q must have 1 to %d bytes", cfg.Name, unix.IFNAMSIZ-1)
	case cfg.MTU < minMTU || cfg.MTU > MaxPacket:
		return fmt.Errorf("failed to open TUN %s: MTU %d is outside %d..%d", cfg.Name, cfg.MTU, minMTU, MaxPacket)
	case !cfg.Prefix.IsValid() || !cfg.Prefix.Addr().Is4():
		return fmt.Errorf("failed to open TUN %s: pool %v is not an IPv4 prefix", cfg.Name, cfg.Prefix)
	case cfg.Queues < 0 || cfg.Queues > MaxQueues:
		return fmt.Errorf("failed to open TUN %s: %d queues is outside 1..%d", cfg.Name, cfg.Queues, MaxQueues)
	case cfg.Prefix.Bits() > maxPoolBits:
		return fmt.Errorf("failed to open TUN %s: pool %v is longer than /%d", cfg.Name, cfg.Prefix, maxPoolBits)
	}
	return nil
}

func open(links *netlink.Handle, cfg Config) ([]*Linux, error) {
	devs, err := createQueues(links, cfg.Name, cfg.MTU, cfg.Offload, cfg.queues())
	if err != nil {
		return nil, err
	}
	if err := configureLink(links, devs[0].index, devs[0].name, cfg); err != nil {
		closeFiles(devs)
		return nil, err
	}
	return devs, nil
}

// createQueues is create for n queues (a single one without
// IFF_MULTI_QUEUE): the first queue creates the interface, the others attach to it by name with the same flags (the
// kernel refuses a queue whose IFF_MULTI_QUEUE or IFF_VNET_HDR differs).
// TUNSETOFFLOAD is repeated on each queue's descriptor: the kernel keeps
// the offloads per interface, so the repeats change nothing, but every
// descriptor then answers for itself. A failure closes the queues opened so
// far, which removes the interface.
func createQueues(links *netlink.Handle, name string, mtu int, withOffload bool, n int) ([]*Linux, error) {
	if err := removeStaleLink(links, name); err != nil {
		return nil, err
	}
	multiQueue := n > 1
	first, err := openQueue(links, name, mtu, withOffload, multiQueue)
	if err != nil {
		return nil, err
	}
	devs := []*Linux{first}
	for len(devs) < n {
		dev, err := openQueue(links, first.name, mtu, first.vnet != nil, multiQueue)
		if err == nil && dev.vnet == nil && first.vnet != nil {
			err = fmt.Errorf("queue %d of TUN %s opened without offloads: %w", len(devs), first.name, dev.offloadErr)
			dev.file.Close()
		}
		if err != nil {
			closeFiles(devs)
			return nil, fmt.Errorf("failed to open queue %d of %d of TUN %s: %w", len(devs)+1, n, first.name, err)
		}
		dev.open, dev.offloadErr = first.open, first.offloadErr
		devs = append(devs, dev)
	}
	first.open.Store(int32(n))
	return devs, nil
}

// closeFiles closes the queues' descriptors of an interface not handed out
// yet; the kernel removes it with the last.
func closeFiles(devs []*Linux) {
	for _, d := range devs {
		d.file.Close()
	}
}

// create replaces a stale link of that name and opens a fresh TUN, with
// offloads if asked and the kernel agrees, else through water; the caller
// configures addresses and brings it up.
func create(links *netlink.Handle, name string, mtu int, withOffload bool) (*Linux, error) {
	if err := removeStaleLink(links, name); err != nil {
		return nil, err
	}
	return openQueue(links, name, mtu, withOffload, false)
}

// openQueue opens one descriptor of the TUN name, creating the interface
// if it does not exist yet; multiQueue sets IFF_MULTI_QUEUE.
func openQueue(links *netlink.Handle, name string, mtu int, withOffload, multiQueue bool) (*Linux, error) {
	offloadErr := errOffloadOff
	if withOffload {
		file, kernelName, usoErr, err := openOffload(name, multiQueue)
		if err == nil {
			dev, err := newLinux(file, kernelName, links, mtu)
			if err != nil {
				file.Close()
				return nil, err
			}
			dev.vnet = newVnet(usoErr)
			return dev, nil
		}
		offloadErr = err
	}
	file, kernelName, err := openWater(name, multiQueue)
	if err != nil {
		return nil, err
	}
	dev, err := newLinux(file, kernelName, links, mtu)
	if err != nil {
		file.Close()
		return nil, err
	}
	dev.offloadErr = offloadErr
	return dev, nil
}

// openWater opens the TUN without offloads, one packet per read and write.
func openWater(name string, multiQueue bool) (*os.File, string, error) {
	ifce, err := water.New(water.Config{
		DeviceType:             water.TUN,
		PlatformSpecificParams: water.PlatformSpecificParams{Name: name, MultiQueue: multiQueue},
	})
	if err != nil {
		return nil, "", fmt.Errorf("failed to create TUN %s: %w", name, err)
	}
	file, ok := ifce.ReadWriteCloser.(*os.File)
	if !ok {
		ifce.Close()
		return nil, "", fmt.Errorf("failed to use TUN %s: water returned %T, not *os.File", ifce.Name(), ifce.ReadWriteCloser)
	}
	return file, ifce.Name(), nil
}

func newLinux(file *os.File, name string, links *netlink.Handle, mtu int) (*Linux, error) {
	raw, err := file.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("failed to get raw connection of TUN %s: %w", name, err)
	}
	if err := closeOnExec(raw); err != nil {
		return nil, fmt.Errorf("failed to set close-on-exec on TUN %s: %w", name, err)
	}
	link, err := links.LinkByName(name)
	if err != nil {
		return nil, fmt.Errorf("failed to look up TUN %s: %w", name, err)
	}
	open := new(atomic.Int32)
	open.Store(1)
	return &Linux{
		name:  name,
		mtu:   mtu,
		index: link.Attrs().Index,
		file:  file,
		raw:   raw,
		links: links,
		open:  open,
	}, nil
}

// closeOnExec sets FD_CLOEXEC, which water omits: without it every process
// the daemon (or a test) starts inherits the TUN and keeps the interface
// alive after Close.
func closeOnExec(raw syscall.RawConn) error {
	return raw.Control(func(fd uintptr) { unix.CloseOnExec(int(fd)) })
}

// Name returns the kernel interface name.
func (d *Linux) Name() string { return d.name }

// MTU returns the MTU the interface was configured with.
func (d *Linux) MTU() int { return d.mtu }

// Offload reports whether checksum and TCP segmentation offload are on,
// and if not, why: they were not asked for, or the kernel refused them.
func (d *Linux) Offload() (bool, error) { return d.vnet != nil, d.offloadErr }

// OffloadStats returns the offload counters; all zero without offloads.
func (d *Linux) OffloadStats() OffloadStats {
	if d.vnet == nil {
		return OffloadStats{}
	}
	return d.vnet.stats()
}

// Read blocks until a packet is queued, then drains the queue without
// blocking until it is empty or min(len(bufs), len(sizes)) packets are read:
// one wake-up per batch, one read(2) per packet.
func (d *Linux) Read(bufs [][]byte, sizes []int) (int, error) {
	limit := min(len(bufs), len(sizes))
	if limit == 0 {
		return 0, nil
	}
	drainFn := drain
	if d.vnet != nil {
		drainFn = d.vnet.drain
	}
	n := 0
	var readErr error
	err := d.raw.Read(func(fd uintptr) bool {
		n, readErr = drainFn(int(fd), bufs[:limit], sizes, n)
		return n > 0 || readErr != nil
	})
	if n > 0 {
		return n, nil
	}
	if err == nil {
		err = readErr
	}
	return 0, d.ioError("read from", err)
}

// drain reads packets into bufs[n:] until the fd would block, bufs is full
// or a read fails, and returns the new count. EAGAIN is not an error: it
// tells the caller to wait on the netpoller when nothing was read yet.
func drain(fd int, bufs [][]byte, sizes []int, n int) (int, error) {
	for n < len(bufs) {
		size, ok, err := readPacket(fd, bufs[n])
		if !ok {
			return n, err
		}
		sizes[n] = size
		n++
	}
	return n, nil
}

// readPacket reads one packet into buf, retrying when interrupted. ok is
// false when the fd would block (err is nil then) or the read failed.
func readPacket(fd int, buf []byte) (size int, ok bool, err error) {
	for {
		size, err = unix.Read(fd, buf)
		switch {
		case err == unix.EINTR:
			continue
		case err == unix.EAGAIN:
			return 0, false, nil
		case err != nil:
			return 0, false, err
		}
		return size, true, nil
	}
}

// Write hands the packets to the kernel. With offloads, runs of one TCP
// flow's segments go as one merged GSO packet; without, each packet needs
// its own write(2), since a plain TUN takes exactly one per call.
func (d *Linux) Write(bufs [][]byte) (int, error) {
	if d.vnet != nil {
		n, err := d.vnet.write(d, bufs)
		if err != nil {
			return n, d.ioError("write to", err)
		}
		return n, nil
	}
	for i, b := range bufs {
		if _, err := d.file.Write(b); err != nil {
			return i, d.ioError("write to", err)
		}
	}
	return len(bufs), nil
}

// SetReadDeadline sets the deadline of pending and future Reads; once it
// passes they fail with an error matching os.ErrDeadlineExceeded.
func (d *Linux) SetReadDeadline(t time.Time) error {
	if err := d.file.SetReadDeadline(t); err != nil {
		return d.ioError("set read deadline of", err)
	}
	return nil
}

// Close closes the queue's file descriptor, which unblocks its pending
// Reads with ErrClosed. Closing the last queue makes the kernel remove the
// non-persistent interface; that Close also deletes the link if it is
// somehow still there. Later calls return nil.
func (d *Linux) Close() error {
	if d.closed.Swap(true) {
		return nil
	}
	fileErr := d.file.Close()
	if fileErr != nil {
		fileErr = fmt.Errorf("failed to close TUN %s: %w", d.name, fileErr)
	}
	if d.open.Add(-1) > 0 {
		return fileErr
	}
	defer d.links.Close()
	return errors.Join(fileErr, deleteLink(d.links, d.index, d.name))
}

// ioError maps any failure after Close to ErrClosed, because the netpoller
// reports a closed file with an error that cannot be matched outside the
// standard library.
func (d *Linux) ioError(op string, err error) error {
	if d.closed.Load() {
		return ErrClosed
	}
	return fmt.Errorf("failed to %s TUN %s: %w", op, d.name, err)
}
