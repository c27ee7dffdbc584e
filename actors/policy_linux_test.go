package actors

import (
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/4over6d/4over6d/tun/netnstest"
)

// Client addresses of the namespace tests: two of one /64, one of another
// /64, and two IPv4 ones that reach a dual-stack listener as IPv4-mapped
// addresses.
var (
	labA    = netip.MustParseAddr("2001:db8:1::11")
	labB    = netip.MustParseAddr("2001:db8:1::12")
	otherC  = netip.MustParseAddr("2001:db8:2::11")
	v4In    = netip.MustParseAddr("203.0.113.5")
	v4Out   = netip.MustParseAddr("198.51.100.5")
	nsAddrs = []netip.Addr{labA, labB, otherC, v4In, v4Out}
)

// nsRig puts the engine's listener in a fresh namespace (a dual-stack one
// on [::]) with the client addresses on its loopback, so connections come
// from real, distinct source addresses over real TCP.
type nsRig struct {
	*harness
	ns *netnstest.NS
}

func newNSRig(t *testing.T, tweak ...func(*Config)) *nsRig {
	t.Helper()
	ns := netnstest.New(t, "policy")
	lo, err := ns.Netlink().LinkByName("lo")
	if err != nil {
		t.Fatalf("lo in %s: %v", ns.Name, err)
	}
	for _, a := range nsAddrs {
		addr := &netlink.Addr{IPNet: &net.IPNet{IP: a.AsSlice(), Mask: net.CIDRMask(a.BitLen(), a.BitLen())}}
		if a.Is6() {
			addr.Flags = unix.IFA_F_NODAD
		}
		if err := ns.Netlink().AddrAdd(lo, addr); err != nil {
			t.Fatalf("add %v to lo in %s: %v", a, ns.Name, err)
		}
	}
	var ln net.Listener
	if err := ns.Do(func() (err error) { ln, err = net.Listen("tcp", "[::]:0"); return err }); err != nil {
		t.Fatalf("listen in %s: %v", ns.Name, err)
	}
	h := newHarness(t, append([]func(*Config){func(c *Config) { c.Listener = ln }}, tweak...)...)
	return &nsRig{harness: h, ns: ns}
}

// dialFrom connects from src to the listener, inside the namespace.
func (r *nsRig) dialFrom(src netip.Addr) *client {
	r.t.Helper()
	port := r.ln.Addr().(*net.TCPAddr).Port
	dst := netip.AddrPortFrom(netip.IPv6Loopback(), uint16(port))
	if src.Is4() {
		dst = netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 1}), uint16(port))
	}
	var conn net.Conn
	err := r.ns.Do(func() (err error) {
		d := net.Dialer{LocalAddr: net.TCPAddrFromAddrPort(netip.AddrPortFrom(src, 0))}
		conn, err = d.Dial("tcp", dst.String())
		return err
	})
	if err != nil {
		r.t.Fatalf("dial from %v: %v", src, err)
	}
	return r.adopt(conn)
}

// connectFrom dials from src and completes the 100/101 exchange.
func (r *nsRig) connectFrom(src netip.Addr) *client {
	c := r.dialFrom(src)
	c.handshake()
	return c
}

// -allow admits the clients of its prefixes and refuses the others before
// 101, IPv4 clients of the dual-stack listener included (they are
// unmapped and matched against IPv4 prefixes).
func TestAllowFromRealSources(t *testing.T) {
	r := newNSRig(t, func(c *Config) {
		c.Allow = []netip.Prefix{netip.MustParsePrefix("2001:db8:1::/64"), netip.MustParsePrefix("203.0.113.0/24")}
	})
	for _, tc := range []struct {
		src     netip.Addr
		allowed bool
	}{{labA, true}, {labB, true}, {otherC, false}, {v4In, true}, {v4Out, false}} {
		t.Run(tc.src.String(), func(t *testing.T) {
			before := r.srv.Metrics().Refused(RefuseNotAllowed)
			c := r.dialFrom(tc.src)
			if !tc.allowed {
				c.expectRefused()
				if n := r.srv.Metrics().Refused(RefuseNotAllowed); n != before+1 {
					t.Fatalf("refused as not allowed = %d, want %d", n, before+1)
				}
				return
			}
			c.handshake()
			r.awaitUplink(c, 1)
		})
	}
	if n := r.srv.Metrics().SessionsOpened.Load(); n != 3 {
		t.Fatalf("sessions opened = %d, want the 3 allowed clients", n)
	}
}

// -source-prefix 64 makes the two addresses of one /64 one source for
// -max-per-source (the second is refused, another /64 is not); 128 keeps
// them apart. IPv4 clients count per address under either.
func TestSourcePrefixForMaxPerSource(t *testing.T) {
	for _, tc := range []struct {
		bits        int
		sameRefused bool
	}{{64, true}, {128, false}} {
		t.Run(fmt.Sprint(tc.bits), func(t *testing.T) {
			r := newNSRig(t, func(c *Config) { c.MaxPerSource, c.SourcePrefix = 1, tc.bits })
			r.connectFrom(labA)
			second := r.dialFrom(labB)
			if tc.sameRefused {
				second.expectRefused()
			} else {
				second.handshake()
			}
			r.connectFrom(otherC)
			r.connectFrom(v4In)
			r.connectFrom(v4Out)
			want := map[bool]uint64{true: 1, false: 0}[tc.sameRefused]
			if n := r.srv.Metrics().Refused(RefusePerSource); n != want {
				t.Fatalf("per-source refusals = %d, want %d", n, want)
			}
		})
	}
}

// A ban is for the kicked client's source: under -source-prefix 64 the
// rest of its /64 is refused too, under 128 only its own address.
func TestBanCoversTheSource(t *testing.T) {
	for _, tc := range []struct {
		bits            int
		neighbourBanned bool
	}{{64, true}, {128, false}} {
		t.Run(fmt.Sprint(tc.bits), func(t *testing.T) {
			r := newNSRig(t, func(c *Config) { c.SourcePrefix = tc.bits })
			victim := r.connectFrom(labA)
			if _, err := r.srv.Kick(victim.addr, time.Hour); err != nil {
				t.Fatal(err)
			}
			victim.expectClosed(wait)
			r.dialFrom(labA).expectRefused()
			if neighbour := r.dialFrom(labB); tc.neighbourBanned {
				neighbour.expectRefused()
			} else {
				neighbour.handshake()
			}
			r.connectFrom(otherC) // another /64 is never banned
			want := map[bool]uint64{true: 2, false: 1}[tc.neighbourBanned]
			if n := r.srv.Metrics().Refused(RefuseBanned); n != want {
				t.Fatalf("refused as banned = %d, want %d", n, want)
			}
		})
	}
}
