package main

import (
	"io"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/4over6d/4over6d/messages/wire"
	"github.com/4over6d/4over6d/tun/netnstest"
	"github.com/vishvananda/netlink"
)

func TestRoutesFor(t *testing.T) {
	list := []netip.Prefix{netip.MustParsePrefix("203.0.113.0/24")}
	other := netip.MustParseAddr("198.51.100.0")
	tests := []struct {
		name  string
		mode  routeMode
		route netip.Addr
		want  []netip.Prefix
	}{
		{"default route from server", routeFromServer, netip.IPv4Unspecified(), def1},
		{"other route from server", routeFromServer, other, nil},
		{"none", routeNone, netip.IPv4Unspecified(), nil},
		{"list overrides server", routeList, netip.IPv4Unspecified(), list},
	}
	for _, tt := range tests {
		h := newHostNetwork(&options{routeMode: tt.mode, routes: list}, slog.New(slog.NewTextHandler(io.Discard, nil)))
		lease := testReply
		lease.Route = tt.route
		if got := h.routesFor(lease); !slices.Equal(got, tt.want) {
			t.Errorf("%s: routes = %v, want %v", tt.name, got, tt.want)
		}
	}
}

// attachIn runs Attach inside ns, where the TUN must be created.
func attachIn(t *testing.T, ns *netnstest.NS, h *hostNetwork, lease wire.IPReply) {
	t.Helper()
	if err := ns.Do(func() error { _, err := h.Attach(lease); return err }); err != nil {
		t.Fatalf("Attach(%v): %v", lease.Addr, err)
	}
}

func linkState(t *testing.T, ns *netnstest.NS, name string) (addrs, routes []string) {
	t.Helper()
	link, err := ns.Netlink().LinkByName(name)
	if err != nil {
		return nil, nil
	}
	list, err := ns.Netlink().AddrList(link, netlink.FAMILY_V4)
	if err != nil {
		t.Fatalf("AddrList: %v", err)
	}
	for _, a := range list {
		addrs = append(addrs, a.IPNet.String())
	}
	rl, err := ns.Netlink().RouteList(link, netlink.FAMILY_V4)
	if err != nil {
		t.Fatalf("RouteList: %v", err)
	}
	for _, r := range rl {
		routes = append(routes, r.Dst.String())
	}
	slices.Sort(routes)
	return addrs, routes
}

func TestHostNetworkLifecycle(t *testing.T) {
	verifyNoLeaks(t)
	ns := netnstest.New(t, "4o6c-host")
	resolv := filepath.Join(t.TempDir(), "resolv.conf")
	if err := os.WriteFile(resolv, []byte("nameserver 192.0.2.53\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	o := &options{tun: "tun4o6c", mtu: 1400, routeMode: routeFromServer, dnsApply: resolv, dnsState: t.TempDir()}
	h := newHostNetwork(o, slog.New(slog.NewTextHandler(io.Discard, nil)))
	t.Cleanup(func() { _ = h.Close() })

	attachIn(t, ns, h, testReply)
	first := h.dev
	addrs, routes := linkState(t, ns, "tun4o6c")
	if !slices.Equal(addrs, []string{"192.0.2.2/32"}) || !slices.Equal(routes, []string{"0.0.0.0/1", "128.0.0.0/1"}) {
		t.Fatalf("after first lease: addresses %v, routes %v", addrs, routes)
	}
	if got := readFile(t, resolv); !strings.Contains(got, "nameserver 198.51.100.53\nnameserver 198.51.100.54\nnameserver 203.0.113.53\n") {
		t.Errorf("DNS file = %q", got)
	}

	attachIn(t, ns, h, testReply)
	if h.dev != first {
		t.Error("an unchanged lease replaced the TUN")
	}
	moved := testReply
	moved.Addr = netip.MustParseAddr("192.0.2.3")
	moved.Route = netip.MustParseAddr("198.51.100.0")
	attachIn(t, ns, h, moved)
	addrs, routes = linkState(t, ns, "tun4o6c")
	if h.dev != first || !slices.Equal(addrs, []string{"192.0.2.3/32"}) || len(routes) != 0 {
		t.Fatalf("after new lease: same TUN %v, addresses %v, routes %v; want the same TUN, 192.0.2.3/32, no routes",
			h.dev == first, addrs, routes)
	}

	attachIn(t, ns, h, testReply)
	if err := h.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if _, err := ns.Netlink().LinkByName("tun4o6c"); err == nil {
		t.Error("TUN still exists after Close")
	}
	if got := readFile(t, resolv); got != "nameserver 192.0.2.53\n" {
		t.Errorf("DNS file after Close = %q, want the original", got)
	}
}
