//go:build linux

// Package fleettest gives the fleet's tests (issue #16) real parts to run
// against: a Fabric, one IPv6 segment joining test namespaces as a switch
// joins hosts, and a Cluster, a real etcd cluster (Debian's etcd-server)
// with each member in its own namespace on the fabric, which a test can
// stop, kill and restart member by member. Everything is created by the
// test and removed at its cleanup, even when it fails.
package fleettest

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/4over6d/4over6d/tun/netnstest"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// FabricPrefix is the segment every fabric carries: one /64 from the
// documentation range, the same in every test (each fabric is its own
// set of namespaces, so fabrics of different tests never meet).
var FabricPrefix = netip.MustParsePrefix("2001:db8:f::/64")

// hubAddr is the hub's own address on the bridge, from which the test
// process dials into the fabric (see DialContext).
var hubAddr = netip.MustParseAddr("2001:db8:f::1")

// bridgeName is the bridge inside the hub namespace (the only link there
// besides the hub ends of the veths).
const bridgeName = "fabric0"

// Wait bounds each wait of this package for the kernel or for etcd (a
// loaded machine is slow; the waits end as soon as the condition holds).
const Wait = 20 * time.Second

// pollEvery is how often the waits of this package look again.
const pollEvery = 20 * time.Millisecond

// Fabric is one IPv6 segment (FabricPrefix) joining test namespaces: a
// Linux bridge in a hub namespace, one veth per attached namespace. Nodes
// of a fleet test talk over it as hosts on one LAN would, and nothing of
// it touches the host's own namespace.
type Fabric struct {
	// Hub is the namespace holding the bridge. It has an address of its
	// own on the segment, HubAddr, so the test process can reach the
	// fabric from inside it (DialContext).
	Hub    *netnstest.NS
	prefix string
	bridge netlink.Link
}

// NewFabric creates the hub namespace (named prefix-hub-<random>) with
// its bridge and the hub's address. prefix also names the namespaces
// that StartCluster creates, so it should be short and say which test
// they belong to.
func NewFabric(t testing.TB, prefix string) *Fabric {
	t.Helper()
	f := &Fabric{Hub: netnstest.New(t, prefix+"-hub"), prefix: prefix}
	snooping := false // flood multicast (neighbour discovery) to every port, no MLD querier needed
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: bridgeName}, MulticastSnooping: &snooping}
	h := f.Hub.Netlink()
	if err := h.LinkAdd(br); err != nil {
		t.Fatalf("failed to create bridge %s in %s: %v", bridgeName, f.Hub.Name, err)
	}
	link, err := h.LinkByName(bridgeName)
	if err != nil {
		t.Fatalf("failed to look up bridge %s in %s: %v", bridgeName, f.Hub.Name, err)
	}
	f.bridge = link
	if err := h.LinkSetUp(link); err != nil {
		t.Fatalf("failed to bring bridge %s up in %s: %v", bridgeName, f.Hub.Name, err)
	}
	addAddr(t, f.Hub, link, netip.PrefixFrom(hubAddr, FabricPrefix.Bits()))
	return f
}

// HubAddr is the hub's address on the fabric: the source of the
// connections the test process opens through DialContext.
func (f *Fabric) HubAddr() netip.Addr { return hubAddr }

// Attach plugs ns into the fabric: a veth pair whose hub end joins the
// bridge and whose other end, inside ns, gets addr (without duplicate
// address detection, so it is usable at once). It returns when both ends
// are operationally up and addr is no longer tentative, and returns the
// interface's name inside ns. The pair disappears with either namespace.
func (f *Fabric) Attach(t testing.TB, ns *netnstest.NS, addr netip.Prefix) string {
	t.Helper()
	if !FabricPrefix.Contains(addr.Addr()) {
		t.Fatalf("address %v is not on the fabric %v", addr, FabricPrefix)
	}
	id := rand.Uint32() & 0xffffff
	hubIf, nsIf := fmt.Sprintf("fh%06x", id), fmt.Sprintf("fab%06x", id)
	target, err := netns.GetFromName(ns.Name)
	if err != nil {
		t.Fatalf("failed to open namespace %s: %v", ns.Name, err)
	}
	defer target.Close()
	veth := &netlink.Veth{
		LinkAttrs:     netlink.LinkAttrs{Name: hubIf, MasterIndex: f.bridge.Attrs().Index},
		PeerName:      nsIf,
		PeerNamespace: netlink.NsFd(target),
	}
	if err := f.Hub.Netlink().LinkAdd(veth); err != nil {
		t.Fatalf("failed to create veth %s (bridge %s in %s) to %s in %s: %v", hubIf, bridgeName, f.Hub.Name, nsIf, ns.Name, err)
	}
	inner := lookUp(t, ns, nsIf)
	addAddr(t, ns, inner, addr)
	setUp(t, f.Hub, lookUp(t, f.Hub, hubIf))
	setUp(t, ns, inner)
	waitOperUp(t, f.Hub, hubIf)
	waitOperUp(t, ns, nsIf)
	waitUsable(t, ns, nsIf, addr.Addr())
	return nsIf
}

// DialContext opens a connection to address (host:port on the fabric)
// from inside the hub namespace, for the test process, which runs in the
// host's namespace and is not on the fabric. The fabric never gets an
// address in the host's namespace: that would change the host's network
// and collide between tests running side by side. The socket is created
// on a thread switched into the hub, and stays there after the switch
// back, so the connection is the hub's. It has the signature of
// net.Dialer.DialContext, for http.Transport and gRPC dialers.
func (f *Fabric) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	var conn net.Conn
	err := f.Hub.Do(func() error {
		var d net.Dialer
		var err error
		conn, err = d.DialContext(ctx, network, address)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("failed to dial %s %s from the fabric's hub %s: %w", network, address, f.Hub.Name, err)
	}
	return conn, nil
}

func lookUp(t testing.TB, ns *netnstest.NS, ifName string) netlink.Link {
	t.Helper()
	link, err := ns.Netlink().LinkByName(ifName)
	if err != nil {
		t.Fatalf("failed to look up %s in %s: %v", ifName, ns.Name, err)
	}
	return link
}

func addAddr(t testing.TB, ns *netnstest.NS, link netlink.Link, p netip.Prefix) {
	t.Helper()
	addr := &netlink.Addr{
		IPNet: &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())},
		Flags: unix.IFA_F_NODAD,
	}
	if err := ns.Netlink().AddrAdd(link, addr); err != nil {
		t.Fatalf("failed to add %v to %s in %s: %v", p, link.Attrs().Name, ns.Name, err)
	}
}

func setUp(t testing.TB, ns *netnstest.NS, link netlink.Link) {
	t.Helper()
	if err := ns.Netlink().LinkSetUp(link); err != nil {
		t.Fatalf("failed to bring %s up in %s: %v", link.Attrs().Name, ns.Name, err)
	}
}

// waitOperUp waits for the carrier: the kernel applies it asynchronously,
// and packets sent before it are dropped.
func waitOperUp(t testing.TB, ns *netnstest.NS, ifName string) {
	t.Helper()
	waitFor(t, Wait, ifName+" in "+ns.Name+" operationally up", func() bool {
		return lookUp(t, ns, ifName).Attrs().OperState == netlink.OperUp
	})
}

// waitUsable waits until addr on ifName is neither tentative nor failed
// duplicate address detection: only then does the kernel let a socket
// bind to it. With IFA_F_NODAD this holds at once; the check keeps that
// true should the flag ever be dropped.
func waitUsable(t testing.TB, ns *netnstest.NS, ifName string, addr netip.Addr) {
	t.Helper()
	link := lookUp(t, ns, ifName)
	waitFor(t, Wait, addr.String()+" usable on "+ifName+" in "+ns.Name, func() bool {
		addrs, err := ns.Netlink().AddrList(link, netlink.FAMILY_V6)
		if err != nil {
			t.Fatalf("failed to list addresses of %s in %s: %v", ifName, ns.Name, err)
		}
		for _, a := range addrs {
			if got, _ := netip.AddrFromSlice(a.IP); got == addr {
				return a.Flags&(unix.IFA_F_TENTATIVE|unix.IFA_F_DADFAILED) == 0
			}
		}
		return false
	})
}

// waitFor polls cond until it holds, failing the test after timeout.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(pollEvery)
	}
}
