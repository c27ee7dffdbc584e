package tun

import (
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/4over6d/4over6d/tun/netnstest"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// fleetNode is one node of a test fleet: a namespace with a VXLAN on the
// shared IPv6 segment, and a client namespace behind a veth that stands in
// for the node's TUN (the kernel routes the same way between them).
type fleetNode struct {
	name     string
	ns       *netnstest.NS
	client   *netnstest.NS
	clientIf string // the node's end of the client veth: its "TUN"
	underlay netip.Addr
	block    netip.Prefix
	clientIP netip.Addr
	vx       *VXLAN
}

// peer describes the node as the other nodes program it, owning its block
// and any extra claims.
func (n *fleetNode) peer(claims ...netip.Prefix) Peer {
	return Peer{Name: n.name, Underlay: n.underlay, MAC: n.vx.MAC(), Prefixes: append([]netip.Prefix{n.block}, claims...)}
}

// newFleet builds n nodes on one bridge in a hub namespace, node i with
// underlay 2001:db8:46::(i+1), block 192.0.2.(64i)/26 and a client at
// the block's second host behind the node's first, and gives every node
// the others as peers. It returns once every node reaches every other over
// the underlay.
func newFleet(t *testing.T, n int) []*fleetNode {
	t.Helper()
	hub := netnstest.New(t, "vx-hub")
	bridge := addBridge(t, hub, "br4o6")
	if err := hub.Netlink().LinkSetUp(bridge); err != nil {
		t.Fatalf("failed to bring the bridge up: %v", err)
	}
	nodes := make([]*fleetNode, n)
	for i := range nodes {
		nodes[i] = newFleetNode(t, hub, bridge, i)
	}
	for _, node := range nodes {
		var peers []Peer
		for _, other := range nodes {
			if other != node {
				peers = append(peers, other.peer())
			}
		}
		setPeers(t, node.vx, peers...)
	}
	for _, node := range nodes {
		for _, other := range nodes {
			if other != node {
				waitPing(t, node.ns, other.underlay)
			}
		}
	}
	return nodes
}

func newFleetNode(t *testing.T, hub *netnstest.NS, bridge netlink.Link, i int) *fleetNode {
	t.Helper()
	node := &fleetNode{
		name:     fmt.Sprintf("node%c", 'a'+i),
		underlay: netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 0, 0x46, 15: byte(i + 1)}),
		block:    netip.PrefixFrom(netip.AddrFrom4([4]byte{192, 0, 2, byte(64 * i)}), 26),
	}
	node.ns = netnstest.New(t, "vx-"+node.name)
	hubIf, _ := netnstest.Link(t, hub, nil, node.ns, []netip.Prefix{netip.PrefixFrom(node.underlay, 64)})
	port, err := hub.Netlink().LinkByName(hubIf)
	if err != nil {
		t.Fatal(err)
	}
	if err := hub.Netlink().LinkSetMaster(port, bridge); err != nil {
		t.Fatalf("failed to attach %s to the bridge: %v", hubIf, err)
	}
	gateway := node.block.Addr().Next()
	node.clientIP = gateway.Next()
	node.client = netnstest.New(t, "vx-"+node.name+"-c")
	node.clientIf, _ = netnstest.Link(t,
		node.ns, []netip.Prefix{netip.PrefixFrom(gateway, node.block.Bits())},
		node.client, []netip.Prefix{netip.PrefixFrom(node.clientIP, node.block.Bits())})
	node.client.AddRoute(t, netip.MustParsePrefix("0.0.0.0/0"), gateway)
	if err := node.ns.Do(EnableForwarding); err != nil {
		t.Fatalf("EnableForwarding in %s: %v", node.ns.Name, err)
	}
	node.vx = openVXLANInNS(t, node.ns, VXLANConfig{Name: testVXLAN, Local: node.underlay, MAC: MACFor(node.name)})
	return node
}

// ping sends count echo requests from ns to dst, a second apart at most,
// and reports whether any reply came back.
func ping(t *testing.T, ns *netnstest.NS, dst netip.Addr, count int) (bool, string) {
	t.Helper()
	out, err := ns.Command(t.Context(), "ping", "-n", "-q", "-c", fmt.Sprint(count), "-i", "0.2", "-W", "1", dst.String()).CombinedOutput()
	return err == nil, string(out)
}

func requirePing(t *testing.T, ns *netnstest.NS, dst netip.Addr, step string) {
	t.Helper()
	if ok, out := ping(t, ns, dst, 3); !ok {
		t.Fatalf("%s: ping from %s to %v got no reply:\n%s", step, ns.Name, dst, out)
	}
}

func requireNoPing(t *testing.T, ns *netnstest.NS, dst netip.Addr, step string) {
	t.Helper()
	if ok, out := ping(t, ns, dst, 1); ok {
		t.Fatalf("%s: ping from %s to %v got a reply, want none:\n%s", step, ns.Name, dst, out)
	}
}

// waitPing polls until dst answers from ns: the bridge's new ports may
// take a moment to forward.
func waitPing(t *testing.T, ns *netnstest.NS, dst netip.Addr) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for {
		ok, out := ping(t, ns, dst, 1)
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%v does not answer from %s over the underlay:\n%s", dst, ns.Name, out)
		}
	}
}

// TestVXLANCarriesIPv4BetweenNodes pings from every node's client to every
// other node's client through the VXLANs.
func TestVXLANCarriesIPv4BetweenNodes(t *testing.T) {
	nodes := newFleet(t, 3)
	for _, from := range nodes {
		for _, to := range nodes {
			if from != to {
				requirePing(t, from.client, to.clientIP, from.name+" to "+to.name)
			}
		}
	}
}

// TestVXLANRepointsMovedClaim moves a client address (a /32 claim) from
// node b's side to node c's: a's packets keep going to b until a's
// SetPeers says c owns it, and then reach c.
func TestVXLANRepointsMovedClaim(t *testing.T) {
	nodes := newFleet(t, 3)
	a, b, c := nodes[0], nodes[1], nodes[2]
	moved := netip.MustParsePrefix("192.0.2.200/32")
	claim := func(n *fleetNode, add bool) {
		verb := map[bool]string{true: "add", false: "del"}[add]
		n.client.Run(t, "ip", "addr", verb, moved.String(), "dev", "lo")
		n.ns.Run(t, "ip", "route", verb, moved.String(), "via", n.clientIP.String())
	}

	claim(b, true)
	setPeers(t, a.vx, b.peer(moved), c.peer())
	requirePing(t, a.client, moved.Addr(), "claim on b")

	claim(b, false)
	claim(c, true)
	requireNoPing(t, a.client, moved.Addr(), "claim moved, a not told yet")

	setPeers(t, a.vx, b.peer(), c.peer(moved))
	requirePing(t, a.client, moved.Addr(), "claim moved to c")
	gw := fmt.Sprintf("neigh %v lladdr %v permanent", moved.Addr(), c.vx.MAC())
	route := fmt.Sprintf("route %v via %v onlink proto static", moved, moved.Addr())
	state := strings.Join(overlayState(t, a.ns), "\n")
	if !strings.Contains(state, gw) || !strings.Contains(state, route) {
		t.Errorf("a's device state lacks %q or %q:\n%s", gw, route, state)
	}

	setPeers(t, a.vx, b.peer())
	requireNoPing(t, a.client, c.clientIP, "c removed from a's peers")
	requirePing(t, a.client, b.clientIP, "c removed from a's peers")
}

// TestNATOverlay runs the overlay parts of the nftables table on real
// traffic between two nodes, with each node's client veth as its TUN.
func TestNATOverlay(t *testing.T) {
	t.Run("traffic to other nodes is not masqueraded", func(t *testing.T) {
		nodes := newFleet(t, 2)
		a, b := nodes[0], nodes[1]
		setupNAT(t, a.ns, NATConfig{Pool: testPool, TUN: a.clientIf, MTU: 1500, Masquerade: true, Overlay: testVXLAN, OverlayMTU: a.vx.MTU()})
		remote := listenUDP(t, b.client, netip.AddrPortFrom(b.clientIP, 0))
		sendUDP(t, a.client, remote.LocalAddr().(*net.UDPAddr).AddrPort(), []byte("hello"))
		if from, payload := receiveUDP(t, remote); from.Addr() != a.clientIP || payload != "hello" {
			t.Errorf("b's client received %q from %v, want %q from a's client %v", payload, from, "hello", a.clientIP)
		}
	})
	t.Run("SYNs leaving by the overlay are clamped to its MTU", func(t *testing.T) {
		nodes := newFleet(t, 2)
		a, b := nodes[0], nodes[1]
		setupNAT(t, a.ns, NATConfig{Pool: testPool, TUN: a.clientIf, MTU: 1500, Overlay: testVXLAN, OverlayMTU: a.vx.MTU()})
		if got, limit := peerMSS(t, a.client, b.client, b.clientIP), a.vx.MTU()-ipv4TCPHeaders; got > limit {
			t.Errorf("b's client sees a's MSS as %d, want at most %d", got, limit)
		}
	})
	t.Run("isolated clients do not reach other nodes", func(t *testing.T) {
		nodes := newFleet(t, 2)
		a, b := nodes[0], nodes[1]
		requirePing(t, a.client, b.clientIP, "before isolation")
		nat := setupNAT(t, b.ns, NATConfig{Pool: testPool, TUN: b.clientIf, MTU: 1500, Overlay: testVXLAN, OverlayMTU: b.vx.MTU(), IsolateClients: true})
		requireNoPing(t, a.client, b.clientIP, "into the isolating node")
		requireNoPing(t, b.client, a.clientIP, "out of the isolating node")
		requirePing(t, b.ns, a.clientIP, "from the isolating node itself")
		if err := nat.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
		requirePing(t, a.client, b.clientIP, "after the table is gone")
	})
}

// peerMSS connects from one namespace to a listener in another and returns
// the MSS the accepting side uses, which the SYN's MSS option bounds.
func peerMSS(t *testing.T, from, to *netnstest.NS, addr netip.Addr) int {
	t.Helper()
	var ln *net.TCPListener
	err := to.Do(func() (err error) {
		ln, err = net.ListenTCP("tcp4", net.TCPAddrFromAddrPort(netip.AddrPortFrom(addr, 0)))
		return err
	})
	if err != nil {
		t.Fatalf("listening in %s: %v", to.Name, err)
	}
	defer ln.Close()
	var conn net.Conn
	err = from.Do(func() (err error) {
		conn, err = net.DialTimeout("tcp4", ln.Addr().String(), waitTimeout)
		return err
	})
	if err != nil {
		t.Fatalf("connecting from %s: %v", from.Name, err)
	}
	defer conn.Close()
	ln.SetDeadline(time.Now().Add(waitTimeout))
	accepted, err := ln.AcceptTCP()
	if err != nil {
		t.Fatalf("accepting: %v", err)
	}
	defer accepted.Close()
	raw, err := accepted.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var mss int
	var optErr error
	if err := raw.Control(func(fd uintptr) { mss, optErr = unix.GetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_MAXSEG) }); err != nil || optErr != nil {
		t.Fatalf("TCP_MAXSEG: %v, %v", err, optErr)
	}
	return mss
}
