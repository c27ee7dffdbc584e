package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/4over6d/4over6d/tun/netnstest"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

func netlinkNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

func TestLostPath(t *testing.T) {
	local := netip.MustParseAddr("2001:db8:1::2")
	base := pathView{hasLocal: true, oif: 2, src: local}
	tests := []struct {
		name string
		now  pathView
		want string // "" for no verdict
	}{
		{"unchanged", base, ""},
		{"local address gone", pathView{oif: 2, src: local}, "local address 2001:db8:1::2 removed"},
		{"no route", pathView{hasLocal: true, noRoute: fmt.Errorf("network is unreachable")}, "no route to the server"},
		{"new source on the same interface", pathView{hasLocal: true, oif: 2, src: netip.MustParseAddr("2001:db8:1::b")}, ""},
		{"same source on another interface", pathView{hasLocal: true, oif: 3, src: local}, ""},
		{"another interface and source", pathView{hasLocal: true, oif: 3, src: netip.MustParseAddr("2001:db8:9::2")}, "moved to interface 3"},
		{"kernel not asked", pathView{unknown: fmt.Errorf("EBUSY")}, ""},
	}
	for _, tt := range tests {
		err := lostPath(local, base, tt.now)
		switch {
		case tt.want == "" && err != nil:
			t.Errorf("%s: %v, want no verdict", tt.name, err)
		case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
			t.Errorf("%s: %v, want %q", tt.name, err, tt.want)
		}
	}
}

func TestNotificationsThatMatter(t *testing.T) {
	local, remote := netip.MustParseAddr("2001:db8:1::2"), netip.MustParseAddr("2001:db8:1::1")
	ipnet := func(s string) net.IPNet {
		p := netip.MustParsePrefix(s)
		return *netlinkNet(p)
	}
	addrs := []struct {
		name string
		u    netlink.AddrUpdate
		want bool
	}{
		{"local deleted", netlink.AddrUpdate{LinkAddress: ipnet("2001:db8:1::2/64")}, true},
		{"local added", netlink.AddrUpdate{LinkAddress: ipnet("2001:db8:1::2/64"), NewAddr: true}, false},
		{"other deleted", netlink.AddrUpdate{LinkAddress: ipnet("2001:db8:1::b/64")}, false},
		{"TUN address deleted", netlink.AddrUpdate{LinkAddress: ipnet("192.0.2.2/32")}, false},
	}
	for _, tt := range addrs {
		if got := addrMatters(tt.u, local); got != tt.want {
			t.Errorf("address %s: matters %v, want %v", tt.name, got, tt.want)
		}
	}
	route := func(family int, dst string) netlink.RouteUpdate {
		u := netlink.RouteUpdate{Route: netlink.Route{Family: family}}
		if dst != "" {
			u.Dst = netlinkNet(netip.MustParsePrefix(dst))
		}
		return u
	}
	routes := []struct {
		name string
		u    netlink.RouteUpdate
		want bool
	}{
		{"IPv6 default", route(netlink.FAMILY_V6, ""), true},
		{"IPv6 prefix of the server", route(netlink.FAMILY_V6, "2001:db8:1::/64"), true},
		{"IPv6 host route to the server", route(netlink.FAMILY_V6, "2001:db8:1::1/128"), true},
		{"IPv6 elsewhere", route(netlink.FAMILY_V6, "2001:db8:2::/64"), false},
		{"IPv6 local address", route(netlink.FAMILY_V6, "2001:db8:1::2/128"), false},
		{"TUN route 0.0.0.0/1", route(netlink.FAMILY_V4, "0.0.0.0/1"), false},
		{"IPv4 default", route(netlink.FAMILY_V4, ""), false},
	}
	for _, tt := range routes {
		if got := routeMatters(tt.u, remote); got != tt.want {
			t.Errorf("route %s: matters %v, want %v", tt.name, got, tt.want)
		}
	}
}

// roamRig is a client namespace with two links: to the server's namespace
// (2001:db8:1::2 and the server 2001:db8:1::1) and to another namespace
// (2001:db8:9::2, gateway 2001:db8:9::1), for moving the route.
type roamRig struct {
	cli          *netnstest.NS
	toSrv, toOth netlink.Link
	ns           netns.NsHandle
}

var (
	roamLocal  = netip.MustParseAddr("2001:db8:1::2")
	roamServer = netip.MustParseAddr("2001:db8:1::1")
	roamOtherG = netip.MustParseAddr("2001:db8:9::1")
)

func newRoamRig(t *testing.T) *roamRig {
	t.Helper()
	r := &roamRig{cli: netnstest.New(t, "4o6c-roam")}
	srv, oth := netnstest.New(t, "4o6c-rsrv"), netnstest.New(t, "4o6c-roth")
	a, _ := netnstest.Link(t, r.cli, []netip.Prefix{netip.PrefixFrom(roamLocal, 64)}, srv, []netip.Prefix{netip.PrefixFrom(roamServer, 64)})
	b, _ := netnstest.Link(t, r.cli, []netip.Prefix{netip.MustParsePrefix("2001:db8:9::2/64")}, oth, []netip.Prefix{netip.PrefixFrom(roamOtherG, 64)})
	var err error
	if r.toSrv, err = r.cli.Netlink().LinkByName(a); err != nil {
		t.Fatal(err)
	}
	if r.toOth, err = r.cli.Netlink().LinkByName(b); err != nil {
		t.Fatal(err)
	}
	if r.ns, err = netns.GetFromName(r.cli.Name); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.ns.Close() })
	return r
}

// watch runs a pathWatcher on the rig's namespace and returns once it
// watches; its verdict arrives on the channel.
func (r *roamRig) watch(t *testing.T, ctx context.Context, logs *logBuffer) <-chan error {
	t.Helper()
	watching, verdict := make(chan struct{}), make(chan error, 1)
	w := &pathWatcher{ns: r.ns, log: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		watching: func() { close(watching) }}
	go func() { verdict <- w.watch(ctx, roamLocal, roamServer) }()
	select {
	case <-watching:
	case err := <-verdict:
		t.Fatalf("the watch ended before it watched: %v\n%s", err, logs.String())
	case <-time.After(waitLong):
		t.Fatal("the watch did not start")
	}
	return verdict
}

func (r *roamRig) addAddr(t *testing.T, link netlink.Link, p string) {
	t.Helper()
	if err := r.cli.Netlink().AddrAdd(link, &netlink.Addr{IPNet: netlinkNet(netip.MustParsePrefix(p)), Flags: unix.IFA_F_NODAD}); err != nil {
		t.Fatal(err)
	}
}

func (r *roamRig) addRoute(t *testing.T, route *netlink.Route) {
	t.Helper()
	if err := r.cli.Netlink().RouteAdd(route); err != nil {
		t.Fatalf("add route %v: %v", route, err)
	}
}

// TestPathWatcherInNamespace makes real changes in a namespace and checks
// the watcher's verdict on each.
func TestPathWatcherInNamespace(t *testing.T) {
	tests := []struct {
		name   string
		change func(t *testing.T, r *roamRig)
		want   string
	}{
		{"local address deleted, another in the prefix stays", func(t *testing.T, r *roamRig) {
			r.addAddr(t, r.toSrv, "2001:db8:1::b/64")
			if err := r.cli.Netlink().AddrDel(r.toSrv, &netlink.Addr{IPNet: netlinkNet(netip.PrefixFrom(roamLocal, 64))}); err != nil {
				t.Fatal(err)
			}
		}, "local address 2001:db8:1::2 removed"},
		{"only address deleted", func(t *testing.T, r *roamRig) {
			// The kernel removes the prefix route with the address, in an
			// order a look can fall between: either reason is right.
			if err := r.cli.Netlink().AddrDel(r.toSrv, &netlink.Addr{IPNet: netlinkNet(netip.PrefixFrom(roamLocal, 64))}); err != nil {
				t.Fatal(err)
			}
		}, "local address 2001:db8:1::2 removed|no route to the server"},
		{"route to the server deleted", func(t *testing.T, r *roamRig) {
			if err := r.cli.Netlink().RouteDel(&netlink.Route{LinkIndex: r.toSrv.Attrs().Index, Dst: netlinkNet(netip.MustParsePrefix("2001:db8:1::/64"))}); err != nil {
				t.Fatal(err)
			}
		}, "no route to the server"},
		{"blackhole route to the server", func(t *testing.T, r *roamRig) {
			r.addRoute(t, &netlink.Route{Type: unix.RTN_BLACKHOLE, Dst: netlinkNet(netip.PrefixFrom(roamServer, 128))})
		}, "no route to the server"},
		{"route moved to the other link", func(t *testing.T, r *roamRig) {
			r.addRoute(t, &netlink.Route{Dst: netlinkNet(netip.PrefixFrom(roamServer, 128)), Gw: roamOtherG.AsSlice()})
		}, "moved to interface"},
		{"changes that do not matter, then the address", func(t *testing.T, r *roamRig) {
			r.addAddr(t, r.toSrv, "2001:db8:1::b/64")                      // a new preferred source, same link
			r.addAddr(t, r.toOth, "203.0.113.2/24")                        // IPv4, like the TUN's
			r.addRoute(t, &netlink.Route{LinkIndex: r.toOth.Attrs().Index, // IPv4 routes, like the TUN's
				Dst: netlinkNet(netip.MustParsePrefix("0.0.0.0/1"))})
			r.addRoute(t, &netlink.Route{Dst: netlinkNet(netip.MustParsePrefix("2001:db8:77::/64")), Gw: roamOtherG.AsSlice()})
			if err := r.cli.Netlink().AddrDel(r.toSrv, &netlink.Addr{IPNet: netlinkNet(netip.PrefixFrom(roamLocal, 64))}); err != nil {
				t.Fatal(err)
			}
		}, "local address 2001:db8:1::2 removed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			verifyNoLeaks(t)
			r := newRoamRig(t)
			logs := &logBuffer{}
			verdict := r.watch(t, t.Context(), logs)
			tt.change(t, r)
			select {
			case err := <-verdict:
				if !errors.Is(err, errPathLost) || !slices.ContainsFunc(strings.Split(tt.want, "|"), func(w string) bool {
					return strings.Contains(err.Error(), w)
				}) {
					t.Fatalf("verdict %v, want the path lost: %q\n%s", err, tt.want, logs.String())
				}
			case <-time.After(waitLong):
				t.Fatalf("no verdict within %v\n%s", waitLong, logs.String())
			}
		})
	}
}

// TestPathWatcherStops: a watch whose session ends returns nil and leaves
// no goroutine behind (the library's included).
func TestPathWatcherStops(t *testing.T) {
	verifyNoLeaks(t)
	r := newRoamRig(t)
	ctx, cancel := context.WithCancel(t.Context())
	verdict := r.watch(t, ctx, &logBuffer{})
	r.addAddr(t, r.toSrv, "2001:db8:1::b/64")
	cancel()
	select {
	case err := <-verdict:
		if err != nil {
			t.Fatalf("verdict %v after the session ended, want nil", err)
		}
	case <-time.After(waitLong):
		t.Fatal("the watch did not stop")
	}
}

// TestPathWatcherAddressGoneBeforeWatch: an address removed between the
// connect and the subscription is caught by the first look.
func TestPathWatcherAddressGoneBeforeWatch(t *testing.T) {
	verifyNoLeaks(t)
	r := newRoamRig(t)
	if err := r.cli.Netlink().AddrDel(r.toSrv, &netlink.Addr{IPNet: netlinkNet(netip.PrefixFrom(roamLocal, 64))}); err != nil {
		t.Fatal(err)
	}
	logs := &logBuffer{}
	w := &pathWatcher{ns: r.ns, log: slog.New(slog.NewTextHandler(logs, nil))}
	if err := w.watch(t.Context(), roamLocal, roamServer); !errors.Is(err, errPathLost) || !strings.Contains(err.Error(), "removed") {
		t.Fatalf("verdict %v, want the local address removed\n%s", err, logs.String())
	}
}
