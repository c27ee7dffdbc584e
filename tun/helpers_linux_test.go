package tun

import (
	"io"
	"net"
	"net/netip"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/4over6d/4over6d/tun/netnstest"
	"github.com/vishvananda/netlink"
	"go.uber.org/goleak"
)

// openedInNS runs open inside ns, fails the test if it fails, and closes
// what it opened when the test ends, before the namespace is removed.
func openedInNS[T io.Closer](t *testing.T, ns *netnstest.NS, what string, open func() (T, error)) T {
	t.Helper()
	var v T
	if err := ns.Do(func() (err error) { v, err = open(); return err }); err != nil {
		t.Fatalf("%s in %s: %v", what, ns.Name, err)
	}
	t.Cleanup(func() {
		if err := v.Close(); err != nil {
			t.Errorf("%s: Close: %v", what, err)
		}
	})
	return v
}

// openInNS opens the test TUN inside ns, closed when the test ends.
func openInNS(t *testing.T, ns *netnstest.NS, name string, offload bool) *Linux {
	t.Helper()
	dev := openedInNS(t, ns, "Open", func() (*Linux, error) {
		return Open(Config{Name: name, MTU: testMTU, Prefix: testPool, Offload: offload})
	})
	requireOffload(t, dev, offload)
	return dev
}

// requireOffload fails the test unless the device's offloads are as asked:
// a silent fallback would make the offload tests test the plain path.
func requireOffload(t *testing.T, dev *Linux, offload bool) {
	t.Helper()
	if on, why := dev.Offload(); on != offload {
		t.Fatalf("opened with Offload %v: offloads on = %v (%v)", offload, on, why)
	}
}

func addrs(t *testing.T, ns *netnstest.NS, link netlink.Link, family int) []string {
	t.Helper()
	list, err := ns.Netlink().AddrList(link, family)
	if err != nil {
		t.Fatalf("AddrList: %v", err)
	}
	var out []string
	for _, a := range list {
		out = append(out, a.IPNet.String())
	}
	return out
}

func newBufs(n int) ([][]byte, []int) {
	bufs := make([][]byte, n)
	for i := range bufs {
		bufs[i] = make([]byte, testMTU)
	}
	return bufs, make([]int, n)
}

// readMatching reads until a packet satisfies match, skipping others, and
// fails the test if none arrives in time.
func readMatching(t *testing.T, dev Device, match func(ipv4Packet) bool) ipv4Packet {
	t.Helper()
	dev.SetReadDeadline(time.Now().Add(waitTimeout))
	defer dev.SetReadDeadline(time.Time{})
	bufs, sizes := newBufs(8)
	for {
		n, err := dev.Read(bufs, sizes)
		if err != nil {
			t.Fatalf("Read while waiting for a packet: %v", err)
		}
		for i := range n {
			if p, ok := parseIPv4(bufs[i][:sizes[i]]); ok && match(p) {
				return p
			}
		}
	}
}

func writeAll(t *testing.T, dev Device, packets ...[]byte) {
	t.Helper()
	if n, err := dev.Write(packets); err != nil || n != len(packets) {
		t.Fatalf("Write = %d, %v; want %d, nil", n, err, len(packets))
	}
}

// sendUDP sends each payload as one datagram to dst from a socket inside ns.
func sendUDP(t *testing.T, ns *netnstest.NS, dst netip.AddrPort, payloads ...[]byte) {
	t.Helper()
	err := ns.Do(func() error {
		conn, err := net.DialUDP("udp4", nil, net.UDPAddrFromAddrPort(dst))
		if err != nil {
			return err
		}
		defer conn.Close()
		for _, p := range payloads {
			if _, err := conn.Write(p); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("sending UDP to %v in %s: %v", dst, ns.Name, err)
	}
}

// listenUDP opens a UDP socket bound inside ns, closed when the test ends.
func listenUDP(t *testing.T, ns *netnstest.NS, addr netip.AddrPort) *net.UDPConn {
	t.Helper()
	var conn *net.UDPConn
	err := ns.Do(func() error {
		var err error
		conn, err = net.ListenUDP("udp4", net.UDPAddrFromAddrPort(addr))
		return err
	})
	if err != nil {
		t.Fatalf("listening on %v in %s: %v", addr, ns.Name, err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

func receiveUDP(t *testing.T, conn *net.UDPConn) (netip.AddrPort, string) {
	t.Helper()
	conn.SetReadDeadline(time.Now().Add(waitTimeout))
	buf := make([]byte, testMTU)
	n, from, err := conn.ReadFromUDPAddrPort(buf)
	if err != nil {
		t.Fatalf("receiving UDP on %v: %v", conn.LocalAddr(), err)
	}
	return netip.AddrPortFrom(from.Addr().Unmap(), from.Port()), string(buf[:n])
}

type readResult struct {
	n   int
	err error
}

// readAsync starts one Read on its own goroutine, as the TUN actor does.
func readAsync(dev Device) <-chan readResult {
	done := make(chan readResult, 1)
	go func() {
		bufs, sizes := newBufs(4)
		n, err := dev.Read(bufs, sizes)
		done <- readResult{n, err}
	}()
	return done
}

// awaitReadParked waits until a Read started by readAsync is parked in the
// Go netpoller ("IO wait"), that is, it found the TUN queue empty and is
// blocked waiting for the fd to become readable. Tests that unblock a
// pending Read wait for this instead of sleeping, so they always exercise
// a Read that is really blocked, not one that has not started yet.
func awaitReadParked(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		for g := range strings.SplitSeq(string(buf[:n]), "\n\n") {
			header, _, _ := strings.Cut(g, "\n")
			if strings.Contains(header, "[IO wait") && strings.Contains(g, "tun.readAsync.func") {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("the pending Read never blocked in the netpoller")
		}
		time.Sleep(time.Millisecond)
	}
}

func await(t *testing.T, pending <-chan readResult) readResult {
	t.Helper()
	select {
	case r := <-pending:
		return r
	case <-time.After(waitTimeout):
		t.Fatal("Read did not return")
		return readResult{}
	}
}

// verifyNoLeaks checks for leaked goroutines after every other cleanup of
// the test has run, since it is registered first.
func verifyNoLeaks(t *testing.T) {
	t.Helper()
	t.Cleanup(func() { goleak.VerifyNone(t) })
}

// bothModes runs test once on a plain TUN and once with offloads, since
// the two read and write through different code.
func bothModes(t *testing.T, test func(t *testing.T, offload bool)) {
	for _, offload := range []bool{false, true} {
		t.Run(map[bool]string{false: "plain", true: "offload"}[offload], func(t *testing.T) { test(t, offload) })
	}
}
