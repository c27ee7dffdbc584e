package tun

import (
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/4over6d/4over6d/tun/netnstest"
	"github.com/vishvananda/netlink"
)

// def1 is the pair of routes a client installs to take over the default
// route without deleting it.
var def1 = []netip.Prefix{netip.MustParsePrefix("0.0.0.0/1"), netip.MustParsePrefix("128.0.0.0/1")}

func TestClientConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		cfg  ClientConfig
		want string
	}{
		{"valid", ClientConfig{Name: testTUN, MTU: testMTU, Addr: clientAddr}, ""},
		{"empty name", ClientConfig{MTU: testMTU, Addr: clientAddr}, "name"},
		{"long name", ClientConfig{Name: "a-name-too-long-x", MTU: testMTU, Addr: clientAddr}, "name"},
		{"small MTU", ClientConfig{Name: testTUN, MTU: 67, Addr: clientAddr}, "MTU 67"},
		{"no address", ClientConfig{Name: testTUN, MTU: testMTU}, "not IPv4"},
		{"IPv6 address", ClientConfig{Name: testTUN, MTU: testMTU, Addr: netip.MustParseAddr("2001:db8::2")}, "not IPv4"},
	}
	for _, tt := range tests {
		err := tt.cfg.validate()
		if tt.want == "" && err != nil || tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)) {
			t.Errorf("%s: validate = %v, want an error mentioning %q (none if empty)", tt.name, err, tt.want)
		}
	}
}

// openClientInNS opens a client TUN inside ns, closed when the test ends.
func openClientInNS(t *testing.T, ns *netnstest.NS, addr netip.Addr, offload bool) *Linux {
	t.Helper()
	dev := openedInNS(t, ns, "OpenClient", func() (*Linux, error) {
		return OpenClient(ClientConfig{Name: testTUN, MTU: testMTU, Addr: addr, Offload: offload})
	})
	requireOffload(t, dev, offload)
	return dev
}

func TestOpenClientConfiguresHostAddress(t *testing.T) {
	ns := netnstest.New(t, "tun-client")
	openClientInNS(t, ns, clientAddr, false)
	link, err := ns.Netlink().LinkByName(testTUN)
	if err != nil {
		t.Fatalf("TUN not found in namespace: %v", err)
	}
	if link.Attrs().MTU != testMTU || link.Attrs().Flags&net.FlagUp == 0 {
		t.Errorf("MTU %d, flags %v; want %d and up", link.Attrs().MTU, link.Attrs().Flags, testMTU)
	}
	if got, want := addrs(t, ns, link, netlink.FAMILY_V4), []string{"192.0.2.7/32"}; !slices.Equal(got, want) {
		t.Errorf("IPv4 addresses = %v, want %v", got, want)
	}
	if got := addrs(t, ns, link, netlink.FAMILY_V6); len(got) != 0 {
		t.Errorf("IPv6 addresses = %v, want none (IPv6 disabled)", got)
	}
}

func TestClientRoutesFollowAddressAndGoWithDevice(t *testing.T) {
	ns := netnstest.New(t, "tun-routes")
	dev := openClientInNS(t, ns, clientAddr, false)
	link, err := ns.Netlink().LinkByName(testTUN)
	if err != nil {
		t.Fatalf("TUN not found: %v", err)
	}
	routes := append(slices.Clone(def1), netip.MustParsePrefix("203.0.113.0/24"))
	if err := dev.AddRoutes(routes); err != nil {
		t.Fatalf("AddRoutes: %v", err)
	}
	if err := dev.AddRoutes(routes); err != nil {
		t.Fatalf("AddRoutes again (must be idempotent): %v", err)
	}
	want := []string{"0.0.0.0/1", "128.0.0.0/1", "203.0.113.0/24"}
	if got := ns.IPv4Routes(t, link); !slices.Equal(got, want) {
		t.Fatalf("routes = %v, want %v", got, want)
	}

	moved := netip.MustParseAddr("192.0.2.9")
	if err := dev.ReplaceAddr(moved); err != nil {
		t.Fatalf("ReplaceAddr: %v", err)
	}
	if got, want := addrs(t, ns, link, netlink.FAMILY_V4), []string{"192.0.2.9/32"}; !slices.Equal(got, want) {
		t.Errorf("IPv4 addresses after ReplaceAddr = %v, want %v", got, want)
	}
	if got := ns.IPv4Routes(t, link); !slices.Equal(got, want) {
		t.Fatalf("routes after ReplaceAddr = %v, want %v kept", got, want)
	}
	if src := sourceFor(t, ns, netip.MustParseAddr("198.51.100.2")); src != moved {
		t.Errorf("kernel picks source %v through the TUN, want the new address %v", src, moved)
	}
	if err := dev.DeleteRoutes(routes[2:]); err != nil {
		t.Fatalf("DeleteRoutes: %v", err)
	}
	want = []string{"0.0.0.0/1", "128.0.0.0/1"}
	if got := ns.IPv4Routes(t, link); !slices.Equal(got, want) {
		t.Fatalf("routes = %v, want %v", got, want)
	}
	if err := dev.DeleteRoutes(routes); err != nil {
		t.Fatalf("DeleteRoutes of partly deleted routes: %v", err)
	}
	if err := dev.AddRoutes(def1); err != nil {
		t.Fatalf("AddRoutes: %v", err)
	}
	if err := dev.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if _, err := ns.Netlink().LinkByName(testTUN); err == nil {
		t.Fatal("TUN still exists after Close")
	}
	if got := ns.IPv4Routes(t, nil); slices.ContainsFunc(got, func(s string) bool { return strings.HasSuffix(s, "/1") }) {
		t.Fatalf("routes %v remain after Close", got)
	}
}

func TestRouteArgumentsChecked(t *testing.T) {
	ns := netnstest.New(t, "tun-routearg")
	dev := openClientInNS(t, ns, clientAddr, false)
	if err := dev.AddRoutes([]netip.Prefix{netip.MustParsePrefix("2001:db8::/32")}); err == nil {
		t.Error("AddRoutes of an IPv6 prefix succeeded")
	}
	if err := dev.ReplaceAddr(netip.MustParseAddr("2001:db8::2")); err == nil {
		t.Error("ReplaceAddr with an IPv6 address succeeded")
	}
}

// sourceFor asks the kernel which source address it picks towards dst.
func sourceFor(t *testing.T, ns *netnstest.NS, dst netip.Addr) netip.Addr {
	t.Helper()
	routes, err := ns.Netlink().RouteGet(dst.AsSlice())
	if err != nil || len(routes) == 0 {
		t.Fatalf("RouteGet %v: %v", dst, err)
	}
	src, _ := netip.AddrFromSlice(routes[0].Src)
	return src.Unmap()
}
