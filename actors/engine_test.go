package actors

import (
	"bytes"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/4over6d/4over6d/messages/wire"
	"github.com/4over6d/4over6d/tun/tuntest"
)

const wait = 5 * time.Second

func replyAddr(t *testing.T, f wire.Frame) netip.Addr {
	t.Helper()
	r, err := wire.ParseIPReply(f.Payload)
	if err != nil {
		t.Fatalf("parse 101 %q: %v", f.Payload, err)
	}
	return r.Addr
}

func TestAssignmentGivesDistinctAddressesAndExactReply(t *testing.T) {
	h := newHarness(t)
	seen := map[netip.Addr]bool{}
	for range 4 {
		c := h.dial()
		c.send(wire.TypeIPRequest, nil)
		f := c.next(wait)
		if f.Type != wire.TypeIPReply {
			t.Fatalf("first frame type %d, want 101", f.Type)
		}
		addr := replyAddr(t, f)
		want := wire.AppendFrame(nil, wire.TypeIPReply,
			[]byte(addr.String()+" 0.0.0.0 198.51.100.53 198.51.100.54 203.0.113.53 \x00"))
		if got := wire.AppendFrame(nil, f.Type, f.Payload); !bytes.Equal(got, want) {
			t.Fatalf("101 frame = %q, want %q", got, want)
		}
		if seen[addr] || !testPool.Contains(addr) || addr == serverAddr || addr == testPool.Addr() {
			t.Fatalf("bad or duplicate address %v (seen: %v)", addr, seen)
		}
		seen[addr] = true
	}
	if n := h.leaseCount(); n != 4 {
		t.Fatalf("pool holds %d leases, want 4", n)
	}
}

func TestRepeatedRequestGetsSameAddress(t *testing.T) {
	h := newHarness(t)
	c := h.connect()
	c.send(wire.TypeIPRequest, nil)
	if got := replyAddr(t, c.next(wait)); got != c.addr {
		t.Fatalf("second 101 = %v, first was %v", got, c.addr)
	}
	if n := h.leaseCount(); n != 1 {
		t.Fatalf("pool holds %d leases, want 1", n)
	}
}

func TestClientPacketReachesTUN(t *testing.T) {
	h := newHarness(t)
	c := h.connect()
	pkt := ping(c.addr, inetHost, 1)
	// Trailing junk after the IPv4 total length is trimmed, as some
	// clients send fixed-size payloads.
	c.send(wire.TypeDataRequest, append(append([]byte(nil), pkt...), 0xde, 0xad, 0xbe, 0xef))
	if got := h.written(wait); !bytes.Equal(got, pkt) {
		t.Fatalf("TUN got %x, want %x", got, pkt)
	}
	eventually(t, wait, "inbound counters", func() bool {
		return h.srv.Metrics().PacketsIn.Load() == 1 && h.srv.Metrics().BytesIn.Load() == uint64(len(pkt))
	})
}

// TestTUNPacketReachesOwningClientOnly proves that A got none of B's
// packets by a positive event, not by a quiet window: A's own packet,
// injected after B's, must be the first data A receives.
func TestTUNPacketReachesOwningClientOnly(t *testing.T) {
	h := newHarness(t)
	a, b := h.connect(), h.connect()
	for seq := range uint16(3) {
		pkt := tuntest.Pong(inetHost, b.addr, 7, seq, []byte("reply"))
		h.dev.Inject(pkt)
		if got := b.nextData(wait); !bytes.Equal(got, pkt) {
			t.Fatalf("client B got %x, want %x", got, pkt)
		}
	}
	// A packet for A goes the same way (TUN reader, Router, A's session
	// queue and writer, all in order), so if any of B's packets had been
	// misrouted to A it would arrive before this one.
	own := tuntest.Pong(inetHost, a.addr, 7, 99, []byte("for A"))
	h.dev.Inject(own)
	if got := a.nextData(wait); !bytes.Equal(got, own) {
		t.Fatalf("client A got %x before its own packet %x: B's packet reached A", got, own)
	}
	h.dev.Inject(tuntest.Pong(inetHost, netip.MustParseAddr("192.0.2.200"), 7, 1, nil))
	eventually(t, wait, "no-route drop", func() bool { return h.srv.Metrics().Drops(DropNoRoute) == 1 })
}

func TestClientToClientThroughTUN(t *testing.T) {
	h := newHarness(t)
	h.dev.SetLoopback(testPool)
	a, b := h.connect(), h.connect()
	pkt := ping(a.addr, b.addr, 9)
	a.send(wire.TypeDataRequest, pkt)
	if got := b.nextData(wait); !bytes.Equal(got, pkt) {
		t.Fatalf("client B got %x, want %x", got, pkt)
	}
}

// TestDropsAreCountedAndSessionSurvives checks per reason that a bad packet
// is counted and not written, and that the session still forwards: the
// first packet on the TUN after the drop must be the good one sent after
// it.
func TestDropsAreCountedAndSessionSurvives(t *testing.T) {
	tests := []struct {
		name   string
		reason DropReason
		packet func(own, other netip.Addr) []byte
	}{
		{"spoofed as another client", DropSpoofed, func(_, other netip.Addr) []byte { return ping(other, inetHost, 1) }},
		{"spoofed outside the pool", DropSpoofed, func(netip.Addr, netip.Addr) []byte {
			return ping(netip.MustParseAddr("203.0.113.5"), inetHost, 1)
		}},
		{"not IPv4", DropNotIPv4, func(netip.Addr, netip.Addr) []byte { return []byte{0x60, 0, 0, 0, 0, 0, 0, 0} }},
		{"total length beyond payload", DropNotIPv4, func(own, _ netip.Addr) []byte { return ping(own, inetHost, 1)[:24] }},
		{"larger than the MTU with DF", DropTooBig, func(own, _ netip.Addr) []byte { return bigUDP(own, 1, 1600, flagDF) }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			a, b := h.connect(), h.connect()
			a.send(wire.TypeDataRequest, tc.packet(a.addr, b.addr))
			eventually(t, wait, tc.reason.String()+" drop", func() bool { return h.srv.Metrics().Drops(tc.reason) == 1 })
			// The next packet on the same path must be the next one on the
			// TUN: had the dropped one been written too, it would come first.
			good := ping(a.addr, inetHost, 2)
			a.send(wire.TypeDataRequest, good)
			if got := h.written(wait); !bytes.Equal(got, good) {
				t.Fatalf("after the drop TUN got %x, want %x", got, good)
			}
		})
	}
}

func TestDataBeforeRequestIsDropped(t *testing.T) {
	h := newHarness(t)
	c := h.dial()
	c.send(wire.TypeDataRequest, ping(netip.MustParseAddr("192.0.2.2"), inetHost, 1))
	eventually(t, wait, "before-lease drop", func() bool { return h.srv.Metrics().Drops(DropBeforeLease) == 1 })
	c.handshake()
	// Not kept for later either: the first packet on the TUN is the one
	// sent after the lease.
	pkt := ping(c.addr, inetHost, 2)
	c.send(wire.TypeDataRequest, pkt)
	if got := h.written(wait); !bytes.Equal(got, pkt) {
		t.Fatalf("first packet on the TUN after the lease is %x, want %x", got, pkt)
	}
}

func TestControlFrameVariants(t *testing.T) {
	tests := []struct {
		name  string
		raw   []byte
		reply byte // expected reply type, 0 for none
	}{
		{"100 with length 0", []byte{0, 0, 0, 0, 100}, wire.TypeIPReply},
		{"100 with 3 junk bytes", []byte{8, 0, 0, 0, 100, 1, 2, 3}, wire.TypeIPReply},
		{"100 as a whole C struct", append([]byte{0x05, 0x10, 0, 0, 100}, make([]byte, 4096)...), wire.TypeIPReply},
		{"200 encryption request", []byte{5, 0, 0, 0, 200}, wire.TypeUnsupported},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			c := h.dial()
			c.sendRaw(tc.raw)
			if f := c.next(wait); f.Type != tc.reply || (tc.reply == wire.TypeUnsupported && f.Length != 5) {
				t.Fatalf("reply type %d length %d, want type %d", f.Type, f.Length, tc.reply)
			}
		})
	}
}

func TestUnknownTypeIgnoredAndCounted(t *testing.T) {
	h := newHarness(t)
	c := h.connect()
	c.send(150, []byte("whatever"))
	eventually(t, wait, "unknown-type count", func() bool { return h.srv.Metrics().FrameErrors(FrameUnknownTyp) == 1 })
	pkt := ping(c.addr, inetHost, 3)
	c.send(wire.TypeDataRequest, pkt)
	if got := h.written(wait); !bytes.Equal(got, pkt) {
		t.Fatal("session stopped working after an unknown frame type")
	}
}

func TestMalformedFramingClosesOnlyThatConnection(t *testing.T) {
	tests := []struct {
		name string
		raw  []byte
		kind FrameError
	}{
		{"absurd length", []byte{0xff, 0xff, 0xff, 0x7f, 102}, FrameTooLarge},
		{"big-endian 8-byte header", []byte{0, 0, 0, 40, 0, 0, 0, 102}, FrameTooLarge},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			bad, good := h.connect(), h.connect()
			bad.sendRaw(tc.raw)
			bad.expectClosed(wait)
			eventually(t, wait, "frame error count", func() bool { return h.srv.Metrics().FrameErrors(tc.kind) == 1 })
			eventually(t, wait, "lease release", func() bool { return h.leaseCount() == 1 })
			pkt := ping(good.addr, inetHost, 4)
			good.send(wire.TypeDataRequest, pkt)
			if got := h.written(wait); !bytes.Equal(got, pkt) {
				t.Fatal("the other client stopped working")
			}
		})
	}
}

func TestTruncatedFrameThenCloseIsCounted(t *testing.T) {
	h := newHarness(t)
	c := h.connect()
	c.sendRaw([]byte{100, 0, 0, 0, 102, 0x45, 0})
	_ = c.conn.Close()
	eventually(t, wait, "truncated count", func() bool { return h.srv.Metrics().FrameErrors(FrameTruncated) == 1 })
	eventually(t, wait, "lease release", func() bool { return h.leaseCount() == 0 })
}

// TestHeartbeatsAndSilenceTimeout checks that the server sends 104s, drops
// a silent client after the timeout, and keeps a client that sends 104s.
// The talker connects first and has received three heartbeats (so at least
// 120 ms pass) before the quiet client connects, so when the quiet client is
// dropped by its timeout, the talker's silence timer, started earlier, has
// run out too: only its heartbeats can have kept it, which a packet through
// it then proves. No sleep is needed, and the 1 s timeout leaves the
// keep-alive (every 100 ms) a wide margin under -race.
func TestHeartbeatsAndSilenceTimeout(t *testing.T) {
	h := newHarness(t, func(c *Config) {
		c.Heartbeat = 40 * time.Millisecond
		c.Timeout = time.Second
	})
	awaitBeats := func(c *client, n int) {
		t.Helper()
		for beats := 0; beats < n; {
			if f := c.next(wait); f.Type == wire.TypeHeartbeat {
				if f.Length != 5 {
					t.Fatalf("heartbeat length %d, want 5", f.Length)
				}
				beats++
			}
		}
	}
	talker := h.connect()
	h.keepAlive(talker)
	awaitBeats(talker, 3)
	quiet := h.connect()
	awaitBeats(quiet, 3)
	quiet.expectClosed(wait)
	eventually(t, wait, "silent client's lease release", func() bool { return h.leaseCount() == 1 })
	if n := h.srv.Metrics().ClosedBy(CloseTimeout); n != 1 {
		t.Fatalf("sessions closed by timeout = %d, want 1", n)
	}
	lt, err := h.srv.Leases()
	if err != nil || len(lt.Leases) != 1 || lt.Leases[0].Addr != talker.addr {
		t.Fatalf("leases after timeout = %+v, %v; want only the talker's %v", lt, err, talker.addr)
	}
	pkt := ping(talker.addr, inetHost, 1)
	talker.send(wire.TypeDataRequest, pkt)
	if got := h.written(wait); !bytes.Equal(got, pkt) {
		t.Fatalf("the talker's packet after the timeout: TUN got %x, want %x", got, pkt)
	}
	if n := h.srv.Metrics().ClosedBy(CloseTimeout); n != 1 {
		t.Fatalf("sessions closed by timeout = %d, want only the quiet one", n)
	}
}

func TestHandshakeTimeout(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.HandshakeTimeout = 100 * time.Millisecond })
	c := h.dial()
	c.send(wire.TypeHeartbeat, nil) // liveness alone is not a handshake
	c.expectClosed(wait)
	eventually(t, wait, "handshake-timeout count", func() bool { return h.srv.Metrics().ClosedBy(CloseHandshakeTimeout) == 1 })
}

func TestPoolExhaustionAndReuse(t *testing.T) {
	h := newHarness(t, func(c *Config) {
		c.Pool = netip.MustParsePrefix("192.0.2.0/29") // 5 client addresses
		c.Grace = time.Nanosecond
	})
	clients := make([]*client, 5)
	for i := range clients {
		clients[i] = h.connect()
	}
	extra := h.dial()
	extra.send(wire.TypeIPRequest, nil)
	extra.expectClosed(wait)
	if n := h.srv.Metrics().LeaseDenials.Load(); n != 1 {
		t.Fatalf("lease denials = %d, want 1", n)
	}
	freed := clients[2].addr
	_ = clients[2].conn.Close()
	eventually(t, wait, "lease release", func() bool { return h.leaseCount() == 4 })
	if got := h.connect().addr; got != freed {
		t.Fatalf("new client got %v, want the freed %v", got, freed)
	}
	// Counted when the session has fully stopped, which is after its
	// client saw the connection close.
	eventually(t, wait, "the lease-denied session to be counted", func() bool {
		return h.srv.Metrics().ClosedBy(CloseLeaseDenied) >= 1
	})
	if n := h.srv.Metrics().ClosedBy(CloseLeaseDenied); n != 1 {
		t.Fatalf("sessions closed for lack of an address = %d, want 1", n)
	}
	buckets, count, _ := h.srv.Metrics().SetupHistogram()
	if count != 6 || buckets[2.5] != 6 {
		t.Fatalf("setup histogram count %d (<=2.5s: %d), want 6 assigned sessions", count, buckets[2.5])
	}
}

func TestReconnectGetsSameAddress(t *testing.T) {
	h := newHarness(t)
	first := h.connect()
	addr := first.addr
	_ = first.conn.Close()
	eventually(t, wait, "lease release", func() bool { return h.leaseCount() == 0 })
	again := h.connect()
	if again.addr != addr {
		t.Fatalf("reconnect from the same IPv6 address got %v, want %v", again.addr, addr)
	}
}

func TestMaxSessions(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.MaxSessions = 2 })
	h.connect()
	h.connect()
	third := h.dial()
	third.expectClosed(wait)
}

func TestPerSourceLimit(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.MaxPerSource = 2 })
	first := h.connect()
	h.connect()
	third := h.dial()
	third.expectClosed(wait)
	if n := h.srv.Metrics().Refused(RefusePerSource); n != 1 {
		t.Fatalf("per-source refusals = %d, want 1", n)
	}
	_ = first.conn.Close()
	eventually(t, wait, "first session to end", func() bool { return h.srv.Metrics().SessionsClosed.Load() == 1 })
	h.connect() // a slot is free again
}

func TestIsolatedClients(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.IsolateClients = true })
	h.dev.SetLoopback(testPool)
	a, b := h.connect(), h.connect()
	for _, dst := range []netip.Addr{b.addr, serverAddr} {
		a.send(wire.TypeDataRequest, ping(a.addr, dst, 1))
	}
	eventually(t, wait, "client-to-client drops", func() bool { return h.srv.Metrics().Drops(DropClientToClient) == 2 })
	out := ping(a.addr, inetHost, 2)
	a.send(wire.TypeDataRequest, out)
	if got := h.written(wait); !bytes.Equal(got, out) {
		t.Fatalf("traffic to the internet was dropped too: got %x", got)
	}
}

// lockedBuffer collects log output from several goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestDropLogsAreRateLimited bounds the log lines by the time the drops
// actually took, so a slow machine cannot make a correct limiter fail and
// a fast one gets the tight bound of a single line.
func TestDropLogsAreRateLimited(t *testing.T) {
	logs := &lockedBuffer{}
	h := newHarness(t, func(c *Config) {
		c.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	})
	c := h.connect()
	spoofed := ping(netip.MustParseAddr("203.0.113.5"), inetHost, 1)
	start := time.Now()
	for range 200 {
		c.send(wire.TypeDataRequest, spoofed)
	}
	eventually(t, wait, "200 spoof drops", func() bool { return h.srv.Metrics().Drops(DropSpoofed) == 200 })
	// Every drop happened within took, so the limiter (one line per
	// dropLogEvery) allowed the first line and one more per full period.
	took := time.Since(start)
	most := 1 + int(took/dropLogEvery)
	if n := strings.Count(logs.String(), "dropped client packet"); n < 1 || n > most {
		t.Fatalf("%d drop log lines for 200 drops within %v, want 1 to %d", n, took, most)
	}
}

func TestReloadChangesFutureReplies(t *testing.T) {
	h := newHarness(t)
	old := h.connect()
	dns := [3]netip.Addr{netip.MustParseAddr("203.0.113.1"), netip.MustParseAddr("203.0.113.2"), netip.MustParseAddr("203.0.113.3")}
	h.srv.Reload(netip.MustParseAddr("198.51.100.0"), dns)
	want := " 198.51.100.0 203.0.113.1 203.0.113.2 203.0.113.3 \x00"
	eventually(t, wait, "repeated 100 to see the new settings", func() bool {
		old.send(wire.TypeIPRequest, nil)
		f := old.next(wait)
		return f.Type == wire.TypeIPReply && string(f.Payload) == old.addr.String()+want
	})
	c := h.dial()
	c.send(wire.TypeIPRequest, nil)
	if f := c.next(wait); !strings.HasSuffix(string(f.Payload), want) {
		t.Fatalf("new client's 101 = %q, want it to end in %q", f.Payload, want)
	}
}
