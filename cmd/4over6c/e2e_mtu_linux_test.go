package main

// A client whose TUN MTU (1500) is larger than the server's (-mtu 1400),
// with the real binaries and kernels on both ends: the server must act as
// the router between the two MTUs, so that path MTU discovery works and
// TCP does not stall after its handshake.

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/4over6d/4over6d/tun/checksum"
	"github.com/4over6d/4over6d/tun/netnstest"
)

const (
	mtuServer = 1400
	mtuClient = 1500
)

// Extra addresses of the internet host, one per check: the client's kernel
// caches a path MTU per destination, and each check must start without
// one.
var (
	dfProbeV4   = netip.MustParseAddr("198.51.100.3")
	fragProbeV4 = netip.MustParseAddr("198.51.100.4")
)

// TestE2EServerMTUBelowClientMTU checks, with -mtu 1400 on the server and
// 1500 on the client: (a) a 1500-byte DF packet is answered with ICMP
// fragmentation-needed carrying 1400, as ping and a raw socket in the
// client's namespace see it, and counted by the server; (c) a 1500-byte
// packet without DF is fragmented by the server and answered by the
// internet host; (b) TCP carries 20 MiB each way, checksummed, which
// without (a) stalls: the client's segments are 1500 bytes. No MSS
// clamping is assumed either way: with a clamp, TCP simply never needs (a).
func TestE2EServerMTUBelowClientMTU(t *testing.T) {
	tp := newTopology(t, 1)
	for _, a := range []netip.Addr{dfProbeV4, fragProbeV4} {
		tp.inet.Run(t, "ip", "addr", "add", netip.PrefixFrom(a, 32).String(), "dev", "lo")
	}
	tp.runServer(t, "-mtu", fmt.Sprint(mtuServer))
	c := tp.runClient(t, 0, "-mtu", fmt.Sprint(mtuClient))
	addr := connectedAddr(t, c, tp.clients[0])
	if err := ping(t, tp.clients[0], 1); err != nil {
		t.Fatal(err)
	}

	t.Run("DF packet above the server MTU gets fragmentation-needed", func(t *testing.T) {
		icmp := listenICMP(t, tp.clients[0])
		out, _ := tp.clients[0].Command(t.Context(), "ping", "-n", "-c", "1", "-W", "5", "-M", "do", "-s", fmt.Sprint(mtuClient-28),
			dfProbeV4.String()).CombinedOutput()
		if !regexp.MustCompile(fmt.Sprintf(`mtu ?= ?%d\b`, mtuServer)).Match(out) {
			t.Errorf("ping -M do output does not report mtu %d:\n%s", mtuServer, out)
		}
		icmp.expectFragNeeded(t, addr, dfProbeV4)
		m := admin(t, tp.srv, "GET", "/metrics")
		if v := metric(t, m, `fourover6d_icmp_sent_total{type="frag_needed"}`); v < 1 {
			t.Errorf("icmp_sent_total{frag_needed} = %v, want at least 1", v)
		}
		if v := metric(t, m, `fourover6d_drops_total{reason="too_big"}`); v < 1 {
			t.Errorf("drops_total{too_big} = %v, want at least 1", v)
		}
	})

	t.Run("packet above the server MTU without DF is fragmented", func(t *testing.T) {
		out, err := tp.clients[0].Command(t.Context(), "ping", "-n", "-c", "3", "-i", "0.2", "-W", "5", "-M", "dont", "-s", fmt.Sprint(mtuClient-28),
			fragProbeV4.String()).CombinedOutput()
		if err != nil {
			t.Fatalf("1500-byte ping without DF: %v\n%s", err, out)
		}
		m := admin(t, tp.srv, "GET", "/metrics")
		if v := metric(t, m, "fourover6d_fragmented_packets_total"); v < 3 {
			t.Errorf("fragmented_packets_total = %v, want at least 3", v)
		}
		if v := metric(t, m, "fourover6d_fragments_created_total"); v < 6 {
			t.Errorf("fragments_created_total = %v, want at least 6", v)
		}
	})

	t.Run("TCP moves 20 MiB each way", func(t *testing.T) {
		to := transferServer(t, tp)
		start := time.Now()
		var wg sync.WaitGroup
		errs := make(chan error, 2)
		for _, cmd := range []byte{cmdUpload, cmdDownload} {
			wg.Go(func() { errs <- transfer(tp.clients[0], to, cmd, uint64(cmd)) })
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Error(err)
			}
		}
		m := admin(t, tp.srv, "GET", "/metrics")
		t.Logf("%d MiB up and down in %v; the server sent %v fragmentation-needed in all (%v rate-limited)",
			transferSize>>20, time.Since(start).Round(time.Millisecond),
			metric(t, m, `fourover6d_icmp_sent_total{type="frag_needed"}`), metric(t, m, `fourover6d_icmp_rate_limited_total{type="frag_needed"}`))
	})
}

// metric reads one sample from a Prometheus text scrape.
func metric(t *testing.T, scrape, series string) float64 {
	t.Helper()
	for line := range strings.Lines(scrape) {
		if rest, ok := strings.CutPrefix(line, series+" "); ok {
			var v float64
			if _, err := fmt.Sscan(rest, &v); err == nil {
				return v
			}
		}
	}
	t.Fatalf("/metrics lacks %s", series)
	return 0
}

// icmpListener is a raw ICMP socket in a namespace, which sees every ICMP
// message the namespace's kernel receives, errors included.
type icmpListener struct {
	conn net.PacketConn
}

func listenICMP(t *testing.T, ns *netnstest.NS) *icmpListener {
	t.Helper()
	var conn net.PacketConn
	if err := ns.Do(func() (err error) {
		conn, err = net.ListenPacket("ip4:icmp", "0.0.0.0")
		return err
	}); err != nil {
		t.Fatalf("raw ICMP socket in %s: %v", ns.Name, err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return &icmpListener{conn: conn}
}

// expectFragNeeded waits for the fragmentation-needed about a packet from
// client to dst and checks it: sent by the server's TUN address, type 3
// code 4, next-hop MTU 1400, a valid checksum, and quoting the 1500-byte
// DF packet's header and the start of its payload.
func (l *icmpListener) expectFragNeeded(t *testing.T, client, dst netip.Addr) {
	t.Helper()
	server := netip.MustParseAddr("192.0.2.1")
	deadline := time.Now().Add(e2eStart)
	buf := make([]byte, 1500)
	for {
		_ = l.conn.SetReadDeadline(deadline)
		n, from, err := l.conn.ReadFrom(buf)
		if err != nil {
			t.Fatalf("no fragmentation-needed about a packet to %v within %v: %v", dst, e2eStart, err)
		}
		msg := buf[:n] // the ICMP message: Go strips the IPv4 header
		if n < 8+20+8 || msg[0] != 3 {
			continue
		}
		quoted := msg[8:]
		if netip.AddrFrom4([4]byte(quoted[16:20])) != dst {
			continue
		}
		src, _ := netip.AddrFromSlice(from.(*net.IPAddr).IP)
		if src.Unmap() != server || msg[1] != 4 {
			t.Fatalf("ICMP type 3 code %d from %v, want code 4 from %v", msg[1], src, server)
		}
		if checksum.Fold(checksum.Sum(msg, 0)) != 0xffff {
			t.Error("ICMP checksum does not verify")
		}
		if mtu := binary.BigEndian.Uint16(msg[6:8]); mtu != mtuServer {
			t.Errorf("next-hop MTU %d, want %d", mtu, mtuServer)
		}
		if total, flags := binary.BigEndian.Uint16(quoted[2:4]), binary.BigEndian.Uint16(quoted[6:8]); total != mtuClient || flags&0x4000 == 0 {
			t.Errorf("quoted packet of %d bytes, flags %#x; want the %d-byte DF packet", total, flags, mtuClient)
		}
		if netip.AddrFrom4([4]byte(quoted[12:16])) != client || quoted[9] != 1 || quoted[20] != 8 {
			t.Errorf("quote %x is not the client's echo request", quoted)
		}
		if len(quoted) != 28 {
			t.Errorf("quote of %d bytes, want the 20-byte header and 8 bytes", len(quoted))
		}
		return
	}
}
