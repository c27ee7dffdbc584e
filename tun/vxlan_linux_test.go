package tun

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/4over6d/4over6d/tun/netnstest"
	"github.com/vishvananda/netlink"
)

const testVXLAN = "vx4o6"

// Underlay addresses of the test nodes, on one /64.
var (
	underlayA = netip.MustParseAddr("2001:db8:46::1")
	underlayB = netip.MustParseAddr("2001:db8:46::2")
	underlayC = netip.MustParseAddr("2001:db8:46::3")
)

func TestMACFor(t *testing.T) {
	a, b := MACFor("node-a"), MACFor("node-b")
	if !slices.Equal(a, MACFor("node-a")) {
		t.Errorf("MACFor(node-a) changed between calls: %v, %v", a, MACFor("node-a"))
	}
	if slices.Equal(a, b) {
		t.Errorf("MACFor(node-a) = MACFor(node-b) = %v", a)
	}
	for _, mac := range []net.HardwareAddr{a, b, MACFor("")} {
		if len(mac) != 6 || mac[0]&0x01 != 0 || mac[0]&0x02 == 0 {
			t.Errorf("MAC %v is not a locally administered unicast address", mac)
		}
	}
}

func TestVXLANConfigValidate(t *testing.T) {
	valid := VXLANConfig{Name: testVXLAN, Local: underlayA}
	with := func(f func(*VXLANConfig)) VXLANConfig { cfg := valid; f(&cfg); return cfg }
	tests := []struct {
		name string
		cfg  VXLANConfig
		want string
	}{
		{"defaults", valid, ""},
		{"everything set", with(func(c *VXLANConfig) { c.VNI, c.Port, c.MTU, c.MAC = maxVNI, 8472, 1400, MACFor("a") }), ""},
		{"unique local underlay", with(func(c *VXLANConfig) { c.Local = netip.MustParseAddr("fd00:db8::1") }), ""},
		{"no name", with(func(c *VXLANConfig) { c.Name = "" }), "name"},
		{"long name", with(func(c *VXLANConfig) { c.Name = "a-name-too-long-x" }), "name"},
		{"VNI too large", with(func(c *VXLANConfig) { c.VNI = maxVNI + 1 }), "VNI 16777216"},
		{"negative VNI", with(func(c *VXLANConfig) { c.VNI = -1 }), "VNI -1"},
		{"port too large", with(func(c *VXLANConfig) { c.Port = 65536 }), "port 65536"},
		{"no local", with(func(c *VXLANConfig) { c.Local = netip.Addr{} }), "local address invalid IP"},
		{"IPv4 local", with(func(c *VXLANConfig) { c.Local = netip.MustParseAddr("198.51.100.1") }), "local address 198.51.100.1"},
		{"IPv4-mapped local", with(func(c *VXLANConfig) { c.Local = netip.MustParseAddr("::ffff:198.51.100.1") }), "local address"},
		{"link-local local", with(func(c *VXLANConfig) { c.Local = netip.MustParseAddr("fe80::1") }), "local address fe80::1"},
		{"multicast local", with(func(c *VXLANConfig) { c.Local = netip.MustParseAddr("ff02::1") }), "local address ff02::1"},
		{"small MTU", with(func(c *VXLANConfig) { c.MTU = 67 }), "MTU 67"},
		{"multicast MAC", with(func(c *VXLANConfig) { c.MAC = net.HardwareAddr{1, 0, 0x5e, 0, 0, 1} }), "not a unicast"},
		{"zero MAC", with(func(c *VXLANConfig) { c.MAC = make(net.HardwareAddr, 6) }), "not a unicast"},
		{"short MAC", with(func(c *VXLANConfig) { c.MAC = net.HardwareAddr{2, 0, 0, 0, 1} }), "not a unicast"},
	}
	for _, tt := range tests {
		err := tt.cfg.withDefaults().validate()
		if tt.want == "" && err != nil || tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)) {
			t.Errorf("%s: validate = %v, want an error mentioning %q (none if empty)", tt.name, err, tt.want)
		}
	}
}

// underlayNS is a namespace whose link (returned) holds underlayA/64,
// towards a stub namespace: enough for a VXLAN to be created and
// programmed, not to carry traffic.
func underlayNS(t *testing.T, prefix string) (*netnstest.NS, string) {
	t.Helper()
	ns := netnstest.New(t, prefix)
	other := netnstest.New(t, prefix+"-stub")
	uplink, _ := netnstest.Link(t, ns, []netip.Prefix{netip.PrefixFrom(underlayA, 64)}, other, []netip.Prefix{netip.PrefixFrom(underlayB, 64)})
	return ns, uplink
}

// openVXLANInNS opens a VXLAN inside ns, closed when the test ends.
func openVXLANInNS(t *testing.T, ns *netnstest.NS, cfg VXLANConfig) *VXLAN {
	t.Helper()
	return openedInNS(t, ns, "OpenVXLAN", func() (*VXLAN, error) { return OpenVXLAN(cfg) })
}

func TestOpenVXLANConfiguresDevice(t *testing.T) {
	tests := []struct {
		name               string
		cfg                VXLANConfig
		vni, port, mtu     int
		mac                net.HardwareAddr // nil: any unicast
		underlayMTU        int
		wantUnderlayLinked bool
	}{
		{"defaults", VXLANConfig{Local: underlayA, MAC: MACFor("a")}, DefaultVNI, DefaultVXLANPort, 1430, MACFor("a"), 1500, true},
		{"everything given", VXLANConfig{Local: underlayA, VNI: 77, Port: 8472, MTU: 1280, MAC: MACFor("b")}, 77, 8472, 1280, MACFor("b"), 1500, true},
		{"MTU from a smaller underlay, kernel's MAC", VXLANConfig{Local: underlayA}, DefaultVNI, DefaultVXLANPort, 1330, nil, 1400, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ns, uplink := underlayNS(t, "vx-open")
			up, err := ns.Netlink().LinkByName(uplink)
			if err != nil {
				t.Fatal(err)
			}
			if err := ns.Netlink().LinkSetMTU(up, tt.underlayMTU); err != nil {
				t.Fatalf("LinkSetMTU: %v", err)
			}
			tt.cfg.Name = testVXLAN
			v := openVXLANInNS(t, ns, tt.cfg)
			link, err := ns.Netlink().LinkByName(testVXLAN)
			if err != nil {
				t.Fatalf("VXLAN not found in namespace: %v", err)
			}
			vx, ok := link.(*netlink.Vxlan)
			if !ok {
				t.Fatalf("link type = %s, want vxlan", link.Type())
			}
			local, _ := netip.AddrFromSlice(vx.SrcAddr)
			got := fmt.Sprintf("vni %d port %d local %v dev %d learning %v group %v mtu %d up %v",
				vx.VxlanId, vx.Port, local, vx.VtepDevIndex, vx.Learning, vx.Group, vx.MTU, vx.Flags&net.FlagUp != 0)
			want := fmt.Sprintf("vni %d port %d local %v dev %d learning false group <nil> mtu %d up true",
				tt.vni, tt.port, underlayA, up.Attrs().Index, tt.mtu)
			if got != want {
				t.Errorf("device: %s\nwant:   %s", got, want)
			}
			if v.Name() != testVXLAN || v.MTU() != tt.mtu || !slices.Equal(v.MAC(), vx.HardwareAddr) {
				t.Errorf("Name, MTU, MAC = %s, %d, %v; want %s, %d, %v", v.Name(), v.MTU(), v.MAC(), testVXLAN, tt.mtu, vx.HardwareAddr)
			}
			if tt.mac != nil && !slices.Equal(vx.HardwareAddr, tt.mac) || !isUnicastMAC(vx.HardwareAddr) {
				t.Errorf("MAC = %v, want %v (or any unicast if nil)", vx.HardwareAddr, tt.mac)
			}
			if got := addrs(t, ns, link, netlink.FAMILY_V6); len(got) != 0 {
				t.Errorf("IPv6 addresses = %v, want none (IPv6 disabled)", got)
			}
			if got := readSysctlIn(t, ns, filepath.Join("/proc/sys/net/ipv6/conf", testVXLAN, "disable_ipv6")); got != "1" {
				t.Errorf("disable_ipv6 = %q, want 1", got)
			}
		})
	}
}

func readSysctlIn(t *testing.T, ns *netnstest.NS, path string) string {
	t.Helper()
	var b []byte
	if err := ns.Do(func() (err error) { b, err = os.ReadFile(path); return err }); err != nil {
		t.Fatalf("reading %s in %s: %v", path, ns.Name, err)
	}
	return strings.TrimSpace(string(b))
}

func TestOpenVXLANRefuses(t *testing.T) {
	tests := []struct {
		name  string
		cfg   VXLANConfig
		setup func(t *testing.T, ns *netnstest.NS)
		want  string
	}{
		{
			name: "local address on no interface",
			cfg:  VXLANConfig{Name: testVXLAN, Local: underlayC},
			want: "failed to open VXLAN vx4o6: local address 2001:db8:46::3 is not configured on any interface",
		},
		{
			name: "MTU larger than the underlay allows",
			cfg:  VXLANConfig{Name: testVXLAN, Local: underlayA, MTU: 1431},
			want: "MTU 1431 is larger than underlay",
		},
		{
			name: "local address on loopback",
			cfg:  VXLANConfig{Name: testVXLAN, Local: netip.MustParseAddr("2001:db8:47::1")},
			setup: func(t *testing.T, ns *netnstest.NS) {
				ns.Run(t, "ip", "-6", "addr", "add", "2001:db8:47::1/128", "dev", "lo")
			},
			want: "is on loopback lo",
		},
		{
			name: "name taken by another type",
			cfg:  VXLANConfig{Name: testVXLAN, Local: underlayA},
			setup: func(t *testing.T, ns *netnstest.NS) {
				addBridge(t, ns, testVXLAN)
			},
			want: "failed to remove stale VXLAN vx4o6: an interface of type bridge has that name",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ns, _ := underlayNS(t, "vx-refuse")
			if tt.setup != nil {
				tt.setup(t, ns)
			}
			before := linkNames(t, ns)
			err := ns.Do(func() error {
				v, err := OpenVXLAN(tt.cfg)
				if err == nil {
					v.Close()
				}
				return err
			})
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("OpenVXLAN = %v, want an error mentioning %q", err, tt.want)
			}
			if after := linkNames(t, ns); !slices.Equal(after, before) {
				t.Errorf("links after the failed OpenVXLAN = %v, want %v as before", after, before)
			}
		})
	}
}

func addBridge(t *testing.T, ns *netnstest.NS, name string) *netlink.Bridge {
	t.Helper()
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: name}}
	if err := ns.Netlink().LinkAdd(br); err != nil {
		t.Fatalf("failed to add bridge %s in %s: %v", name, ns.Name, err)
	}
	return br
}

// addStaleVXLAN creates a VXLAN as a killed node would have left it.
func addStaleVXLAN(t *testing.T, ns *netnstest.NS) int {
	t.Helper()
	stale := &netlink.Vxlan{LinkAttrs: netlink.LinkAttrs{Name: testVXLAN}, VxlanId: 99, Port: 4790}
	if err := ns.Netlink().LinkAdd(stale); err != nil {
		t.Fatalf("failed to add a stale VXLAN: %v", err)
	}
	return stale.Index
}

func linkNames(t *testing.T, ns *netnstest.NS) []string {
	t.Helper()
	links, err := ns.Netlink().LinkList()
	if err != nil {
		t.Fatalf("LinkList: %v", err)
	}
	var names []string
	for _, l := range links {
		names = append(names, l.Attrs().Name+"/"+l.Type())
	}
	slices.Sort(names)
	return names
}

func TestOpenVXLANReplacesStaleDevice(t *testing.T) {
	ns, _ := underlayNS(t, "vx-stale")
	staleIndex := addStaleVXLAN(t, ns)
	openVXLANInNS(t, ns, VXLANConfig{Name: testVXLAN, Local: underlayA})
	link, err := ns.Netlink().LinkByName(testVXLAN)
	if err != nil {
		t.Fatalf("VXLAN not found: %v", err)
	}
	vx := link.(*netlink.Vxlan)
	if vx.Index == staleIndex || vx.VxlanId != DefaultVNI || vx.Port != DefaultVXLANPort {
		t.Errorf("device index %d VNI %d port %d, want a new device (not %d) with VNI %d port %d",
			vx.Index, vx.VxlanId, vx.Port, staleIndex, DefaultVNI, DefaultVXLANPort)
	}
}

func TestVXLANClose(t *testing.T) {
	ns, _ := underlayNS(t, "vx-close")
	var v *VXLAN
	if err := ns.Do(func() (err error) { v, err = OpenVXLAN(VXLANConfig{Name: testVXLAN, Local: underlayA}); return err }); err != nil {
		t.Fatalf("OpenVXLAN: %v", err)
	}
	if err := v.SetPeers([]Peer{peer("b", underlayB, "192.0.2.64/26")}); err != nil {
		t.Fatalf("SetPeers: %v", err)
	}
	if err := v.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if _, err := ns.Netlink().LinkByName(testVXLAN); !errors.As(err, new(netlink.LinkNotFoundError)) {
		t.Errorf("LinkByName after Close = %v, want link not found", err)
	}
	if got := ns.IPv4Routes(t, nil); slices.Contains(got, "192.0.2.64/26") {
		t.Errorf("routes after Close = %v, want the peer's gone", got)
	}
	if err := v.Close(); err != nil {
		t.Errorf("second Close = %v, want nil", err)
	}
	if err := v.SetPeers(nil); !errors.Is(err, ErrClosed) || !strings.Contains(err.Error(), testVXLAN) {
		t.Errorf("SetPeers after Close = %v, want ErrClosed naming the device", err)
	}
}

func TestRemoveStaleVXLAN(t *testing.T) {
	tests := []struct {
		name    string
		setup   func(t *testing.T, ns *netnstest.NS)
		want    string // error text; "" for none
		remains bool   // the link is still there afterwards
	}{
		{"absent", func(*testing.T, *netnstest.NS) {}, "", false},
		{"stale VXLAN", func(t *testing.T, ns *netnstest.NS) { addStaleVXLAN(t, ns) }, "", false},
		{"another type", func(t *testing.T, ns *netnstest.NS) { addBridge(t, ns, testVXLAN) }, "an interface of type bridge has that name", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ns := netnstest.New(t, "vx-remove")
			tt.setup(t, ns)
			err := ns.Do(func() error { return RemoveStaleVXLAN(testVXLAN) })
			if tt.want == "" && err != nil || tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)) {
				t.Errorf("RemoveStaleVXLAN = %v, want an error mentioning %q (none if empty)", err, tt.want)
			}
			_, err = ns.Netlink().LinkByName(testVXLAN)
			if remains := err == nil; remains != tt.remains {
				t.Errorf("link still there = %v (%v), want %v", remains, err, tt.remains)
			}
		})
	}
}
