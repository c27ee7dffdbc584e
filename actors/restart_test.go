package actors

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/4over6d/4over6d/messages"
	"github.com/4over6d/4over6d/messages/wire"
	"github.com/4over6d/4over6d/tun/tuntest"
)

// Tests of restarts that cannot be confused and of supervision that ends:
// each failed before its fix.

func (h *harness) injectPanic(kind string) {
	h.t.Helper()
	if err := h.srv.InjectPanic(context.Background(), kind, netip.Addr{}); err != nil {
		h.t.Fatal(err)
	}
}

// A reader of a crashed TUN actor that reports late (and the retry it
// would have scheduled) must not make the next incarnation start a second
// reader on the same device.
func TestStaleReaderSignalsAfterTUNRestart(t *testing.T) {
	h := newHarness(t)
	c := h.connect()
	h.injectPanic("tun")
	h.awaitDownlink(c, 1)
	const predecessor = 1 // the first incarnation
	h.srv.system.Root.Send(h.srv.cfg.tun, &readerStopped{incarnation: predecessor, err: errors.New("stale read error")})
	h.srv.system.Root.Send(h.srv.cfg.tun, &restartReader{incarnation: predecessor})
	if err := h.srv.Health(); err != nil { // answered after both signals
		t.Fatal(err)
	}
	h.awaitDownlink(c, 2)
	if n := h.dev.MaxConcurrentReads(); n != 1 {
		t.Fatalf("%d readers shared the device at once, want 1", n)
	}
}

// A panic inside the device write must still release the batch, whose
// budget token belongs to the sending session: after inflightBatches
// leaked tokens that session's uplink would stall for good.
func TestPanicInTUNWriteReleasesTheBatch(t *testing.T) {
	h := newHarness(t)
	c := h.connect()
	panics := inflightBatches + 1
	h.dev.PanicOnWrites(panics)
	for i := 1; i <= panics; i++ {
		c.send(wire.TypeDataRequest, ping(c.addr, inetHost, uint16(i)))
		eventually(t, wait, "the TUN actor to fail on the write", func() bool {
			return h.srv.Metrics().Failures(KindTUN) == uint64(i)
		})
	}
	h.awaitUplink(c, 100)
}

// A packet the device refuses is skipped; the packets after it in the
// same batch are still written.
func TestRefusedPacketDoesNotDropTheRestOfItsBatch(t *testing.T) {
	h := newHarness(t)
	src := netip.MustParseAddr("192.0.2.9")
	first, second := ping(src, inetHost, 1), ping(src, inetHost, 2)
	tooBig := tuntest.UDP(netip.AddrPortFrom(src, 9), netip.AddrPortFrom(inetHost, 9), make([]byte, 1600))
	b := messages.NewFromClient()
	for _, p := range [][]byte{first, tooBig, second} {
		b.AppendCopy(p)
	}
	h.srv.system.Root.Send(h.srv.cfg.tun, b)
	for _, want := range [][]byte{first, second} {
		if got := h.written(wait); !bytes.Equal(got, want) {
			t.Fatalf("written %x, want %x", got, want)
		}
	}
	if n := h.srv.Metrics().Drops(DropTUNWrite); n != 1 {
		t.Fatalf("tun_write drops = %d, want 1", n)
	}
}

// poolParent spawns an AddressPool as its child and passes PoolStarted on,
// without answering it, so a test decides when recovery may end.
type poolParent struct {
	cfg     *shared
	started chan struct{}
}

func (p *poolParent) Receive(ctx actor.Context) {
	switch ctx.Message().(type) {
	case *actor.Started:
		if _, err := ctx.SpawnNamed(actor.PropsFromProducer(newAddressPool(p.cfg)), poolName); err != nil {
			panic(err)
		}
	case *messages.PoolStarted:
		p.started <- struct{}{}
	}
}

// A recovery timeout set by an earlier incarnation must not end this
// incarnation's recovery: it would then lease addresses that live
// sessions have not restated yet.
func TestStaleRecoveryTimeoutIsIgnored(t *testing.T) {
	sys := quietSystem()
	defer sys.Shutdown()
	cfg := newShared(Config{Pool: testPool, Device: tuntest.New("pool0", 1500), Metrics: &Metrics{}}.withDefaults(), sys, "parent")
	cfg.recoveryWait = time.Hour // only the test ends recovery
	parent := &poolParent{cfg: cfg, started: make(chan struct{}, 1)}
	if _, err := sys.Root.SpawnNamed(actor.PropsFromProducer(func() actor.Actor { return parent }), "parent"); err != nil {
		t.Fatal(err)
	}
	<-parent.started
	live := sys.Root.Spawn(actor.PropsFromFunc(func(actor.Context) {}))
	newcomer := sys.Root.Spawn(actor.PropsFromFunc(func(actor.Context) {}))
	held := netip.MustParseAddr("192.0.2.2") // the first address: the one a new client would get
	client := func(n byte) netip.AddrPort {
		return netip.AddrPortFrom(netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 15: n}), 4000)
	}

	sys.Root.Send(cfg.pool, &messages.LiveSessions{Sessions: []*actor.PID{live}})
	sys.Root.Send(cfg.pool, &recoveryTimeout{incarnation: 0}) // from a predecessor
	granted := sys.Root.RequestFuture(cfg.pool, &messages.LeaseRequest{Session: newcomer, Client: client(2)}, wait)
	if n := len(poolTable(t, sys, cfg).Leases); n != 0 {
		t.Fatalf("the pool leased %d addresses before the live session restated its lease", n)
	}
	sys.Root.Send(cfg.pool, &messages.LeaseClaim{Session: live, Client: client(1), Addr: held})
	leases := poolTable(t, sys, cfg).Leases
	if len(leases) != 2 {
		t.Fatalf("leases after recovery: %+v, want the claim and the grant", leases)
	}
	res, err := granted.Result()
	if g, ok := res.(*messages.LeaseGranted); err != nil || !ok || g.Addr == held {
		t.Fatalf("the newcomer's lease: %+v, %v; want an address other than %v, which the live session holds", res, err, held)
	}
}

func poolTable(t *testing.T, sys *actor.ActorSystem, cfg *shared) *messages.LeaseTable {
	t.Helper()
	res, err := sys.Root.RequestFuture(cfg.pool, &messages.LeasesQuery{}, wait).Result()
	if err != nil {
		t.Fatalf("leases: %v", err)
	}
	return res.(*messages.LeaseTable)
}

// A client that left keeps its address reserved for -grace, also across a
// crash of the pool: the next incarnation gets the reservations from the
// one that failed, not the lease file's from the start.
func TestGraceReservationSurvivesPoolRestart(t *testing.T) {
	h, pl := newPipeHarness(t)
	from := func(n byte) netip.AddrPort {
		return netip.AddrPortFrom(netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 1, 15: n}), 40000)
	}
	a := pl.dial(t, from(1))
	a.handshake()
	b := pl.dial(t, from(2))
	reserved := b.handshake()
	_ = b.conn.Close()
	eventually(t, wait, "the pool to take b's address back", func() bool { return h.leaseCount() == 1 })

	h.injectPanic("pool")
	eventually(t, wait, "the pool to restart", func() bool { return h.srv.Metrics().Failures(KindPool) == 1 })
	other := pl.dial(t, from(3))
	if got := other.handshake(); got == reserved {
		t.Fatalf("after the pool restarted a new client got %v, reserved for the client that left", got)
	}
	back := pl.dial(t, from(2))
	if got := back.handshake(); got != reserved {
		t.Fatalf("the returning client got %v, want its reserved %v", got, reserved)
	}
}

// A connection accepted just before the stop went out must be closed,
// never left open and unserved, nor become a session that the stop never
// reaches (Close would wait for its handshake timeout).
func TestConnectionsHandedOverAtStopAreClosed(t *testing.T) {
	sys := quietSystem()
	defer sys.Shutdown()
	sink := sys.Root.Spawn(actor.PropsFromFunc(func(actor.Context) {})) // ignores the ticks
	pl := newPipeListener()
	a := startAcceptor(pl, slog.New(slog.DiscardHandler), sys, sink)
	c := pl.dial(t, netip.MustParseAddrPort("[2001:db8::2]:4000"))
	a.stop()
	c.expectClosed(wait)
}

// Clients that connect while the server closes are all closed, and Close
// does not wait for any of them.
func TestCloseWhileClientsConnect(t *testing.T) {
	h, pl := newPipeHarness(t, func(c *Config) { c.HandshakeTimeout = time.Hour })
	var clients []*client
	dialing := make(chan struct{})
	go func() {
		defer close(dialing)
		for i := 0; ; i++ {
			srv, c := pl.pair(t, netip.AddrPortFrom(netip.MustParseAddr("2001:db8::2"), uint16(4000+i)))
			select {
			case pl.conns <- srv:
				clients = append(clients, c)
			case <-pl.closed:
				_ = srv.Close()
				return
			}
		}
	}()
	eventually(t, wait, "the first sessions", func() bool { return h.srv.Metrics().SessionsOpened.Load() >= 3 })
	h.closeWithin(2*wait, "Close waited for a session spawned after the stop")
	<-dialing
	for _, c := range clients {
		c.expectClosed(wait)
	}
}

// A service actor that keeps failing makes the server stop by itself and
// say so, after the pool saved the lease file; a failed Supervisor does
// the same.
func TestServerGivesUpOnRepeatedFailures(t *testing.T) {
	for _, tc := range []struct {
		kind  string
		times int
	}{
		{"router", restartLimit + 1},
		{"tun", restartLimit + 1},
		{"pool", restartLimit + 1},
		{"supervisor", 1},
	} {
		t.Run(tc.kind, func(t *testing.T) {
			leases := filepath.Join(t.TempDir(), "leases.json")
			h := newHarness(t, func(c *Config) { c.LeaseFile = leases })
			c := h.connect()
			for range tc.times {
				h.injectPanic(tc.kind)
			}
			var gaveUp *GaveUpError
			select {
			case err := <-h.srv.Failed():
				if !errors.As(err, &gaveUp) || gaveUp.Actor != tc.kind {
					t.Fatalf("Failed delivered %v, want the %s giving up", err, tc.kind)
				}
			case <-time.After(2 * wait):
				t.Fatalf("the server kept running after %d failures of the %s", tc.times, tc.kind)
			}
			c.expectClosed(wait)
			if err := h.srv.Close(); err != nil {
				t.Fatalf("Close after giving up: %v", err)
			}
			data, err := os.ReadFile(leases)
			if err != nil || !strings.Contains(string(data), c.addr.String()) {
				t.Fatalf("lease file after giving up: %q, %v; want %v in it", data, err, c.addr)
			}
			if err := h.srv.Health(); err == nil {
				t.Fatal("a server that gave up reports healthy")
			}
		})
	}
}

// /healthz asks each service actor and names the one that does not answer.
func TestHealthNamesTheActorThatDoesNotAnswer(t *testing.T) {
	dev := &gatedDevice{Device: tuntest.New("wedged0", 1500), gate: make(chan struct{})}
	h := newHarness(t, func(c *Config) { c.Device = dev })
	t.Cleanup(func() { close(dev.gate) }) // before Close: the engine must be able to stop
	if err := h.srv.Health(); err != nil {
		t.Fatalf("healthy engine reported: %v", err)
	}
	c := h.connect()
	c.send(wire.TypeDataRequest, ping(c.addr, inetHost, 1))
	eventually(t, wait, "the packet to reach the TUN actor", func() bool { return h.srv.Metrics().PacketsIn.Load() == 1 })
	err := h.srv.Health()
	if err == nil || !strings.Contains(err.Error(), "tun did not answer") {
		t.Fatalf("Health with a wedged TUN actor: %v, want it named", err)
	}
	for _, healthy := range []string{poolName, routerName} {
		if strings.Contains(err.Error(), healthy+" did not answer") {
			t.Fatalf("Health blamed %s too: %v", healthy, err)
		}
	}
}
