//go:build linux

package tun

import (
	"bytes"
	"errors"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/4over6d/4over6d/tun/netnstest"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Addresses from the documentation ranges the whole project tests with.
var (
	testPool   = netip.MustParsePrefix("192.0.2.0/24")
	serverAddr = netip.MustParseAddr("192.0.2.1")
	clientAddr = netip.MustParseAddr("192.0.2.7")
)

const (
	testTUN     = "tun4o6"
	testMTU     = 1400
	waitTimeout = 5 * time.Second
)

func TestServerAddr(t *testing.T) {
	tests := []struct {
		prefix string
		want   string
	}{
		{"192.0.2.0/24", "192.0.2.1"},
		{"192.0.2.77/24", "192.0.2.1"},
		{"198.51.100.128/25", "198.51.100.129"},
		{"2001:db8::/64", "2001:db8::1"},
	}
	for _, tt := range tests {
		if got := ServerAddr(netip.MustParsePrefix(tt.prefix)); got != netip.MustParseAddr(tt.want) {
			t.Errorf("ServerAddr(%s) = %v, want %s", tt.prefix, got, tt.want)
		}
	}
	if got := ServerAddr(netip.Prefix{}); got.IsValid() {
		t.Errorf("ServerAddr(invalid) = %v, want the zero Addr", got)
	}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		want string
	}{
		{"valid", Config{Name: testTUN, MTU: testMTU, Prefix: testPool}, ""},
		{"smallest pool", Config{Name: testTUN, MTU: testMTU, Prefix: netip.MustParsePrefix("192.0.2.0/30")}, ""},
		{"empty name", Config{MTU: testMTU, Prefix: testPool}, "name"},
		{"long name", Config{Name: "a-name-too-long-x", MTU: testMTU, Prefix: testPool}, "name"},
		{"small MTU", Config{Name: testTUN, MTU: 67, Prefix: testPool}, "MTU 67"},
		{"large MTU", Config{Name: testTUN, MTU: MaxPacket + 1, Prefix: testPool}, "MTU 65536"},
		{"no prefix", Config{Name: testTUN, MTU: testMTU}, "not an IPv4 prefix"},
		{"IPv6 prefix", Config{Name: testTUN, MTU: testMTU, Prefix: netip.MustParsePrefix("2001:db8::/64")}, "not an IPv4 prefix"},
		{"64 queues", Config{Name: testTUN, MTU: testMTU, Prefix: testPool, Queues: 64}, ""},
		{"65 queues", Config{Name: testTUN, MTU: testMTU, Prefix: testPool, Queues: 65}, "65 queues"},
		{"negative queues", Config{Name: testTUN, MTU: testMTU, Prefix: testPool, Queues: -1}, "-1 queues"},
		{"no room for clients", Config{Name: testTUN, MTU: testMTU, Prefix: netip.MustParsePrefix("192.0.2.0/31")}, "longer than /30"},
	}
	for _, tt := range tests {
		err := tt.cfg.validate()
		if tt.want == "" && err != nil || tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)) {
			t.Errorf("%s: validate = %v, want an error mentioning %q (none if empty)", tt.name, err, tt.want)
		}
	}
}

func TestOpenConfiguresLink(t *testing.T) {
	ns := netnstest.New(t, "tun-open")
	dev := openInNS(t, ns, testTUN, false)
	if dev.Name() != testTUN || dev.MTU() != testMTU {
		t.Errorf("Name, MTU = %s, %d; want %s, %d", dev.Name(), dev.MTU(), testTUN, testMTU)
	}
	link, err := ns.Netlink().LinkByName(testTUN)
	if err != nil {
		t.Fatalf("TUN not found in namespace: %v", err)
	}
	if _, ok := link.(*netlink.Tuntap); !ok {
		t.Errorf("link type = %s, want tuntap", link.Type())
	}
	if link.Attrs().MTU != testMTU {
		t.Errorf("link MTU = %d, want %d", link.Attrs().MTU, testMTU)
	}
	if link.Attrs().Flags&net.FlagUp == 0 {
		t.Errorf("link flags %v lack up", link.Attrs().Flags)
	}
	if got, want := addrs(t, ns, link, netlink.FAMILY_V4), []string{"192.0.2.1/24"}; !slices.Equal(got, want) {
		t.Errorf("IPv4 addresses = %v, want %v", got, want)
	}
	if got := addrs(t, ns, link, netlink.FAMILY_V6); len(got) != 0 {
		t.Errorf("IPv6 addresses = %v, want none (IPv6 disabled)", got)
	}
}

func TestOpenSetsCloseOnExec(t *testing.T) {
	ns := netnstest.New(t, "tun-cloexec")
	dev := openInNS(t, ns, testTUN, false)
	var flags int
	var fcntlErr error
	err := dev.raw.Control(func(fd uintptr) { flags, fcntlErr = unix.FcntlInt(fd, unix.F_GETFD, 0) })
	if err != nil || fcntlErr != nil {
		t.Fatalf("F_GETFD: %v, %v", err, fcntlErr)
	}
	if flags&unix.FD_CLOEXEC == 0 {
		t.Error("TUN file descriptor lacks FD_CLOEXEC, so child processes would keep the interface alive")
	}
}

func TestReadReturnsPacketFromKernel(t *testing.T) {
	bothModes(t, func(t *testing.T, offload bool) {
		ns := netnstest.New(t, "tun-read")
		dev := openInNS(t, ns, testTUN, offload)
		dst := netip.AddrPortFrom(clientAddr, 9)
		sendUDP(t, ns, dst, []byte("hello"))
		p := readMatching(t, dev, func(p ipv4Packet) bool { return p.proto == protoUDP })
		if p.src != serverAddr || p.dst != clientAddr {
			t.Errorf("packet %v -> %v, want %v -> %v", p.src, p.dst, serverAddr, clientAddr)
		}
		if _, port := udpPorts(p.payload); port != dst.Port() || !bytes.Equal(p.payload[udpHeaderLen:], []byte("hello")) {
			t.Errorf("UDP to port %d with %q, want port %d with %q", port, p.payload[udpHeaderLen:], dst.Port(), "hello")
		}
		if !udpChecksumValid(p) {
			t.Errorf("UDP checksum %x does not verify", p.payload[6:8])
		}
	})
}

func TestWriteDeliversToKernel(t *testing.T) {
	bothModes(t, func(t *testing.T, offload bool) {
		t.Run("UDP to a listening socket", func(t *testing.T) {
			ns := netnstest.New(t, "tun-write")
			dev := openInNS(t, ns, testTUN, offload)
			conn := listenUDP(t, ns, netip.AddrPortFrom(serverAddr, 0))
			src := netip.AddrPortFrom(clientAddr, 4000)
			dst := conn.LocalAddr().(*net.UDPAddr).AddrPort()
			writeAll(t, dev, buildUDP(src, dst, []byte("from the tunnel")))
			from, payload := receiveUDP(t, conn)
			if from != src || payload != "from the tunnel" {
				t.Errorf("received %q from %v, want %q from %v", payload, from, "from the tunnel", src)
			}
		})
		t.Run("ICMP echo answered", func(t *testing.T) {
			ns := netnstest.New(t, "tun-ping")
			dev := openInNS(t, ns, testTUN, offload)
			writeAll(t, dev, buildEchoRequest(clientAddr, serverAddr, 0x4f36, 1, []byte("ping")))
			p := readMatching(t, dev, func(p ipv4Packet) bool { return p.proto == protoICMP })
			if p.src != serverAddr || p.dst != clientAddr || p.payload[0] != icmpEchoReply {
				t.Errorf("ICMP type %d %v -> %v, want echo reply %v -> %v", p.payload[0], p.src, p.dst, serverAddr, clientAddr)
			}
			if !bytes.Equal(p.payload[icmpHeaderLen:], []byte("ping")) {
				t.Errorf("echo reply data %q, want %q", p.payload[icmpHeaderLen:], "ping")
			}
		})
	})
}

func TestReadBatchesQueuedPackets(t *testing.T) {
	bothModes(t, func(t *testing.T, offload bool) {
		const queued = 10
		ns := netnstest.New(t, "tun-batch")
		dev := openInNS(t, ns, testTUN, offload)
		payloads := make([][]byte, queued)
		for i := range payloads {
			payloads[i] = []byte{byte(i)}
		}
		sendUDP(t, ns, netip.AddrPortFrom(clientAddr, 9), payloads...)
		bufs, sizes := newBufs(32)
		dev.SetReadDeadline(time.Now().Add(waitTimeout))
		n, err := dev.Read(bufs, sizes)
		if err != nil {
			t.Fatalf("Read: %v", err)
		}
		if n != queued {
			t.Fatalf("Read returned %d packets, want all %d queued ones", n, queued)
		}
		for i := range n {
			p, ok := parseIPv4(bufs[i][:sizes[i]])
			if !ok || p.dst != clientAddr || p.payload[udpHeaderLen] != byte(i) {
				t.Errorf("packet %d = %x, want UDP to %v carrying %d", i, bufs[i][:sizes[i]], clientAddr, i)
			}
		}
	})
}

func TestSetReadDeadlineUnblocksRead(t *testing.T) {
	bothModes(t, func(t *testing.T, offload bool) {
		verifyNoLeaks(t)
		ns := netnstest.New(t, "tun-deadline")
		dev := openInNS(t, ns, testTUN, offload)
		pending := readAsync(dev)
		awaitReadParked(t)
		if err := dev.SetReadDeadline(time.Now()); err != nil {
			t.Fatalf("SetReadDeadline: %v", err)
		}
		if r := await(t, pending); !errors.Is(r.err, os.ErrDeadlineExceeded) {
			t.Fatalf("pending Read = %d, %v; want os.ErrDeadlineExceeded", r.n, r.err)
		}
		if err := dev.SetReadDeadline(time.Time{}); err != nil {
			t.Fatalf("clearing deadline: %v", err)
		}
		pending = readAsync(dev)
		sendUDP(t, ns, netip.AddrPortFrom(clientAddr, 9), []byte("after"))
		if r := await(t, pending); r.err != nil || r.n != 1 {
			t.Fatalf("Read after clearing deadline = %d, %v; want 1 packet", r.n, r.err)
		}
	})
}

func TestCloseUnblocksReadAndDeletesLink(t *testing.T) {
	bothModes(t, func(t *testing.T, offload bool) {
		verifyNoLeaks(t)
		ns := netnstest.New(t, "tun-close")
		dev := openInNS(t, ns, testTUN, offload)
		pending := readAsync(dev)
		awaitReadParked(t)
		if err := dev.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
		if r := await(t, pending); !errors.Is(r.err, ErrClosed) {
			t.Fatalf("pending Read = %d, %v; want ErrClosed", r.n, r.err)
		}
		if _, err := ns.Netlink().LinkByName(testTUN); !errors.As(err, new(netlink.LinkNotFoundError)) {
			t.Errorf("link lookup after Close = %v, want not found", err)
		}
		if err := dev.Close(); err != nil {
			t.Errorf("second Close = %v, want nil", err)
		}
		bufs, sizes := newBufs(1)
		if _, err := dev.Read(bufs, sizes); !errors.Is(err, ErrClosed) {
			t.Errorf("Read after Close = %v, want ErrClosed", err)
		}
		if _, err := dev.Write(bufs); !errors.Is(err, ErrClosed) {
			t.Errorf("Write after Close = %v, want ErrClosed", err)
		}
		if err := dev.SetReadDeadline(time.Now()); !errors.Is(err, ErrClosed) {
			t.Errorf("SetReadDeadline after Close = %v, want ErrClosed", err)
		}
	})
}

func TestOpenReplacesStaleLink(t *testing.T) {
	ns := netnstest.New(t, "tun-stale")
	stale := &netlink.Tuntap{LinkAttrs: netlink.LinkAttrs{Name: testTUN}, Mode: netlink.TUNTAP_MODE_TUN}
	err := ns.Do(func() error {
		if err := netlink.LinkAdd(stale); err != nil {
			return err
		}
		for _, f := range stale.Fds {
			f.Close()
		}
		return netlink.AddrAdd(stale, &netlink.Addr{IPNet: ipNet(netip.MustParsePrefix("203.0.113.1/24"))})
	})
	if err != nil {
		t.Fatalf("failed to create a persistent TUN as a stale link: %v", err)
	}
	dev := openInNS(t, ns, testTUN, false)
	link, err := ns.Netlink().LinkByName(testTUN)
	if err != nil {
		t.Fatalf("TUN not found: %v", err)
	}
	if link.Attrs().Index == stale.Index {
		t.Errorf("Open reused the stale link (index %d)", stale.Index)
	}
	if got, want := addrs(t, ns, link, netlink.FAMILY_V4), []string{"192.0.2.1/24"}; !slices.Equal(got, want) {
		t.Errorf("IPv4 addresses = %v, want %v", got, want)
	}
	writeAll(t, dev, buildEchoRequest(clientAddr, serverAddr, 1, 1, nil))
	readMatching(t, dev, func(p ipv4Packet) bool { return p.proto == protoICMP })
}

func TestOpenRefusesLinkItDoesNotOwn(t *testing.T) {
	tests := []struct {
		name  string
		setup func(t *testing.T, ns *netnstest.NS)
		want  string
	}{
		{
			name:  "TUN held by a live process",
			setup: func(t *testing.T, ns *netnstest.NS) { openInNS(t, ns, testTUN, false) },
			want:  "in use by another process",
		},
		{
			name: "link of another type",
			setup: func(t *testing.T, ns *netnstest.NS) {
				veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: testTUN}, PeerName: "peer4o6"}
				if err := ns.Netlink().LinkAdd(veth); err != nil {
					t.Fatalf("failed to add veth link: %v", err)
				}
			},
			want: "type veth",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ns := netnstest.New(t, "tun-refuse")
			tt.setup(t, ns)
			err := ns.Do(func() error {
				dev, err := Open(Config{Name: testTUN, MTU: testMTU, Prefix: testPool})
				if err == nil {
					dev.Close()
				}
				return err
			})
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Open = %v, want an error mentioning %q", err, tt.want)
			}
			if _, err := ns.Netlink().LinkByName(testTUN); err != nil {
				t.Errorf("existing link was removed: %v", err)
			}
		})
	}
}
