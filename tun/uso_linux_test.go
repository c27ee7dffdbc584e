//go:build linux

package tun

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/4over6d/4over6d/tun/netnstest"
)

// remoteUDP is the far end of the UDP offload tests, reached through the TUN.
var remoteUDP = netip.MustParseAddrPort("203.0.113.5:4000")

// udpDatagram builds a UDP/IPv4 datagram with DF set, IP ID id and both
// checksums (the test's own reference sum), as a connected Linux socket
// sends it.
func udpDatagram(src, dst netip.AddrPort, id uint16, payload []byte) []byte {
	pkt := make([]byte, 28+len(payload))
	pkt[0], pkt[6], pkt[8], pkt[9] = 0x45, 0x40, 64, unix.IPPROTO_UDP
	binary.BigEndian.PutUint16(pkt[2:], uint16(len(pkt)))
	binary.BigEndian.PutUint16(pkt[4:], id)
	s, d := src.Addr().As4(), dst.Addr().As4()
	copy(pkt[12:], s[:])
	copy(pkt[16:], d[:])
	binary.BigEndian.PutUint16(pkt[10:], checksum(pkt[:20], 0))
	udp := pkt[20:]
	binary.BigEndian.PutUint16(udp[0:], src.Port())
	binary.BigEndian.PutUint16(udp[2:], dst.Port())
	binary.BigEndian.PutUint16(udp[4:], uint16(len(udp)))
	copy(udp[8:], payload)
	check := checksum(udp, sumWords(pkt[12:20], unix.IPPROTO_UDP+uint32(len(udp))))
	if check == 0 {
		check = 0xffff
	}
	binary.BigEndian.PutUint16(udp[6:], check)
	return pkt
}

// openUSOClient opens a client TUN with offloads in ns, routing remoteUDP's
// network through it. A kernel from 6.2 on must take UDP offload (the test
// fails otherwise); an older one has none, and the test is skipped.
func openUSOClient(t *testing.T, ns *netnstest.NS) *Linux {
	t.Helper()
	dev := openClientInNS(t, ns, clientAddr, true)
	if on, why := dev.UDPOffload(); !on {
		if release, ok := kernelBefore(6, 2); ok {
			t.Skipf("kernel %s has no TUN UDP segmentation offload (6.2 on): %v", release, why)
		}
		t.Fatalf("UDP offload off on a kernel that has it: %v", why)
	}
	if err := dev.AddRoutes([]netip.Prefix{netip.PrefixFrom(remoteUDP.Addr(), 24).Masked()}); err != nil {
		t.Fatal(err)
	}
	return dev
}

// TestUDPGSOWriteArrivesAsDatagrams writes a batch of one flow's datagrams
// that the device merges into one GSO_UDP_L4 write; the kernel must accept
// it and deliver every datagram, intact and in order, to a local socket.
func TestUDPGSOWriteArrivesAsDatagrams(t *testing.T) {
	verifyNoLeaks(t)
	ns := netnstest.New(t, "tun-uso-w")
	dev := openUSOClient(t, ns)
	conn := listenUDP(t, ns, netip.AddrPortFrom(clientAddr, 5353))
	const count, size = 40, 1000
	var batch [][]byte
	for i := range count {
		batch = append(batch, udpDatagram(remoteUDP, netip.AddrPortFrom(clientAddr, 5353), uint16(100+i), bytes.Repeat([]byte{byte(i)}, size-i/(count-1)*size/2)))
	}
	writeAll(t, dev, batch...)
	st := dev.OffloadStats()
	if st.UDPGSOWrites != 1 || st.UDPSegmentsWritten != count || st.GSOWrites != 1 {
		t.Fatalf("offload stats %+v; want the batch merged into one UDP GSO write", st)
	}
	for i := range count {
		from, got := receiveUDP(t, conn)
		want := string(batch[i][28:])
		if from != remoteUDP || got != want {
			t.Fatalf("datagram %d: %d bytes from %v, want %d bytes from %v (first byte %x)", i, len(got), from, len(want), remoteUDP, got[:1])
		}
	}
}

// TestUDPGSOReadSplitsDatagrams sends one UDP_SEGMENT write from a socket
// into the TUN's route: the kernel hands the device one GSO packet, which
// Read must return as the separate, valid datagrams of the send.
func TestUDPGSOReadSplitsDatagrams(t *testing.T) {
	verifyNoLeaks(t)
	ns := netnstest.New(t, "tun-uso-r")
	dev := openUSOClient(t, ns)
	const segSize, count = 1000, 10
	data := make([]byte, segSize*count-300) // the last datagram is short
	for i := range data {
		data[i] = byte(i * 7)
	}
	err := ns.Do(func() error {
		conn, err := net.DialUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(clientAddr, 6000)), net.UDPAddrFromAddrPort(remoteUDP))
		if err != nil {
			return err
		}
		defer conn.Close()
		raw, err := conn.SyscallConn()
		if err != nil {
			return err
		}
		var serr error
		if err := raw.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_UDP, unix.UDP_SEGMENT, segSize) }); err != nil {
			return err
		}
		if serr != nil {
			return fmt.Errorf("UDP_SEGMENT: %w", serr)
		}
		_, err = conn.Write(data)
		return err
	})
	if err != nil {
		t.Fatalf("sending a UDP_SEGMENT write: %v", err)
	}
	dev.SetReadDeadline(time.Now().Add(waitTimeout))
	bufs, sizes := newBufs(4) // fewer than the datagrams: the rest waits in the splitter
	var got [][]byte
	for len(got) < count {
		n, err := dev.Read(bufs, sizes)
		if err != nil {
			t.Fatalf("Read after %d datagrams: %v", len(got), err)
		}
		for i := range n {
			pkt := bytes.Clone(bufs[i][:sizes[i]])
			if p, ok := parseIPv4(pkt); ok && p.proto == unix.IPPROTO_UDP && p.dst == remoteUDP.Addr() {
				got = append(got, pkt)
			}
		}
	}
	st := dev.OffloadStats()
	if st.GSOReads != 1 || st.SegmentsRead != count || st.Malformed != 0 {
		t.Fatalf("offload stats %+v; want one GSO read of %d datagrams", st, count)
	}
	firstID := binary.BigEndian.Uint16(got[0][4:])
	for i, pkt := range got {
		want := udpDatagram(netip.AddrPortFrom(clientAddr, 6000), remoteUDP, firstID+uint16(i), data[i*segSize:min(len(data), (i+1)*segSize)])
		want[1], want[6], want[8] = pkt[1], pkt[6], pkt[8] // TOS, DF and TTL are the kernel's choice
		binary.BigEndian.PutUint16(want[10:], 0)
		binary.BigEndian.PutUint16(want[10:], checksum(want[:20], 0))
		if !bytes.Equal(pkt, want) {
			t.Fatalf("datagram %d:\n got %x\nwant %x", i, pkt, want)
		}
	}
}

// TestUDPGSOWriteForwardedIntact is the server's path: a merged UDP write
// into an offload TUN that the kernel forwards out of a plain TUN, which
// has no offloads, so the kernel itself segments the GSO packet and
// completes each checksum there. What the plain TUN hands over must be
// exactly the datagrams of the batch, one hop (TTL) on.
func TestUDPGSOWriteForwardedIntact(t *testing.T) {
	verifyNoLeaks(t)
	ns := netnstest.New(t, "tun-uso-f")
	if err := ns.Do(EnableForwarding); err != nil {
		t.Fatal(err)
	}
	in := openUSOClient(t, ns)
	out := openedInNS(t, ns, "OpenClient", func() (*Linux, error) {
		return OpenClient(ClientConfig{Name: testTUN + "p", MTU: testMTU, Addr: netip.MustParseAddr("192.0.2.9")})
	})
	dst := netip.MustParseAddrPort("198.51.100.7:9")
	if err := out.AddRoutes([]netip.Prefix{netip.PrefixFrom(dst.Addr(), 32)}); err != nil {
		t.Fatal(err)
	}
	const count = 30
	var batch [][]byte
	for i := range count {
		batch = append(batch, udpDatagram(remoteUDP, dst, uint16(65530+i), bytes.Repeat([]byte{byte(i + 1)}, 1200-i/(count-1)*700)))
	}
	writeAll(t, in, batch...)
	if st := in.OffloadStats(); st.UDPGSOWrites != 1 || st.UDPSegmentsWritten != count {
		t.Fatalf("offload stats %+v; want the batch merged into one UDP GSO write", st)
	}
	out.SetReadDeadline(time.Now().Add(waitTimeout))
	bufs, sizes := newBufs(count)
	var got [][]byte
	for len(got) < count {
		n, err := out.Read(bufs, sizes)
		if err != nil {
			t.Fatalf("Read from the plain TUN after %d datagrams: %v", len(got), err)
		}
		for i := range n {
			if p, ok := parseIPv4(bufs[i][:sizes[i]]); ok && p.proto == unix.IPPROTO_UDP && p.dst == dst.Addr() {
				got = append(got, bytes.Clone(bufs[i][:sizes[i]]))
			}
		}
	}
	for i, pkt := range got {
		want := bytes.Clone(batch[i])
		want[8]--
		binary.BigEndian.PutUint16(want[10:], 0)
		binary.BigEndian.PutUint16(want[10:], checksum(want[:20], 0))
		if !bytes.Equal(pkt, want) {
			t.Fatalf("datagram %d as forwarded:\n got %x\nwant %x", i, pkt, want)
		}
	}
}

// kernelBefore reports whether the running kernel is older than
// major.minor, with its release string.
func kernelBefore(major, minor int) (string, bool) {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return "", false
	}
	release := unix.ByteSliceToString(u.Release[:])
	var maj, mnr int
	if _, err := fmt.Sscanf(release, "%d.%d", &maj, &mnr); err != nil {
		return release, false
	}
	return release, maj < major || (maj == major && mnr < minor)
}
