package actors

import (
	"bytes"
	"encoding/binary"
	"math"
	"net/netip"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/4over6d/4over6d/messages/wire"
	"github.com/4over6d/4over6d/tun/checksum"
	"github.com/4over6d/4over6d/tun/tuntest"
)

// The server's TUN MTU in these tests, below the 1500 of a client's TUN,
// as in the case that motivated answering oversize packets.
const testMTU = 1400

func withMTU(mtu int) func(*Config) {
	return func(c *Config) { c.Device = tuntest.New("fake0", mtu) }
}

// setFlags sets the IPv4 flags and fragment offset field of pkt and fixes
// its header checksum.
func setFlags(pkt []byte, flags uint16) []byte {
	binary.BigEndian.PutUint16(pkt[6:], flags)
	pkt[10], pkt[11] = 0, 0
	binary.BigEndian.PutUint16(pkt[10:], checksum.Checksum(pkt[:20], 0))
	return pkt
}

const (
	flagDF = 0x4000
	flagMF = 0x2000
)

// bigUDP is a UDP datagram of size bytes in all from own, port port.
func bigUDP(own netip.Addr, port uint16, size int, flags uint16) []byte {
	payload := make([]byte, size-28)
	for i := range payload {
		payload[i] = byte(i) ^ byte(port)
	}
	return setFlags(tuntest.UDP(netip.AddrPortFrom(own, port), netip.AddrPortFrom(inetHost, 9), payload), flags)
}

// icmpError turns an echo request into an ICMP error of type typ.
func icmpError(pkt []byte, typ byte) []byte {
	pkt[20], pkt[21], pkt[22], pkt[23] = typ, 1, 0, 0
	binary.BigEndian.PutUint16(pkt[22:], checksum.Checksum(pkt[20:], 0))
	return pkt
}

// checkFragNeeded checks that got (a 103 payload) is the server's
// fragmentation-needed about about, with the MTU and valid checksums.
func checkFragNeeded(t *testing.T, got []byte, client netip.Addr, about []byte, mtu int) {
	t.Helper()
	s, err := tuntest.Parse(got)
	if err != nil {
		t.Fatalf("103 is not a valid IPv4 packet: %v", err)
	}
	if s.Src != serverAddr || s.Dst != client || s.Proto != 1 || s.ICMPType != 3 || got[21] != 4 {
		t.Fatalf("103 is %+v code %d; want ICMP 3/4 from %v to %v", s, got[21], serverAddr, client)
	}
	if next := binary.BigEndian.Uint16(got[26:]); int(next) != mtu {
		t.Errorf("next-hop MTU %d, want %d", next, mtu)
	}
	if want := about[:28]; !bytes.Equal(s.Payload, want) {
		t.Errorf("quote %x, want the packet's header and 8 bytes %x", s.Payload, want)
	}
}

// TestOversizeDFPacketIsAnswered checks that a DF packet above the MTU is
// dropped, counted and answered with fragmentation-needed when RFC 1812
// allows an answer. A second oversize packet follows each case: the first
// ICMP the client gets must be about the case's packet if it is answered,
// else about the second one.
func TestOversizeDFPacketIsAnswered(t *testing.T) {
	tests := []struct {
		name     string
		packet   func(own netip.Addr) []byte
		answered bool
	}{
		{"UDP", func(own netip.Addr) []byte { return bigUDP(own, 1, 1500, flagDF) }, true},
		{"TCP segment", func(own netip.Addr) []byte {
			return tuntest.TCPSegment{Src: netip.AddrPortFrom(own, 40000), Dst: netip.AddrPortFrom(inetHost, 80), Seq: 7, Flags: tuntest.TCPAck,
				Payload: make([]byte, 1460)}.Build()
		}, true},
		{"first fragment", func(own netip.Addr) []byte { return bigUDP(own, 1, 1500, flagDF|flagMF) }, true},
		{"echo request", func(own netip.Addr) []byte {
			return setFlags(tuntest.Ping(own, inetHost, 7, 1, make([]byte, 1472)), flagDF)
		}, true},
		{"ICMP error", func(own netip.Addr) []byte {
			return icmpError(setFlags(tuntest.Ping(own, inetHost, 7, 1, make([]byte, 1472)), flagDF), 3)
		}, false},
		{"later fragment", func(own netip.Addr) []byte { return bigUDP(own, 1, 1500, flagDF|flagMF|185) }, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, withMTU(testMTU))
			c := h.connect()
			pkt, next := tc.packet(c.addr), bigUDP(c.addr, 2, 1401, flagDF)
			c.send(wire.TypeDataRequest, pkt)
			c.send(wire.TypeDataRequest, next)
			want, sent := next, uint64(1)
			if tc.answered {
				want, sent = pkt, 2
			}
			checkFragNeeded(t, c.nextData(wait), c.addr, want, testMTU)
			m := h.srv.Metrics()
			eventually(t, wait, "both too_big drops and the ICMP counts", func() bool {
				return m.Drops(DropTooBig) == 2 && m.ICMPSentOf(ICMPFragNeeded) == sent
			})
			// Nothing of either reached the TUN: the next packet there is
			// the one sent after them.
			good := ping(c.addr, inetHost, 3)
			c.send(wire.TypeDataRequest, good)
			if got := h.written(wait); !bytes.Equal(got, good) {
				t.Fatalf("TUN got %d bytes, want the ping sent after the oversize packets", len(got))
			}
			if n := m.ICMPRateLimitedOf(ICMPFragNeeded); n != 0 {
				t.Errorf("%d ICMP errors rate-limited, want 0", n)
			}
		})
	}
}

// TestPacketAtTheMTUIsForwarded: the MTU itself fits.
func TestPacketAtTheMTUIsForwarded(t *testing.T) {
	h := newHarness(t, withMTU(testMTU))
	c := h.connect()
	pkt := bigUDP(c.addr, 1, testMTU, flagDF)
	c.send(wire.TypeDataRequest, pkt)
	if got := h.written(wait); !bytes.Equal(got, pkt) {
		t.Fatalf("TUN got %d bytes, want the %d-byte packet unchanged", len(got), len(pkt))
	}
}

// TestOversizePacketWithoutDFIsFragmented sends bursts (one TCP write
// each) mixing packets that fit with packets above the MTU without DF,
// and checks that the TUN gets, in order, the packets that fit unchanged
// and the others as fragments that fit and put together give the
// original.
func TestOversizePacketWithoutDFIsFragmented(t *testing.T) {
	many := func(own netip.Addr) []sentPacket {
		var out []sentPacket
		for i := range 2*wire.BatchCap + 3 {
			out = append(out, sentPacket{bigUDP(own, uint16(i), 4000, 0), 3})
		}
		return out
	}
	tests := []struct {
		name    string
		packets func(own netip.Addr) []sentPacket
	}{
		{"one UDP datagram", func(own netip.Addr) []sentPacket { return []sentPacket{{bigUDP(own, 1, 3000, 0), 3}} }},
		{"between packets that fit", func(own netip.Addr) []sentPacket {
			return []sentPacket{{ping(own, inetHost, 1), 0}, {bigUDP(own, 1, 1401, 0), 2}, {ping(own, inetHost, 2), 0}}
		}},
		{"a fragment fragmented again", func(own netip.Addr) []sentPacket { return []sentPacket{{bigUDP(own, 1, 1500, flagMF|100), 2}} }},
		{"more fragments than a batch holds", many},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, withMTU(testMTU))
			c := h.connect()
			packets := tc.packets(c.addr)
			var burst []byte
			want := 0
			for _, p := range packets {
				burst = wire.AppendFrame(burst, wire.TypeDataRequest, p.pkt)
				want += max(p.frags, 1)
			}
			c.sendRaw(burst)
			for i, p := range packets {
				if p.frags == 0 {
					if got := h.written(wait); !bytes.Equal(got, p.pkt) {
						t.Fatalf("packet %d: TUN got %d bytes, want the packet unchanged", i, len(got))
					}
					continue
				}
				frags := make([][]byte, p.frags)
				for j := range frags {
					frags[j] = h.written(wait)
				}
				checkReassembly(t, p.pkt, frags)
			}
			m := h.srv.Metrics()
			if got := m.FragmentsCreated.Load(); got+uint64(countWhole(packets)) != uint64(want) {
				t.Errorf("fragments_created %d, want %d", got, want-countWhole(packets))
			}
			if got, wantN := m.Fragmented.Load(), uint64(len(packets)-countWhole(packets)); got != wantN {
				t.Errorf("fragmented_packets %d, want %d", got, wantN)
			}
			if got := m.PacketsIn.Load(); got != uint64(want) {
				t.Errorf("packets in %d, want %d (every fragment)", got, want)
			}
			if n := m.Drops(DropTooBig); n != 0 {
				t.Errorf("%d too_big drops, want none", n)
			}
			if _, err := c.tryNext(0); err == nil {
				t.Error("the client got a frame; fragmenting is not answered")
			}
		})
	}
}

// sentPacket is a packet a test sends and what the TUN should get for it.
type sentPacket struct {
	pkt   []byte
	frags int // 0: the packet as it is
}

func countWhole(packets []sentPacket) int {
	n := 0
	for _, p := range packets {
		if p.frags == 0 {
			n++
		}
	}
	return n
}

// checkReassembly checks that frags fit the MTU, carry pkt's addresses,
// protocol and ID, are in order and put together give pkt's data.
func checkReassembly(t *testing.T, pkt []byte, frags [][]byte) {
	t.Helper()
	start := int(binary.BigEndian.Uint16(pkt[6:])&0x1fff) * 8
	var data []byte
	for i, f := range frags {
		if len(f) > testMTU {
			t.Fatalf("fragment %d has %d bytes, above the MTU", i, len(f))
		}
		if _, err := tuntest.Parse(f); err != nil {
			t.Fatalf("fragment %d: %v", i, err)
		}
		if !bytes.Equal(f[4:6], pkt[4:6]) || !bytes.Equal(f[9:10], pkt[9:10]) || !bytes.Equal(f[12:20], pkt[12:20]) {
			t.Fatalf("fragment %d does not belong to the packet: %x, want %x", i, f[:20], pkt[:20])
		}
		fields := binary.BigEndian.Uint16(f[6:])
		if off := int(fields&0x1fff) * 8; off != start+len(data) {
			t.Fatalf("fragment %d at offset %d, want %d", i, off, start+len(data))
		}
		wantMF := i < len(frags)-1 || binary.BigEndian.Uint16(pkt[6:])&flagMF != 0
		if fields&flagMF != 0 != wantMF {
			t.Fatalf("fragment %d: MF %v, want %v", i, fields&flagMF != 0, wantMF)
		}
		data = append(data, f[20:]...)
	}
	if !bytes.Equal(data, pkt[20:]) {
		t.Fatal("the fragments put together are not the packet")
	}
}

// TestBadOptionsAreNotFragmented: a packet whose options cannot be told
// apart cannot be fragmented; it is dropped as too big.
func TestBadOptionsAreNotFragmented(t *testing.T) {
	h := newHarness(t, withMTU(testMTU))
	c := h.connect()
	udp := bigUDP(c.addr, 1, 1500, 0)
	pkt := append(append([]byte{0x46}, udp[1:20]...), append([]byte{7, 9, 0, 0}, udp[20:]...)...)
	binary.BigEndian.PutUint16(pkt[2:], uint16(len(pkt)))
	setFlags(pkt, 0)
	c.send(wire.TypeDataRequest, pkt)
	m := h.srv.Metrics()
	eventually(t, wait, "the too_big drop", func() bool { return m.Drops(DropTooBig) == 1 })
	good := ping(c.addr, inetHost, 2)
	c.send(wire.TypeDataRequest, good)
	if got := h.written(wait); !bytes.Equal(got, good) {
		t.Fatalf("TUN got %d bytes, want the ping sent after the dropped packet", len(got))
	}
	if n := m.Fragmented.Load(); n != 0 {
		t.Errorf("fragmented %d packets, want 0", n)
	}
}

// TestFragNeededIsRateLimited sends many DF packets above the MTU at once:
// a burst of them is answered, the rest only counted, and every answer
// counted as sent reaches the client. How many tokens came back while the
// burst was processed depends on the machine's speed, so the bound on the
// answers allows for the time it took.
func TestFragNeededIsRateLimited(t *testing.T) {
	h := newHarness(t, withMTU(testMTU))
	c := h.connect()
	const n = 100
	var burst []byte
	for i := range n {
		burst = wire.AppendFrame(burst, wire.TypeDataRequest, bigUDP(c.addr, uint16(i), 1500, flagDF))
	}
	start := time.Now()
	c.sendRaw(burst)
	m := h.srv.Metrics()
	eventually(t, wait, "every packet to be dropped", func() bool { return m.Drops(DropTooBig) == n })
	took := time.Since(start)
	sent, limited := m.ICMPSentOf(ICMPFragNeeded), m.ICMPRateLimitedOf(ICMPFragNeeded)
	if sent+limited != n {
		t.Fatalf("%d sent and %d rate-limited, want %d in all", sent, limited, n)
	}
	refilled := uint64(math.Ceil(took.Seconds() * icmpPerSecond))
	if sent < icmpBurst || sent > icmpBurst+refilled {
		t.Errorf("%d answers in %v, want the burst of %d plus at most %d refilled", sent, took, icmpBurst, refilled)
	}
	for i := range sent {
		got := c.nextData(wait)
		checkFragNeeded(t, got, c.addr, got[28:], testMTU)
		if i == 0 && !bytes.Equal(got[28:], bigUDP(c.addr, 0, 1500, flagDF)[:28]) {
			t.Error("the first answer is not about the first packet")
		}
	}
	if _, err := c.tryNext(0); err == nil {
		t.Error("more answers than counted")
	}
}

// TestICMPBucket drives the bucket with a fake clock: a burst of
// icmpBurst, then icmpPerSecond, never more than a burst saved up.
func TestICMPBucket(t *testing.T) {
	type step struct {
		at       time.Duration // since the start
		tries    int
		allowed  int
		describe string
	}
	tests := []struct {
		name  string
		steps []step
	}{
		{"burst", []step{{0, 15, 10, "a fresh bucket allows its burst"}}},
		{"refill", []step{
			{0, 10, 10, "burst"},
			{50 * time.Millisecond, 1, 0, "half a token back"},
			{100 * time.Millisecond, 2, 1, "one token back"},
			{time.Second, 12, 9, "nine more"},
		}},
		{"no more than a burst saved", []step{
			{0, 1, 1, "first"},
			{time.Hour, 20, 10, "after an hour, still one burst"},
		}},
		{"steady rate passes", func() []step {
			var s []step
			for i := range 50 {
				s = append(s, step{time.Duration(i) * 100 * time.Millisecond, 1, 1, "one per 100 ms"})
			}
			return s
		}()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var b icmpBucket
			t0 := time.Unix(1e9, 0)
			for _, s := range tt.steps {
				got := 0
				for range s.tries {
					if b.allow(t0.Add(s.at)) {
						got++
					}
				}
				if got != s.allowed {
					t.Fatalf("at %v (%s): %d of %d allowed, want %d", s.at, s.describe, got, s.tries, s.allowed)
				}
			}
		})
	}
}

// TestCollectorExportsICMPAndFragmentCounters reads the new counters
// through Prometheus, by their exported names and labels.
func TestCollectorExportsICMPAndFragmentCounters(t *testing.T) {
	m := &Metrics{}
	m.ICMPSent(ICMPFragNeeded, 2)
	m.ICMPRateLimited(ICMPFragNeeded)
	m.Fragmented.Add(4)
	m.FragmentsCreated.Add(9)
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(NewCollector(m))
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, f := range families {
		for _, s := range f.GetMetric() {
			name := f.GetName()
			for _, l := range s.GetLabel() {
				name += "{" + l.GetName() + "=" + l.GetValue() + "}"
			}
			got[name] = s.GetCounter().GetValue()
		}
	}
	for name, want := range map[string]float64{
		"fourover6d_icmp_sent_total{type=frag_needed}":         2,
		"fourover6d_icmp_rate_limited_total{type=frag_needed}": 1,
		"fourover6d_fragmented_packets_total":                  4,
		"fourover6d_fragments_created_total":                   9,
	} {
		if v, ok := got[name]; !ok || v != want {
			t.Errorf("%s = %v (exported %v), want %v", name, v, ok, want)
		}
	}
}
