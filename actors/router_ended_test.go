package actors

import (
	"net/netip"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/4over6d/4over6d/messages"
	"github.com/4over6d/4over6d/messages/wire"
	"github.com/4over6d/4over6d/tun/tuntest"
)

func TestEndedRoutesRemembersForTheWindowOnly(t *testing.T) {
	a, b := netip.MustParseAddr("192.0.2.10"), netip.MustParseAddr("192.0.2.11")
	base := time.Unix(1_000_000, 0)
	at := func(d time.Duration) time.Time { return base.Add(d) }
	type step struct {
		op   string // "add", "remove" or "within"
		addr netip.Addr
		t    time.Duration
		want bool // for "within"
	}
	tests := []struct {
		name  string
		steps []step
		left  int // addresses remembered at the end
	}{
		{"never ended", []step{{"within", a, 0, false}}, 0},
		{"just ended", []step{{"add", a, 0, false}, {"within", a, 0, true}, {"within", b, 0, false}}, 1},
		{"inside the window", []step{{"add", a, 0, false}, {"within", a, 59 * time.Second, true}}, 1},
		{"at the window's end", []step{{"add", a, 0, false}, {"within", a, time.Minute, false}}, 0},
		{"leased again", []step{{"add", a, 0, false}, {"remove", a, 0, false}, {"within", a, time.Second, false}}, 0},
		{"ended again later keeps the later end", []step{
			{"add", a, 0, false}, {"remove", a, 0, false}, {"add", a, 30 * time.Second, false},
			{"within", a, 70 * time.Second, true}, {"within", a, 90 * time.Second, false},
		}, 0},
		{"an add prunes the old ones", []step{{"add", a, 0, false}, {"add", b, 2 * time.Minute, false}}, 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := endedRoutes{window: time.Minute}
			for i, s := range tc.steps {
				switch s.op {
				case "add":
					e.add(s.addr, at(s.t))
				case "remove":
					e.remove(s.addr)
				case "within":
					if got := e.within(s.addr, at(s.t)); got != s.want {
						t.Fatalf("step %d: within(%v, +%v) = %v, want %v", i, s.addr, s.t, got, s.want)
					}
				}
			}
			if got := e.len(); got != tc.left {
				t.Fatalf("%d addresses remembered, want %d", got, tc.left)
			}
		})
	}
}

// Many sessions ending over time cost memory for the window's worth of
// them only.
func TestEndedRoutesStaysBounded(t *testing.T) {
	e := endedRoutes{window: time.Minute}
	base := time.Unix(1_000_000, 0)
	for i := range 100_000 {
		addr := netip.AddrFrom4([4]byte{100, 64, byte(i >> 8), byte(i)})
		e.add(addr, base.Add(time.Duration(i)*time.Second))
	}
	if n := e.len(); n != 60 {
		t.Fatalf("%d addresses remembered, want the last minute's 60", n)
	}
	if n := len(e.order); n > 120 {
		t.Fatalf("order holds %d entries for 60 addresses", n)
	}
}

// A packet from the TUN for an address without a session is counted as
// session_ended while that address's session ended less than -grace ago,
// and as no_route otherwise.
func TestUnroutedDropsNameTheEndedSession(t *testing.T) {
	const grace = time.Minute
	clock := newFakeClock()
	h := newHarness(t, func(c *Config) { c.now, c.Grace = clock.now, grace })
	gone := h.connect()
	live := h.connect()
	_ = gone.conn.Close()
	eventually(t, wait, "the closed session's route to go", func() bool {
		rt, err := h.srv.Routes()
		return err == nil && rt.Routes[gone.addr] == nil && len(rt.Routes) == 1
	})
	never := netip.MustParseAddr("192.0.2.200")
	tests := []struct {
		name    string
		advance time.Duration
		dst     netip.Addr
		reason  DropReason
	}{
		{"the ended session's address", 0, gone.addr, DropSessionEnded},
		{"an address never leased", 0, never, DropNoRoute},
		{"the ended session's address just inside -grace", grace - time.Second, gone.addr, DropSessionEnded},
		{"the ended session's address after -grace", time.Second, gone.addr, DropNoRoute},
	}
	want := map[DropReason]uint64{}
	for i, tc := range tests {
		clock.advance(tc.advance)
		h.dev.Inject(tuntest.Pong(inetHost, tc.dst, 7, uint16(i), nil))
		want[tc.reason]++
		eventually(t, wait, tc.name+": "+tc.reason.String()+" drop", func() bool {
			m := h.srv.Metrics()
			return m.Drops(DropSessionEnded) == want[DropSessionEnded] && m.Drops(DropNoRoute) == want[DropNoRoute]
		})
	}
	// The live session still gets its packets: the drops did not touch it.
	own := tuntest.Pong(inetHost, live.addr, 7, 99, []byte("live"))
	h.dev.Inject(own)
	if got := live.nextData(wait); string(got) != string(own) {
		t.Fatalf("live client got %x, want %x", got, own)
	}
}

// BenchmarkRouterUnrouted is the cost of a batch whose packets no session
// holds, half of them for an address whose session just ended: no
// allocation per packet (run with -benchmem).
func BenchmarkRouterUnrouted(b *testing.B) {
	cfg := &shared{Config: Config{Grace: time.Minute}.withDefaults()}
	r := newRouter(cfg)().(*Router)
	ended, never := netip.MustParseAddr("192.0.2.10"), netip.MustParseAddr("192.0.2.200")
	r.ended.add(ended, cfg.now())
	pkts := [2][]byte{tuntest.Pong(inetHost, ended, 7, 1, nil), tuntest.Pong(inetHost, never, 7, 1, nil)}
	const perBatch = 32
	b.ReportAllocs()
	for b.Loop() {
		in := messages.NewToClient()
		for i := range perBatch {
			p := wire.GetPacketBuf(len(pkts[i%2]))
			copy(p, pkts[i%2])
			in.Packets = append(in.Packets, p)
		}
		r.forward(nil, in)
	}
	if cfg.Metrics.Drops(DropSessionEnded) == 0 || cfg.Metrics.Drops(DropNoRoute) == 0 {
		b.Fatal("the batches were not counted by both reasons")
	}
}

// A batch sent to an actor that is gone is counted by why it had nowhere
// to go, and its packets go back to the pool.
func TestDeadBatchesAreCounted(t *testing.T) {
	sys := quietSystem()
	defer sys.Shutdown()
	gone := func() *actor.PID {
		pid := sys.Root.Spawn(actor.PropsFromFunc(func(actor.Context) {}))
		if err := sys.Root.StopFuture(pid).Wait(); err != nil {
			t.Fatal(err)
		}
		return pid
	}
	cfg := &shared{Config: Config{}.withDefaults()}
	cfg.router = gone()
	countDeadBatches(sys, cfg)
	tests := []struct {
		name   string
		to     *actor.PID
		reason DropReason
	}{
		{"to a session that stopped", gone(), DropSessionEnded},
		{"to the Router, gone at shutdown", cfg.router, DropNoRoute},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := cfg.Metrics.Drops(tc.reason)
			b := messages.NewToClient()
			for range 3 {
				b.Packets = append(b.Packets, wire.GetPacketBuf(60))
			}
			sys.Root.Send(tc.to, b)
			if got := cfg.Metrics.Drops(tc.reason) - before; got != 3 {
				t.Fatalf("%s drops = %d, want 3", tc.reason, got)
			}
			if len(b.Packets) != 0 {
				t.Fatalf("the dead batch still holds %d packets: not released", len(b.Packets))
			}
		})
	}
}

// Every packet read from the TUN for a client whose connection closes
// with data queued towards it is counted: written out, or dropped for a
// named reason (queue_full, session_ended), none lost uncounted.
func TestEveryPacketTowardsAClosingSessionIsCounted(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.QueuePackets = 256 })
	c := h.connect()
	c.stopReading()
	pkt := tuntest.UDP(netip.AddrPortFrom(inetHost, 53), netip.AddrPortFrom(c.addr, 9), make([]byte, 1400))
	injected := uint64(0)
	backlog := func() bool {
		// The writer is parked in a write to the full socket (it drains
		// nothing more), and its queue, full behind it, holds packets:
		// those are still queued at the close.
		if !goroutineParked("[IO wait", "actors.(*coalescer).flush(") {
			return false
		}
		ss, err := h.srv.Sessions()
		return err == nil && len(ss) == 1 && ss[0].Queued > 0 && h.srv.Metrics().Drops(DropQueueFull) > 0
	}
	for deadline := time.Now().Add(wait); !backlog(); {
		if time.Now().After(deadline) {
			t.Fatalf("no backlog towards the client after %d packets", injected)
		}
		for range 100 {
			h.dev.Inject(pkt)
		}
		injected += 100
	}
	_ = c.conn.Close()
	eventually(t, wait, "the session to end", func() bool { return h.leaseCount() == 0 })
	accounted := func() uint64 {
		m := h.srv.Metrics()
		return m.PacketsOut.Load() + totalDrops(m)
	}
	eventually(t, wait, "every packet to be counted", func() bool { return accounted() == injected })
	if n := h.srv.Metrics().Drops(DropSessionEnded); n == 0 {
		t.Fatalf("no session_ended drops with a backlog at the close (out %d, queue_full %d, of %d)",
			h.srv.Metrics().PacketsOut.Load(), h.srv.Metrics().Drops(DropQueueFull), injected)
	}
}
