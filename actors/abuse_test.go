package actors

import (
	"net"
	"net/netip"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/4over6d/4over6d/messages"
	"github.com/4over6d/4over6d/messages/wire"
	"github.com/4over6d/4over6d/tun/tuntest"
)

// A client that stops reading must cost only itself: its queue stays
// bounded (overflow dropped and counted), other clients keep their
// throughput, and once its socket makes no progress for the timeout the
// session is closed as a write error.
func TestSlowClientIsBoundedAndClosed(t *testing.T) {
	h := newHarness(t, func(c *Config) {
		c.Timeout = 700 * time.Millisecond
		c.Heartbeat = 200 * time.Millisecond
		c.QueuePackets = 64
	})
	good, slow := h.connect(), h.connect()
	h.keepAlive(good)
	h.keepAlive(slow) // alive by its heartbeats, but it never reads
	slow.stopReading()
	flood := tuntest.UDP(netip.AddrPortFrom(inetHost, 53), netip.AddrPortFrom(slow.addr, 9), make([]byte, 1400))
	h.injectUntil(flood, func() bool { return h.srv.Metrics().ClosedBy(CloseWriteError) == 1 })
	if h.srv.Metrics().Drops(DropQueueFull) == 0 {
		t.Fatal("no queue-full drops: the slow client's queue was not bounded")
	}
	h.awaitDownlink(good, 1) // the other client is unaffected
	h.awaitUplink(good, 1)
	eventually(t, wait, "the slow client's lease release", func() bool { return h.leaseCount() == 1 })
}

// keepAlive sends heartbeats for c until the test ends, so silence
// detection does not interfere with what a test is about.
func (h *harness) keepAlive(c *client) {
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
				_, _ = c.conn.Write(wire.AppendFrame(nil, wire.TypeHeartbeat, nil))
			}
		}
	}()
	h.t.Cleanup(func() { close(stop); <-done })
}

// injectUntil keeps injecting pkt into the TUN until cond holds, failing
// the test after the usual wait; queue bounds are checked meanwhile.
func (h *harness) injectUntil(pkt []byte, cond func() bool) {
	h.t.Helper()
	deadline := time.Now().Add(wait)
	for !cond() {
		if time.Now().After(deadline) {
			h.t.Fatalf("condition not reached while flooding (written out: %d packets)", h.srv.Metrics().PacketsOut.Load())
		}
		for range 200 {
			h.dev.Inject(pkt)
		}
		sessions, err := h.srv.Sessions()
		if err != nil {
			h.t.Fatal(err)
		}
		for _, s := range sessions {
			if s.Queued > int64(h.srv.cfg.QueuePackets) {
				h.t.Fatalf("session %v queued %d packets, bound is %d", s.Addr, s.Queued, h.srv.cfg.QueuePackets)
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// stopReading stops draining the connection, so the server's writes back
// up into the socket buffers like a client that has hung.
func (c *client) stopReading() {
	if tc, ok := c.conn.(*net.TCPConn); ok {
		_ = tc.SetReadBuffer(4096)
	}
	c.paused.Store(true)
}

// A burst of connections is absorbed by the accept loop: none is lost and
// a client arriving after it is served at once.
func TestConnectionFlood(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.MaxPerSource = 0 })
	const n = 150
	conns := make([]net.Conn, 0, n)
	for range n {
		conn, err := net.Dial("tcp6", h.ln.Addr().String())
		if err != nil {
			t.Fatalf("dial %d: %v", len(conns), err)
		}
		conns = append(conns, conn)
	}
	defer func() {
		for _, c := range conns {
			_ = c.Close()
		}
	}()
	eventually(t, wait, "every connection to become a session", func() bool {
		return h.srv.Metrics().SessionsOpened.Load() == n
	})
	late := h.connect()
	h.awaitUplink(late, 1)
}

// gatedDevice holds every Write until the gate opens, like a TUN whose
// kernel side cannot keep up.
type gatedDevice struct {
	*tuntest.Device
	gate chan struct{}
}

func (d *gatedDevice) Write(bufs [][]byte) (int, error) {
	<-d.gate
	return d.Device.Write(bufs)
}

// A client that sends faster than the device accepts is slowed down by
// TCP (its session stops reading) instead of filling the server's memory;
// nothing it sent is lost once the device catches up.
//
// The bound is shown by an event, not by waiting a while: with the device
// stalled, the session's socket reader must end up parked in
// Budget.Acquire, which happens only when all inflightBatches tokens are
// held by batches on their way to the TUN; from then on it reads nothing
// more from the socket. Every batch holds at most wire.BatchCap
// packets, so the packets the session took in can never exceed
// inflightBatches*BatchCap while the device is stalled; this is checked at
// every sample while waiting and once the reader is parked. A reader that
// never blocks (no budget) never parks and fails the wait.
func TestFastSenderIsBackPressuredNotBuffered(t *testing.T) {
	dev := &gatedDevice{Device: tuntest.New("gated0", 1500), gate: make(chan struct{})}
	opened := false
	open := func() {
		if !opened {
			close(dev.gate)
			opened = true
		}
	}
	h := newHarness(t, func(c *Config) { c.Device = dev })
	t.Cleanup(open) // the engine must be able to stop
	c := h.connect()
	const n = 20000
	pkt := ping(c.addr, inetHost, 1)
	var stream []byte
	for range n {
		stream = wire.AppendFrame(stream, wire.TypeDataRequest, pkt)
	}
	sent := make(chan error, 1)
	go func() { _, err := c.conn.Write(stream); sent <- err }()

	const bound = inflightBatches * wire.BatchCap
	checkBound := func() {
		t.Helper()
		if got := h.srv.Metrics().PacketsIn.Load(); got > bound {
			t.Fatalf("with the device stalled the session took in %d packets; its budget allows %d", got, bound)
		}
	}
	eventually(t, wait, "the session's reader to block on its exhausted budget", func() bool {
		checkBound()
		return goroutineParked("[select", "actors.readClient(", "messages.Budget.Acquire(")
	})
	checkBound()
	open()
	if err := <-sent; err != nil {
		t.Fatalf("client write: %v", err)
	}
	eventually(t, 10*time.Second, "every packet to reach the device", func() bool {
		return h.srv.Metrics().PacketsIn.Load() == n
	})
	if d := h.srv.Metrics().Drops(DropNotIPv4) + h.srv.Metrics().Drops(DropTUNWrite); d != 0 {
		t.Fatalf("%d packets dropped", d)
	}
}

// allStacks is every goroutine's stack, as runtime.Stack prints them.
func allStacks() []byte {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			return buf[:n]
		}
		buf = make([]byte, 2*len(buf))
	}
}

// goroutineParked reports whether some goroutine is parked in the given
// scheduler state (e.g. "[select", "[chan receive", "[IO wait") with every
// one of frames (function names) on its stack. Tests use it to wait for a
// goroutine to be blocked where a bound says it must block, instead of
// sleeping and hoping it got there.
func goroutineParked(state string, frames ...string) bool {
	buf := allStacks()
	for g := range strings.SplitSeq(string(buf), "\n\n") {
		header, _, _ := strings.Cut(g, "\n")
		if !strings.Contains(header, state) {
			continue
		}
		if !slices.ContainsFunc(frames, func(f string) bool { return !strings.Contains(g, f) }) {
			return true
		}
	}
	return false
}

// holder is a stand-in Router that keeps every batch it gets until the
// test releases them, like a Router that has fallen behind.
type holder struct{ got chan *messages.ToClient }

func (h *holder) Receive(ctx actor.Context) {
	if b, ok := ctx.Message().(*messages.ToClient); ok {
		h.got <- b
	}
}

// A flood from the IPv4 side must wait in the kernel's TUN queue, not in
// the Router's mailbox: the TUN reader has at most routerBudget batches in
// flight and reads again only when the Router gives one back.
func TestTUNReaderIsBoundedByRouter(t *testing.T) {
	sys := quietSystem()
	defer sys.Shutdown()
	h := &holder{got: make(chan *messages.ToClient, 2*routerBudget)}
	router := sys.Root.Spawn(actor.PropsFromProducer(func() actor.Actor { return h }))
	defer func() { _ = sys.Root.PoisonFuture(router).Wait() }()
	dev := tuntest.New("tun-budget", 1500)
	self := sys.Root.Spawn(actor.PropsFromProducer(func() actor.Actor { return &holder{got: make(chan *messages.ToClient, 1)} }))
	defer func() { _ = sys.Root.PoisonFuture(self).Wait() }()
	stop, done := make(chan struct{}), make(chan struct{})
	m := &Metrics{}
	go readTUN(dev, sys, self, router, m, 1, stop, done)

	pkt := tuntest.UDP(netip.AddrPortFrom(inetHost, 53), netip.AddrPortFrom(netip.MustParseAddr("192.0.2.9"), 9), []byte("x"))
	var held []*messages.ToClient
	for range routerBudget {
		dev.Inject(pkt)
		held = append(held, receiveBatch(t, h.got))
	}
	dev.Inject(pkt)
	select {
	case <-h.got:
		t.Fatalf("the reader sent a batch beyond its budget of %d", routerBudget)
	case <-time.After(200 * time.Millisecond):
	}
	held[0].Recycle() // the Router catches up by one batch
	held = append(held[1:], receiveBatch(t, h.got))
	// The wait is counted before the batch is sent.
	if n := m.TUNReaderWaits.Load(); n != 1 || m.TUNReaderWaitNanos.Load() == 0 {
		t.Fatalf("reader waits = %d (%d ns), want 1 and its time", n, m.TUNReaderWaitNanos.Load())
	}

	// Blocked on the budget again, the reader must still stop on request.
	// Once it has taken the packet it can only wait for a token (none is
	// free), so the stop below ends a wait, whichever comes first.
	dev.Inject(pkt)
	eventually(t, wait, "the reader takes the packet", func() bool { return dev.Pending() == 0 })
	close(stop)
	if err := dev.SetReadDeadline(time.Now()); err != nil {
		t.Fatal(err)
	}
	<-done
	if n := m.TUNReaderWaits.Load(); n != 2 {
		t.Fatalf("reader waits = %d after a wait ended by the stop, want 2", n)
	}
	for _, b := range held {
		b.Release()
	}
}

func receiveBatch(t *testing.T, got <-chan *messages.ToClient) *messages.ToClient {
	t.Helper()
	select {
	case b := <-got:
		return b
	case <-time.After(wait):
		t.Fatal("the TUN reader sent no batch")
		return nil
	}
}

// A session whose actor falls behind must not pile batches up in its
// mailbox: the Router queues at most the session's inbox budget and drops
// (and counts) the rest, and delivers again once the session catches up.
func TestRouterBoundsSessionInbox(t *testing.T) {
	sys := quietSystem()
	defer sys.Shutdown()
	session := &holder{got: make(chan *messages.ToClient, 4)}
	sessionPID := sys.Root.Spawn(actor.PropsFromProducer(func() actor.Actor { return session }))
	dst := netip.MustParseAddr("192.0.2.9")
	inbox := messages.NewBudget(1)
	pool := sys.Root.Spawn(actor.PropsFromProducer(func() actor.Actor {
		return &routeStub{table: &messages.RouteTable{Routes: []messages.RouteAdd{{Addr: dst, Session: sessionPID, Inbox: inbox}}}}
	}))
	metrics := &Metrics{}
	router := sys.Root.Spawn(actor.PropsFromProducer(newRouter(&shared{Config: Config{Metrics: metrics}.withDefaults(), pool: pool})))
	defer func() {
		for _, pid := range []*actor.PID{router, pool, sessionPID} {
			_ = sys.Root.PoisonFuture(pid).Wait()
		}
	}()
	waitForRoute(t, sys, router)

	pkt := tuntest.UDP(netip.AddrPortFrom(inetHost, 53), netip.AddrPortFrom(dst, 9), []byte("x"))
	send := func(packets int) {
		b := messages.NewToClient()
		for range packets {
			b.AppendCopy(pkt)
		}
		sys.Root.Send(router, b)
	}
	send(2)
	first := receiveBatch(t, session.got) // held: the session has not taken it
	send(3)                               // no token left: dropped
	eventually(t, wait, "the drop of 3 packets", func() bool { return metrics.Drops(DropQueueFull) == 3 })
	select {
	case b := <-session.got:
		t.Fatalf("a batch of %d packets went past the full inbox", len(b.Packets))
	default:
	}
	first.Settle() // the session takes it into its own queue
	send(4)
	if b := receiveBatch(t, session.got); len(b.Packets) != 4 {
		t.Fatalf("after the session caught up it got %d packets, want 4", len(b.Packets))
	} else {
		b.Release()
	}
	first.Release()
}
