//go:build linux

package tun

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/4over6d/4over6d/tun/netnstest"
)

const testQueues = 4

// openQueuesInNS opens the test TUN with n queues inside ns; whatever is
// still open is closed when the test ends.
func openQueuesInNS(t *testing.T, ns *netnstest.NS, n int, offload bool) []*Linux {
	t.Helper()
	var devs []*Linux
	err := ns.Do(func() (err error) {
		devs, err = OpenQueues(Config{Name: testTUN, MTU: testMTU, Prefix: testPool, Offload: offload, Queues: n})
		return err
	})
	if err != nil {
		t.Fatalf("OpenQueues(%d) in %s: %v", n, ns.Name, err)
	}
	t.Cleanup(func() {
		if err := CloseQueues(devs); err != nil {
			t.Errorf("CloseQueues: %v", err)
		}
	})
	if len(devs) != n {
		t.Fatalf("OpenQueues(%d) returned %d queues", n, len(devs))
	}
	for _, d := range devs {
		requireOffload(t, d, offload)
	}
	return devs
}

// queuedPacket is a packet one queue's reader got.
type queuedPacket struct {
	queue int
	p     ipv4Packet
}

// readAllQueues runs one reader per queue, like the TUN actors do, until
// the test ends; every UDP packet read goes to the returned channel.
func readAllQueues(t *testing.T, devs []*Linux) <-chan queuedPacket {
	t.Helper()
	out := make(chan queuedPacket, 1024)
	done := make(chan struct{}, len(devs))
	for i, d := range devs {
		go func() {
			defer func() { done <- struct{}{} }()
			bufs, sizes := newBufs(8)
			for {
				n, err := d.Read(bufs, sizes)
				if err != nil {
					return
				}
				for j := range n {
					if p, ok := parseIPv4(append([]byte(nil), bufs[j][:sizes[j]]...)); ok && p.proto == protoUDP {
						out <- queuedPacket{queue: i, p: p}
					}
				}
			}
		}()
	}
	t.Cleanup(func() {
		for _, d := range devs {
			d.SetReadDeadline(time.Now())
		}
		for range devs {
			<-done
		}
	})
	return out
}

// echoUDP answers every datagram to a socket on the server address with
// the same payload until the test ends.
func echoUDP(t *testing.T, ns *netnstest.NS) netip.AddrPort {
	t.Helper()
	conn := listenUDP(t, ns, netip.AddrPortFrom(serverAddr, 0))
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		buf := make([]byte, testMTU)
		for {
			n, from, err := conn.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			if _, err := conn.WriteToUDPAddrPort(buf[:n], from); err != nil {
				return
			}
		}
	}()
	t.Cleanup(func() { conn.Close(); <-stopped })
	return conn.LocalAddr().(*net.UDPAddr).AddrPort()
}

// TestQueuesCarryFlowsInOrder writes one UDP flow per queue to an echo
// socket and checks that every queue's packets reach the kernel and that
// each flow's replies come back complete, in order, and on the queue the
// flow was written to (the kernel's automq steering, net/tun.c
// tun_flow_update/tun_automq_select_queue, which the server relies on to
// keep a session's downlink on its queue).
func TestQueuesCarryFlowsInOrder(t *testing.T) {
	bothModes(t, func(t *testing.T, offload bool) {
		verifyNoLeaks(t)
		const perFlow = 20
		ns := netnstest.New(t, "tun-mq")
		devs := openQueuesInNS(t, ns, testQueues, offload)
		echo := echoUDP(t, ns)
		replies := readAllQueues(t, devs)
		for q, d := range devs {
			src := netip.AddrPortFrom(clientAddr, uint16(5000+q))
			pkts := make([][]byte, perFlow)
			for i := range pkts {
				pkts[i] = buildUDP(src, echo, fmt.Appendf(nil, "q%d-%02d", q, i))
			}
			writeAll(t, d, pkts...)
		}
		next := make(map[uint16]int) // by client port: the next sequence number
		for got := 0; got < testQueues*perFlow; got++ {
			var r queuedPacket
			select {
			case r = <-replies:
			case <-time.After(waitTimeout):
				t.Fatalf("got %d of %d replies; per flow: %v", got, testQueues*perFlow, next)
			}
			_, port := udpPorts(r.p.payload)
			q := int(port) - 5000
			want := fmt.Sprintf("q%d-%02d", q, next[port])
			if payload := string(r.p.payload[udpHeaderLen:]); payload != want {
				t.Fatalf("flow of queue %d: reply %q, want %q (out of order or lost)", q, payload, want)
			}
			if r.queue != q {
				t.Errorf("reply %q of the flow written to queue %d came back on queue %d", want, q, r.queue)
			}
			next[port]++
		}
	})
}

// TestCloseQueuesRemovesLink closes the queues one by one: the link stays
// while any is open, goes with the last, and no descriptor is left.
func TestCloseQueuesRemovesLink(t *testing.T) {
	bothModes(t, func(t *testing.T, offload bool) {
		verifyNoLeaks(t)
		ns := netnstest.New(t, "tun-mqclose")
		fds := openFDs(t)
		devs := openQueuesInNS(t, ns, testQueues, offload)
		link, err := ns.Netlink().LinkByName(testTUN)
		if err != nil {
			t.Fatalf("link after OpenQueues: %v", err)
		}
		if tt, ok := link.(*netlink.Tuntap); !ok || tt.Flags&netlink.TUNTAP_MULTI_QUEUE == 0 {
			t.Errorf("link %T %+v is not a multi-queue TUN", link, link)
		}
		pending := readAsync(devs[testQueues-1])
		awaitReadParked(t)
		for i, d := range devs {
			if _, err := ns.Netlink().LinkByName(testTUN); err != nil {
				t.Fatalf("link after closing %d of %d queues: %v", i, testQueues, err)
			}
			if err := d.Close(); err != nil {
				t.Fatalf("Close of queue %d: %v", i, err)
			}
		}
		if r := await(t, pending); !errors.Is(r.err, ErrClosed) {
			t.Errorf("pending Read on the last queue = %d, %v; want ErrClosed", r.n, r.err)
		}
		if _, err := ns.Netlink().LinkByName(testTUN); !errors.As(err, new(netlink.LinkNotFoundError)) {
			t.Errorf("link lookup after closing every queue = %v, want not found", err)
		}
		if n := openFDs(t); n != fds {
			t.Errorf("%d file descriptors open after closing every queue, %d before opening", n, fds)
		}
	})
}

// TestOpenQueuesOne checks that one queue is the plain TUN of today,
// without IFF_MULTI_QUEUE, and that Open refuses more.
func TestOpenQueuesOne(t *testing.T) {
	ns := netnstest.New(t, "tun-1q")
	openQueuesInNS(t, ns, 1, true)
	link, err := ns.Netlink().LinkByName(testTUN)
	if err != nil {
		t.Fatalf("link: %v", err)
	}
	if tt, ok := link.(*netlink.Tuntap); !ok || tt.Flags&netlink.TUNTAP_MULTI_QUEUE != 0 {
		t.Errorf("link %T %+v: want a single-queue TUN", link, link)
	}
	if _, err := Open(Config{Name: "tun4o6b", MTU: testMTU, Prefix: testPool, Queues: 2}); err == nil {
		t.Error("Open with 2 queues succeeded, want an error pointing to OpenQueues")
	}
}

func openFDs(t *testing.T) int {
	t.Helper()
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatalf("listing fds: %v", err)
	}
	return len(entries)
}
