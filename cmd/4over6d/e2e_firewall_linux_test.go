package main

// End-to-end tests of the server's nftables table (issue #14): NAT that
// follows a moved default route, the MSS clamp for TCP crossing the TUN,
// and the admin port closed to the tunnel's clients. They use the
// topology, server and raw client of e2e_linux_test.go; every pass
// criterion is a packet that arrives (a datagram, a SYN, a reset).

import (
	bin "encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/4over6d/4over6d/messages/wire"
	"github.com/4over6d/4over6d/tun"
	"github.com/4over6d/4over6d/tun/checksum"
	"github.com/4over6d/4over6d/tun/netnstest"
	"github.com/4over6d/4over6d/tun/tuntest"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// The two-uplink topology: the server reaches the far host through router
// 1 (198.51.100.0/25) or router 2 (203.0.113.0/25), whichever its default
// route names; the far host sits behind both (198.51.100.128/25 and
// 203.0.113.128/25).
var (
	uplink1    = netip.MustParsePrefix("198.51.100.1/25")
	router1    = netip.MustParseAddr("198.51.100.2")
	uplink2    = netip.MustParsePrefix("203.0.113.1/25")
	router2    = netip.MustParseAddr("203.0.113.2")
	farHost    = netip.MustParseAddr("198.51.100.130")
	anyIPv4    = netip.MustParsePrefix("0.0.0.0/0")
	tcpFlagRST = uint8(0x04)
)

// newTwoUplinkTopology is newTopology with two routers between the server
// and the internet host (tp.inet), the default route via router 1.
func newTwoUplinkTopology(t *testing.T) *topology {
	netnstest.RequireRoot(t)
	tp := &topology{cli: netnstest.New(t, "4o6cli"), srv: netnstest.New(t, "4o6srv"), inet: netnstest.New(t, "4o6far")}
	r1, r2 := netnstest.New(t, "4o6r1"), netnstest.New(t, "4o6r2")
	netnstest.Link(t, tp.srv, []netip.Prefix{netip.PrefixFrom(srvV6, 64)}, tp.cli, []netip.Prefix{netip.PrefixFrom(cliV6, 64)})
	netnstest.Link(t, tp.srv, []netip.Prefix{uplink1}, r1, []netip.Prefix{netip.PrefixFrom(router1, 25)})
	netnstest.Link(t, tp.srv, []netip.Prefix{uplink2}, r2, []netip.Prefix{netip.PrefixFrom(router2, 25)})
	netnstest.Link(t, r1, []netip.Prefix{netip.MustParsePrefix("198.51.100.129/25")}, tp.inet, []netip.Prefix{netip.PrefixFrom(farHost, 25)})
	netnstest.Link(t, r2, []netip.Prefix{netip.MustParsePrefix("203.0.113.129/25")}, tp.inet, []netip.Prefix{netip.MustParsePrefix("203.0.113.130/25")})
	for _, r := range []*netnstest.NS{r1, r2} {
		if err := r.Do(tun.EnableForwarding); err != nil {
			t.Fatalf("forwarding in %s: %v", r.Name, err)
		}
	}
	// Router 2 reaches the far host's first address through its second
	// one; the far host answers each uplink through its router.
	r2.AddRoute(t, netip.MustParsePrefix("198.51.100.128/25"), netip.MustParseAddr("203.0.113.130"))
	tp.inet.AddRoute(t, uplink1.Masked(), netip.MustParseAddr("198.51.100.129"))
	tp.inet.AddRoute(t, uplink2.Masked(), netip.MustParseAddr("203.0.113.129"))
	tp.srv.AddRoute(t, anyIPv4, router1)
	return tp
}

// TestNATFollowsTheDefaultRoute moves the server's default route from
// uplink 1 to uplink 2 between two flows of one client: the new flow must
// reach the far host masqueraded behind uplink 2's address, and its reply
// must come back. With the egress fixed at start, it would leave uplink 2
// with the client's pool address and its reply would be lost.
func TestNATFollowsTheDefaultRoute(t *testing.T) {
	tp := newTwoUplinkTopology(t)
	s := tp.startServer(t) // -nat auto
	if logs := s.logs.String(); !strings.Contains(logs, "masquerading the pool out of any interface but 4over6") {
		t.Fatalf("no NAT log line naming what is masqueraded:\n%s", logs)
	}
	var far *net.UDPConn
	if err := tp.inet.Do(func() (err error) {
		far, err = net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(farHost, 7777)))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer far.Close()
	c := tp.dial(t)
	c.handshake()

	c.echoVia(t, far, 41001, uplink1.Addr())
	route := &netlink.Route{Dst: &net.IPNet{IP: net.IPv4zero, Mask: net.CIDRMask(0, 32)}, Gw: router2.AsSlice()}
	if err := tp.srv.Netlink().RouteReplace(route); err != nil {
		t.Fatalf("moving the default route to %v: %v", router2, err)
	}
	c.echoVia(t, far, 41002, uplink2.Addr())
	c.echoVia(t, far, 41003, uplink2.Addr())
}

// echoVia sends one datagram of a new flow (source port) to the far host,
// checks it arrives from the uplink address nat, echoes it and waits for
// the echo to reach the client through the tunnel.
func (c *rawClient) echoVia(t *testing.T, far *net.UDPConn, port uint16, nat netip.Addr) {
	t.Helper()
	payload := fmt.Sprintf("flow %d", port)
	dst := far.LocalAddr().(*net.UDPAddr).AddrPort()
	c.send(wire.TypeDataRequest, tuntest.UDP(netip.AddrPortFrom(c.addr, port), dst, []byte(payload)))
	_ = far.SetReadDeadline(time.Now().Add(e2eWait))
	buf := make([]byte, 2048)
	for {
		n, from, err := far.ReadFromUDPAddrPort(buf)
		if err != nil {
			t.Fatalf("far host waiting for %q: %v", payload, err)
		}
		if string(buf[:n]) != payload {
			continue // a late datagram of an earlier flow
		}
		if from.Addr() != nat {
			t.Fatalf("%q reached the far host from %v, want it masqueraded as %v", payload, from, nat)
		}
		if _, err := far.WriteToUDPAddrPort(buf[:n], from); err != nil {
			t.Fatal(err)
		}
		break
	}
	c.await("echo of "+payload, func(s tuntest.Summary) bool {
		return s.Proto == 17 && s.Src == dst.Addr() && s.SrcPort == dst.Port() && s.DstPort == port && string(s.Payload) == payload
	})
}

// TestMSSClampedThroughTUN sends a client's SYN across a server with -mtu
// 1400 to a listener on the internet host: an MSS of 1460 must arrive as
// 1360 (seen by a raw socket there), and the listener's SYN-ACK, which
// offers 1460 for its 1500-byte link, must reach the client as 1360. A
// small MSS (536) is left alone both ways. That the listener answers, and
// the SYN-ACK's checksum, show the rewritten segments stay valid.
func TestMSSClampedThroughTUN(t *testing.T) {
	tp := newTopology(t)
	tp.startServer(t, "-mtu", "1400")
	c := tp.dial(t)
	c.handshake()
	tests := []struct {
		name     string
		mss      uint16 // offered by each side
		listener int    // TCP_MAXSEG of the listener, 0 for the kernel's 1460
		want     uint16
	}{
		{"large MSS clamped", 1460, 0, 1360},
		{"small MSS kept", 536, 536, 536},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ln := listenTCPWithMSS(t, tp.inet, tc.listener)
			raw := listenRawTCP(t, tp.inet)
			dst := ln.Addr().(*net.TCPAddr).AddrPort()
			src := netip.AddrPortFrom(c.addr, uint16(42000+i))
			c.send(wire.TypeDataRequest, tuntest.TCPSegment{
				Src: src, Dst: dst, Seq: 1000, Flags: tuntest.TCPSyn, Window: 65535, Options: mssOption(tc.mss),
			}.Build())

			syn := awaitRawSYN(t, raw, dst.Port())
			if syn.mss != tc.want {
				t.Errorf("client's SYN with MSS %d reached the internet host with MSS %d, want %d", tc.mss, syn.mss, tc.want)
			}
			var synAck tcpSegment
			got := c.await("SYN-ACK", func(s tuntest.Summary) bool {
				if s.Proto != unix.IPPROTO_TCP || s.Src != dst.Addr() {
					return false
				}
				seg, ok := parseTCP(s.Payload)
				synAck = seg
				return ok && seg.srcPort == dst.Port() && seg.dstPort == src.Port() && seg.flags&tuntest.TCPSyn != 0
			})
			if synAck.flags&tuntest.TCPAck == 0 || synAck.mss != tc.want {
				t.Errorf("SYN-ACK reached the client with flags %#x and MSS %d, want a SYN-ACK with MSS %d", synAck.flags, synAck.mss, tc.want)
			}
			if !tcpChecksumOK(got.Src, got.Dst, got.Payload) {
				t.Error("SYN-ACK reached the client with a bad TCP checksum")
			}
		})
	}
}

// listenTCPWithMSS listens on the internet host, with TCP_MAXSEG set when
// mss is not 0 so that its SYN-ACKs offer that MSS.
func listenTCPWithMSS(t *testing.T, ns *netnstest.NS, mss int) net.Listener {
	t.Helper()
	lc := net.ListenConfig{Control: func(_, _ string, rc syscall.RawConn) error {
		if mss == 0 {
			return nil
		}
		var err error
		if cerr := rc.Control(func(fd uintptr) { err = unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_MAXSEG, mss) }); cerr != nil {
			return cerr
		}
		return err
	}}
	var ln net.Listener
	if err := ns.Do(func() (err error) {
		ln, err = lc.Listen(t.Context(), "tcp4", netip.AddrPortFrom(inetV4, 0).String())
		return err
	}); err != nil {
		t.Fatalf("listening in %s: %v", ns.Name, err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	return ln
}

// listenRawTCP is a raw socket that sees a copy of every TCP segment the
// internet host receives, before its TCP stack does.
func listenRawTCP(t *testing.T, ns *netnstest.NS) *net.IPConn {
	t.Helper()
	var raw *net.IPConn
	if err := ns.Do(func() (err error) {
		raw, err = net.ListenIP("ip4:tcp", &net.IPAddr{IP: inetV4.AsSlice()})
		return err
	}); err != nil {
		t.Fatalf("raw socket in %s: %v", ns.Name, err)
	}
	t.Cleanup(func() { _ = raw.Close() })
	return raw
}

// awaitRawSYN reads packets until a SYN (without ACK) for port arrives,
// and checks its TCP checksum.
func awaitRawSYN(t *testing.T, raw *net.IPConn, port uint16) tcpSegment {
	t.Helper()
	_ = raw.SetReadDeadline(time.Now().Add(e2eWait))
	buf := make([]byte, 2048)
	for {
		n, err := raw.Read(buf) // the whole packet: only ReadFrom strips the IPv4 header
		if err != nil {
			t.Fatalf("internet host waiting for the SYN to port %d: %v", port, err)
		}
		p, err := tuntest.Parse(buf[:n])
		if err != nil {
			continue
		}
		seg, ok := parseTCP(p.Payload)
		if !ok || seg.dstPort != port || seg.flags&(tuntest.TCPSyn|tuntest.TCPAck) != tuntest.TCPSyn {
			continue
		}
		if !tcpChecksumOK(p.Src, p.Dst, p.Payload) {
			t.Errorf("SYN reached the internet host with a bad TCP checksum")
		}
		return seg
	}
}

// TestAdminPortClosedToTUN runs the admin endpoint on every address
// (-admin 0.0.0.0:9604, which Go makes dual-stack): a tunnel client's SYN
// to it, at the server's TUN address or at its uplink address, is answered
// with a reset and never a SYN-ACK, while its ping to the TUN address is
// answered and the endpoint still serves the internet side, which the
// filter does not cover.
func TestAdminPortClosedToTUN(t *testing.T) {
	tp := newTopology(t)
	tp.startServer(t, "-admin", "0.0.0.0:9604", "-admin-token-file", writeTokenFile(t, testToken, 0o600))
	c := tp.dial(t)
	c.handshake()
	c.send(wire.TypeDataRequest, tuntest.Ping(c.addr, tunAddr, 0x4747, 1, []byte("admin filter")))
	c.await("echo reply from "+tunAddr.String(), func(s tuntest.Summary) bool {
		return s.Proto == 1 && s.ICMPType == 0 && s.Src == tunAddr && s.Seq == 1
	})
	for i, dst := range []netip.Addr{tunAddr, srvV4} {
		if flags := c.synTo(t, netip.AddrPortFrom(dst, 9604), uint16(43000+i)); flags&tcpFlagRST == 0 || flags&tuntest.TCPSyn != 0 {
			t.Errorf("SYN from the tunnel to %v:9604 answered with flags %#x, want a reset (no SYN-ACK)", dst, flags)
		}
	}
	if r := tp.inet.HTTP(t, "GET", netip.AddrPortFrom(srvV4, 9604).String(), "/healthz", e2eWait); !strings.Contains(r, "200 OK") {
		t.Errorf("admin endpoint from the internet side: %q, want 200 (the filter covers the TUN only)", r)
	}
}

// TestDefaultAdminUnreachableFromClients checks the default loopback
// -admin: the client network cannot connect to it over IPv6, and a tunnel
// client's SYN to the TUN address's admin port is reset.
func TestDefaultAdminUnreachableFromClients(t *testing.T) {
	tp := newTopology(t)
	tp.startServer(t)
	err := tp.cli.Do(func() error {
		conn, err := net.DialTimeout("tcp6", netip.AddrPortFrom(srvV6, 9604).String(), e2eWait)
		if err == nil {
			conn.Close()
		}
		return err
	})
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("connecting from the client network to [%v]:9604: %v, want connection refused", srvV6, err)
	}
	c := tp.dial(t)
	c.handshake()
	if flags := c.synTo(t, netip.AddrPortFrom(tunAddr, 9604), 43100); flags&tcpFlagRST == 0 || flags&tuntest.TCPSyn != 0 {
		t.Errorf("SYN from the tunnel to %v:9604 answered with flags %#x, want a reset", tunAddr, flags)
	}
	if h := tp.adminGet(t, "/healthz"); !strings.Contains(h, "200 OK") {
		t.Errorf("admin endpoint on the server's loopback: %q", h)
	}
}

// synTo sends a SYN from the client's address and port src to dst through
// the tunnel and returns the flags of the answer.
func (c *rawClient) synTo(t *testing.T, dst netip.AddrPort, srcPort uint16) uint8 {
	t.Helper()
	c.send(wire.TypeDataRequest, tuntest.TCPSegment{
		Src: netip.AddrPortFrom(c.addr, srcPort), Dst: dst, Seq: 7000, Flags: tuntest.TCPSyn, Window: 65535, Options: mssOption(1360),
	}.Build())
	var answer tcpSegment
	c.await(fmt.Sprintf("an answer to the SYN to %v", dst), func(s tuntest.Summary) bool {
		if s.Proto != unix.IPPROTO_TCP || s.Src != dst.Addr() {
			return false
		}
		seg, ok := parseTCP(s.Payload)
		answer = seg
		return ok && seg.srcPort == dst.Port() && seg.dstPort == srcPort
	})
	return answer.flags
}

// tcpSegment is what the tests read from a TCP segment.
type tcpSegment struct {
	srcPort, dstPort uint16
	flags            uint8
	mss              uint16 // 0 without the option
}

// mssOption is the MSS option padded to four bytes.
func mssOption(mss uint16) []byte {
	return bin.BigEndian.AppendUint16([]byte{2, 4}, mss)
}

// parseTCP reads ports, flags and the MSS option of a segment (no IP
// header); ok is false for a runt or a bad data offset.
func parseTCP(seg []byte) (tcpSegment, bool) {
	if len(seg) < 20 {
		return tcpSegment{}, false
	}
	hlen := int(seg[12]>>4) * 4
	if hlen < 20 || hlen > len(seg) {
		return tcpSegment{}, false
	}
	s := tcpSegment{srcPort: bin.BigEndian.Uint16(seg[0:]), dstPort: bin.BigEndian.Uint16(seg[2:]), flags: seg[13]}
	for opts := seg[20:hlen]; len(opts) > 0; {
		switch {
		case opts[0] == 0: // end of options
			opts = nil
		case opts[0] == 1: // no-op
			opts = opts[1:]
		case len(opts) < 2 || int(opts[1]) < 2 || int(opts[1]) > len(opts):
			return tcpSegment{}, false
		default:
			if opts[0] == 2 && opts[1] == 4 {
				s.mss = bin.BigEndian.Uint16(opts[2:])
			}
			opts = opts[opts[1]:]
		}
	}
	return s, true
}

// tcpChecksumOK verifies a segment's checksum over the IPv4 pseudo-header.
func tcpChecksumOK(src, dst netip.Addr, seg []byte) bool {
	pseudo := append(append(src.AsSlice(), dst.AsSlice()...), 0, unix.IPPROTO_TCP)
	pseudo = bin.BigEndian.AppendUint16(pseudo, uint16(len(seg)))
	return checksum.Fold(checksum.Sum(seg, checksum.Sum(pseudo, 0))) == 0xffff
}
