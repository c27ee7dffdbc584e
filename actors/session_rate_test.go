package actors

import (
	"errors"
	"net/netip"
	"testing"
	"time"

	"github.com/4over6d/4over6d/messages"
	"github.com/4over6d/4over6d/messages/wire"
	"github.com/4over6d/4over6d/tun/tuntest"
)

// Tests of the rate limit on the whole engine (fake TUN, real TCP on
// loopback). Each checks the token bucket's bound, depth + rate×t bytes
// by time t, against times taken so that a slow machine only loosens it:
// t0 before the first byte can have been sent, now after the last byte
// was seen. A limit that does not work breaks the bound within
// milliseconds; one that works cannot break it however slow the machine.

const testRate = 1_000_000 // bit/s: 125000 bytes a second, depth 131072

// rateBound is the most a testRate bucket lets through from t0 to now.
func rateBound(t0 time.Time) float64 {
	return bucketMinDepth + time.Since(t0).Seconds()*testRate/8
}

func withRate(bits uint64) func(*Config) {
	return func(c *Config) { c.RateLimit = bits }
}

// fullPacket is a 1400-byte UDP packet from src to dst.
func fullPacket(src, dst netip.Addr) []byte {
	return tuntest.UDP(netip.AddrPortFrom(src, 4000), netip.AddrPortFrom(dst, 53), make([]byte, 1372))
}

func totalDrops(m *Metrics) uint64 {
	var n uint64
	for r := range numDropReasons {
		n += m.Drops(r)
	}
	return n
}

// awaitAccounted reads the client's 103s, passing each to the check funcs,
// until they and the drops (of any reason) add up to n packets, and
// returns how many arrived. The drop counters can lag the last frame
// or lead it, so it polls both.
func awaitAccounted(t *testing.T, c *client, m *Metrics, n uint64, check ...func(payload []byte)) uint64 {
	t.Helper()
	var packets uint64
	deadline := time.Now().Add(10 * time.Second)
	for packets+totalDrops(m) < n {
		f, err := c.tryNext(20 * time.Millisecond)
		switch {
		case errors.Is(err, errNoFrame):
			if time.Now().After(deadline) {
				t.Fatalf("%d packets reached the client and %d were dropped, of %d", packets, totalDrops(m), n)
			}
			continue
		case err != nil:
			t.Fatalf("client: %v", err)
		case f.Type != wire.TypeDataReply:
			continue
		}
		packets++
		for _, fn := range check {
			fn(f.Payload)
		}
	}
	return packets
}

// The uplink is paced, never policed: a client sending 2.6 times the
// bucket's depth at once gets every packet to the TUN, in order, and never
// faster than the bucket allows.
func TestUplinkIsPacedNotDropped(t *testing.T) {
	h := newHarness(t, withRate(testRate))
	c := h.connect()
	const n = 250 // 350 KB: about 1.8 s beyond the depth at 1 Mbit/s
	var stream []byte
	for range n {
		stream = wire.AppendFrame(stream, wire.TypeDataRequest, fullPacket(c.addr, inetHost))
	}
	t0 := time.Now()
	sent := make(chan error, 1)
	go func() { _, err := c.conn.Write(stream); sent <- err }()
	got := 0.0
	for i := range n {
		pkt := h.written(10 * time.Second)
		if s, err := tuntest.Parse(pkt); err != nil || len(pkt) != 1400 || s.Src != c.addr {
			t.Fatalf("packet %d on the TUN: %d bytes, %+v, %v", i, len(pkt), s, err)
		}
		got += float64(len(pkt))
		if bound := rateBound(t0); got > bound {
			t.Fatalf("%.0f bytes on the TUN %v after the client started sending; a %s bucket allows %.0f",
				got, time.Since(t0), FormatRate(testRate), bound)
		}
	}
	if err := <-sent; err != nil {
		t.Fatalf("client write: %v", err)
	}
	if d := totalDrops(h.srv.Metrics()); d != 0 || h.srv.Metrics().PacketsIn.Load() != n {
		t.Fatalf("%d packets dropped, %d of %d counted in", d, h.srv.Metrics().PacketsIn.Load(), n)
	}
	t.Logf("%d bytes in %v: %.2f Mbit/s", int(got), time.Since(t0).Round(time.Millisecond), got*8/time.Since(t0).Seconds()/1e6)
}

// A reader waiting for tokens keeps its session alive (the client is not
// silent: its frames wait unread behind the paced data) and lets the
// session close at once.
func TestPacedReaderStaysAliveAndStopsAtClose(t *testing.T) {
	const timeout = 400 * time.Millisecond
	h := newHarness(t, withRate(64_000), func(c *Config) { c.Heartbeat, c.Timeout = 100*time.Millisecond, timeout })
	c := h.connect()
	// 600 KB at 8000 bytes a second: over a minute of waiting.
	var stream []byte
	for range 430 {
		stream = wire.AppendFrame(stream, wire.TypeDataRequest, fullPacket(c.addr, inetHost))
	}
	go func() { _, _ = c.conn.Write(stream) }() // ends when the test closes the connection
	eventually(t, wait, "the reader to wait for tokens", func() bool {
		return goroutineParked("", "actors.(*clientReader).sleep(") // [select], or whatever a broken wait parks in
	})
	parked := time.Now()
	eventually(t, 10*time.Second, "four silence timeouts to pass with the session open", func() bool {
		if n := h.srv.Metrics().ClosedBy(CloseTimeout); n != 0 {
			t.Fatalf("the session was closed as silent while the server paced it")
		}
		return time.Since(parked) > 4*timeout
	})
	h.closeWithin(10*time.Second, "Close did not return while the session's reader waited for tokens")
}

// The downlink is policed: a burst from the TUN beyond the bucket is
// dropped and counted as rate_limit, and what reaches the client stays
// within the bound.
func TestDownlinkIsPoliced(t *testing.T) {
	h := newHarness(t, withRate(testRate))
	c := h.connect()
	const n = 300 // 420 KB, 3.2 times the depth
	t0 := time.Now()
	go func() {
		for range n {
			h.dev.Inject(fullPacket(inetHost, c.addr))
		}
	}()
	m := h.srv.Metrics()
	got := 0.0
	packets := awaitAccounted(t, c, m, n, func(payload []byte) {
		got += float64(len(payload))
		if bound := rateBound(t0); got > bound {
			t.Fatalf("%.0f bytes reached the client %v after the burst began; a %s bucket allows %.0f",
				got, time.Since(t0), FormatRate(testRate), bound)
		}
	})
	limited := m.Drops(DropRateLimit)
	if limited == 0 || packets == 0 || limited != totalDrops(m) {
		t.Fatalf("%d packets delivered, %d dropped as rate_limit, %d in all; want both rate_limit and delivered packets",
			packets, limited, totalDrops(m))
	}
	sessions, err := h.srv.Sessions()
	if err != nil || len(sessions) != 1 || sessions[0].Drops != limited {
		t.Fatalf("sessions %+v (%v): want one, its drops %d", sessions, err, limited)
	}
	t.Logf("%d of %d packets delivered, %d dropped as rate_limit", packets, n, limited)
}

// The rate a lease carries (the client's reservation) overrides
// -rate-limit for that session, in both directions of the table.
func TestLeaseRateOverridesTheDefault(t *testing.T) {
	tests := []struct {
		name          string
		config, lease uint64
		policed       bool
	}{
		{"no limit anywhere", 0, 0, false},
		{"the default", testRate, 0, true},
		{"the lease's rate without a default", 0, testRate, true},
		{"the lease's higher rate over a low default", testRate, 1_000_000_000, false},
		{"the lease's lower rate over a high default", 1_000_000_000, testRate, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := newSessionRig(t, withRate(tc.config))
			addr := netip.MustParseAddr("192.0.2.7")
			r.c.send(wire.TypeIPRequest, nil)
			r.request()
			r.sys.Root.Send(r.pid, &messages.LeaseGranted{Addr: addr, Rate: tc.lease})
			if f := r.c.next(wait); f.Type != wire.TypeIPReply {
				t.Fatalf("first frame has type %d, want 101", f.Type)
			}
			// 200 packets, 280 KB: twice a 1 Mbit/s depth, a twentieth
			// of a 1 Gbit/s one.
			const batches = 200 / 20
			for range batches {
				pkts := make([][]byte, 20)
				for i := range pkts {
					pkts[i] = fullPacket(inetHost, addr)
				}
				r.toClient(pkts...)
			}
			delivered := awaitAccounted(t, r.c, r.cfg.Metrics, batches*20)
			if limited := r.cfg.Metrics.Drops(DropRateLimit); (limited > 0) != tc.policed || delivered == 0 {
				t.Fatalf("%d delivered, %d dropped as rate_limit; want policed %v", delivered, limited, tc.policed)
			}
		})
	}
}
