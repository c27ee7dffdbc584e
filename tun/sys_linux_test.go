package tun

import (
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/4over6d/4over6d/tun/netnstest"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

func TestCheckPrivileges(t *testing.T) {
	netnstest.RequireRoot(t)
	if err := CheckPrivileges(); err != nil {
		t.Fatalf("CheckPrivileges as root = %v, want nil", err)
	}
	err := withoutNetAdmin(t, CheckPrivileges)
	if err == nil || !strings.Contains(err.Error(), "needs CAP_NET_ADMIN (run as root or grant the capability)") {
		t.Fatalf("CheckPrivileges without CAP_NET_ADMIN = %v, want a CAP_NET_ADMIN error", err)
	}
}

// withoutNetAdmin runs f on a thread whose effective capability set lacks
// CAP_NET_ADMIN. The thread stays locked so the runtime destroys it with
// the goroutine instead of reusing it with fewer capabilities.
func withoutNetAdmin(t *testing.T, f func() error) error {
	t.Helper()
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
		var data [2]unix.CapUserData
		if err := unix.Capget(&hdr, &data[0]); err != nil {
			done <- err
			return
		}
		data[0].Effective &^= 1 << unix.CAP_NET_ADMIN
		if err := unix.Capset(&hdr, &data[0]); err != nil {
			done <- err
			return
		}
		done <- f()
	}()
	return <-done
}

func TestEnableForwardingChangesOnlyItsNamespace(t *testing.T) {
	ns := netnstest.New(t, "tun-fwd")
	hostBefore := readForwarding(t)
	if err := ns.Do(EnableForwarding); err != nil {
		t.Fatalf("EnableForwarding in namespace: %v", err)
	}
	var inside string
	err := ns.Do(func() error {
		b, err := os.ReadFile(ipForwardPath)
		inside = strings.TrimSpace(string(b))
		return err
	})
	if err != nil || inside != "1" {
		t.Errorf("ip_forward in namespace = %q, %v; want 1", inside, err)
	}
	if hostAfter := readForwarding(t); hostAfter != hostBefore {
		t.Errorf("host ip_forward changed from %s to %s", hostBefore, hostAfter)
	}
}

func readForwarding(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(ipForwardPath)
	if err != nil {
		t.Fatalf("reading %s: %v", ipForwardPath, err)
	}
	return strings.TrimSpace(string(b))
}

func TestDefaultRouteInterface(t *testing.T) {
	tests := []struct {
		name         string
		defaultRoute bool
	}{
		{"no default route", false},
		{"default route via veth", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ns := netnstest.New(t, "tun-route")
			peer := netnstest.New(t, "tun-peer")
			ifName, _ := netnstest.Link(t,
				ns, []netip.Prefix{netip.MustParsePrefix("198.51.100.1/24")},
				peer, []netip.Prefix{netip.MustParsePrefix("198.51.100.2/24")})
			want := ""
			if tt.defaultRoute {
				ns.AddRoute(t, netip.MustParsePrefix("0.0.0.0/0"), netip.MustParseAddr("198.51.100.2"))
				want = ifName
			}
			var got string
			err := ns.Do(func() error {
				var err error
				got, err = DefaultRouteInterface()
				return err
			})
			if err != nil || got != want {
				t.Errorf("DefaultRouteInterface = %q, %v; want %q, nil", got, err, want)
			}
		})
	}
}

func TestDefaultRouteLink(t *testing.T) {
	defaultDst := &net.IPNet{IP: net.IPv4zero, Mask: net.CIDRMask(0, 32)}
	subnet := &net.IPNet{IP: net.IPv4(198, 51, 100, 0), Mask: net.CIDRMask(24, 32)}
	unicast := func(dst *net.IPNet, link, metric int) netlink.Route {
		return netlink.Route{Dst: dst, LinkIndex: link, Priority: metric, Type: unix.RTN_UNICAST}
	}
	tests := []struct {
		name   string
		routes []netlink.Route
		want   int
	}{
		{"none", nil, 0},
		{"only a subnet route", []netlink.Route{unicast(subnet, 2, 0)}, 0},
		{"default route", []netlink.Route{unicast(subnet, 2, 0), unicast(defaultDst, 3, 0)}, 3},
		{"nil destination is default", []netlink.Route{unicast(nil, 4, 0)}, 4},
		{"lowest metric wins", []netlink.Route{unicast(defaultDst, 3, 200), unicast(defaultDst, 5, 100)}, 5},
		{"multipath takes first hop", []netlink.Route{{
			Dst: defaultDst, Type: unix.RTN_UNICAST,
			MultiPath: []*netlink.NexthopInfo{{LinkIndex: 6}, {LinkIndex: 7}},
		}}, 6},
		{"unreachable default ignored", []netlink.Route{{Dst: defaultDst, Type: unix.RTN_UNREACHABLE}}, 0},
	}
	for _, tt := range tests {
		if got := defaultRouteLink(tt.routes); got != tt.want {
			t.Errorf("%s: defaultRouteLink = %d, want %d", tt.name, got, tt.want)
		}
	}
}

func TestSetSysctlWritesOnlyWhenNeeded(t *testing.T) {
	old := time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC)
	tests := []struct {
		name, before string
		written      bool
	}{
		{"already set: untouched (read-only /proc/sys in containers)", "1\n", false},
		{"off: switched on", "0\n", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "knob")
			if err := os.WriteFile(path, []byte(tc.before), 0o644); err != nil {
				t.Fatal(err)
			}
			if err := os.Chtimes(path, old, old); err != nil {
				t.Fatal(err)
			}
			if err := setSysctl(path); err != nil {
				t.Fatal(err)
			}
			fi, err := os.Stat(path)
			if err != nil {
				t.Fatal(err)
			}
			data, _ := os.ReadFile(path)
			if strings.TrimSpace(string(data)) != "1" || fi.ModTime().After(old) != tc.written {
				t.Fatalf("content %q, rewritten %v; want 1, rewritten %v", data, fi.ModTime().After(old), tc.written)
			}
		})
	}
}
