package actors

import (
	"encoding/json"
	"errors"
	"net"
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

// Engine tests of static reservations (Server.Reserve and friends): real
// TCP on ::1 and the fake TUN, plus sessions faked at the pool for
// clients on other IPv6 addresses (the loopback has only ::1).

var smallPool = netip.MustParsePrefix("192.0.2.0/29") // .2 to .6: 5 leasable

// host returns 2001:db8::n, a client address other than ::1.
func host(n byte) netip.Addr { return netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 15: n}) }

func withPool(p netip.Prefix) func(*Config) { return func(c *Config) { c.Pool = p } }

// fakeLease asks the pool for an address as a session of client would;
// the "session" is an idle actor that lives until the test ends, so the
// lease stays. It returns the answer (LeaseGranted or LeaseDenied).
func (h *harness) fakeLease(client netip.Addr) any {
	h.t.Helper()
	pid := h.srv.system.Root.Spawn(actor.PropsFromFunc(func(actor.Context) {}))
	res, err := h.srv.system.Root.RequestFuture(h.srv.cfg.pool,
		&messages.LeaseRequest{Session: pid, Client: netip.AddrPortFrom(client, 4000)}, wait).Result()
	if err != nil {
		h.t.Fatalf("lease for %v: %v", client, err)
	}
	return res
}

func (h *harness) granted(client netip.Addr) *messages.LeaseGranted {
	h.t.Helper()
	g, ok := h.fakeLease(client).(*messages.LeaseGranted)
	if !ok {
		h.t.Fatalf("no lease for %v", client)
	}
	return g
}

func (h *harness) reserve(client, addr netip.Addr, rate uint64) {
	h.t.Helper()
	if err := h.srv.Reserve(messages.Static{Client: client, Addr: addr, Rate: rate}); err != nil {
		h.t.Fatalf("Reserve(%v -> %v): %v", client, addr, err)
	}
}

func (h *harness) poolStats() PoolStats {
	h.t.Helper()
	st, err := h.srv.Pool()
	if err != nil {
		h.t.Fatal(err)
	}
	return st
}

func (h *harness) statics() []messages.Static {
	h.t.Helper()
	rs, err := h.srv.Reservations()
	if err != nil {
		h.t.Fatal(err)
	}
	return rs
}

// A reserved address is never leased to anyone else, even when every
// other address is taken; its client gets it, with its rate.
func TestReservedAddressIsNeverLeasedToOthers(t *testing.T) {
	h := newHarness(t, withPool(smallPool))
	reserved := netip.MustParseAddr("192.0.2.5")
	h.reserve(host(0x11), reserved, 20e6)
	if st := h.poolStats(); st != (PoolStats{Size: 5, Leased: 0, Reserved: 1, Free: 4}) {
		t.Fatalf("pool = %+v before any session", st)
	}
	for i := range 4 {
		if c := h.connect(); c.addr == reserved {
			t.Fatalf("session %d from ::1 got %v, reserved for %v", i, reserved, host(0x11))
		}
	}
	if st := h.poolStats(); st != (PoolStats{Size: 5, Leased: 4, Reserved: 1, Free: 0}) {
		t.Fatalf("pool = %+v with the rest taken", st)
	}
	late := h.dial()
	late.send(wire.TypeIPRequest, nil)
	late.expectClosed(wait) // lease denied: the reserved address is not lent
	if got := h.srv.Metrics().LeaseDenials.Load(); got != 1 {
		t.Fatalf("lease denials = %d, want 1", got)
	}
	g := h.granted(host(0x11))
	if g.Addr != reserved || g.Rate != 20e6 {
		t.Fatalf("the reserved client got %+v, want %v at 20 Mbit/s", g, reserved)
	}
	if st := h.poolStats(); st != (PoolStats{Size: 5, Leased: 5, Reserved: 1, Free: 0}) {
		t.Fatalf("pool = %+v with everything leased", st)
	}
}

// The reserved client gets its address over a real connection; a client
// that already has a session keeps its address, and the reservation
// applies at its next lease.
func TestReservedClientGetsItsAddress(t *testing.T) {
	h := newHarness(t)
	first := h.connect()
	reserved := netip.MustParseAddr("192.0.2.200")
	h.reserve(netip.IPv6Loopback(), reserved, 0)
	if first.addr == reserved {
		t.Fatalf("the first session already had %v", reserved)
	}
	if got := h.connect().addr; got != reserved {
		t.Fatalf("the next session of ::1 got %v, want its reserved %v", got, reserved)
	}
	if got := h.connect().addr; got == reserved {
		t.Fatalf("a third session of ::1 got %v too", got)
	}
	routes, err := h.srv.Routes()
	if err != nil || routes.Routes[first.addr] == nil {
		t.Fatalf("the first session lost its address %v: %v", first.addr, err)
	}
	if g := h.granted(host(0x12)); g.Rate != 0 || g.Addr == reserved {
		t.Fatalf("a client without a reservation got %+v", g)
	}
}

func TestReserveRefusals(t *testing.T) {
	h := newHarness(t)
	taken := h.granted(host(0x12)).Addr // leased to 2001:db8::12's session
	own := h.granted(host(0x13)).Addr   // leased to 2001:db8::13's session
	h.reserve(host(0x14), staticY, 0)
	tests := []struct {
		name string
		r    messages.Static
		want error // nil: accepted
		msg  string
	}{
		{"outside the pool", messages.Static{Client: host(0x11), Addr: netip.MustParseAddr("198.51.100.7")}, ErrBadReservation, "outside the pool"},
		{"the server's own", messages.Static{Client: host(0x11), Addr: serverAddr}, ErrBadReservation, "server's own"},
		{"the network", messages.Static{Client: host(0x11), Addr: netip.MustParseAddr("192.0.2.0")}, ErrBadReservation, "network"},
		{"the broadcast", messages.Static{Client: host(0x11), Addr: netip.MustParseAddr("192.0.2.255")}, ErrBadReservation, "broadcast"},
		{"IPv4 client", messages.Static{Client: netip.MustParseAddr("198.51.100.7"), Addr: staticX}, ErrBadReservation, "IPv4 address"},
		{"IPv4-mapped client", messages.Static{Client: netip.MustParseAddr("::ffff:198.51.100.7"), Addr: staticX}, ErrBadReservation, "IPv4-mapped"},
		{"IPv6 addr", messages.Static{Client: host(0x11), Addr: netip.MustParseAddr("2001:db8::50")}, ErrBadReservation, "not an IPv4"},
		{"no addr", messages.Static{Client: host(0x11)}, ErrBadReservation, "no IPv4"},
		{"reserved for another client", messages.Static{Client: host(0x11), Addr: staticY}, ErrReservationConflict, "reserved for 2001:db8::14"},
		{"leased to another client", messages.Static{Client: host(0x11), Addr: taken}, ErrReservationConflict, "leased now to [2001:db8::12]:4000"},
		{"leased to the same client", messages.Static{Client: host(0x13), Addr: own}, nil, ""},
		{"replacing the client's own", messages.Static{Client: host(0x14), Addr: staticX, Rate: 8e6}, nil, ""},
	}
	refused := 0
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := h.srv.Reserve(tc.r)
			if tc.want == nil {
				if err != nil {
					t.Fatalf("Reserve: %v", err)
				}
				return
			}
			refused++
			if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("Reserve = %v, want %v mentioning %q", err, tc.want, tc.msg)
			}
		})
	}
	if got := h.srv.Metrics().ReservationsRejected.Load(); got != uint64(refused) {
		t.Fatalf("rejected = %d, want %d", got, refused)
	}
	want := []messages.Static{{Client: host(0x13), Addr: own}, {Client: host(0x14), Addr: staticX, Rate: 8e6}}
	if got := h.statics(); len(got) != 2 || got[0] != want[0] || got[1] != want[1] {
		t.Fatalf("reservations = %+v, want %+v (nothing of the refusals)", got, want)
	}
	if g := h.granted(host(0x11)); g.Addr == staticX {
		t.Fatalf("another client got %v, now reserved for 2001:db8::14", g.Addr)
	}
	if err := h.srv.Unreserve(host(0x11)); !errors.Is(err, ErrNoReservation) {
		t.Fatalf("Unreserve of a client without one = %v, want ErrNoReservation", err)
	}
	if err := h.srv.Unreserve(host(0x14)); err != nil {
		t.Fatal(err)
	}
	if err := h.srv.Reserve(messages.Static{Client: host(0x11), Addr: staticX}); err != nil {
		t.Fatalf("the unreserved %v is still refused: %v", staticX, err)
	}
}

// A static reservation made now wins over another client's grace
// reservation of the address: the client that left does not get it back.
func TestStaticWinsOverGraceReservation(t *testing.T) {
	h, pl := newPipeHarness(t)
	from := func(n byte) netip.AddrPort { return netip.AddrPortFrom(host(n), 40000) }
	leaver := pl.dial(t, from(2))
	addr := leaver.handshake()
	_ = leaver.conn.Close()
	eventually(t, wait, "the pool to take the address back", func() bool { return h.leaseCount() == 0 })
	h.reserve(host(1), addr, 0)
	if got := pl.dial(t, from(2)).handshake(); got == addr {
		t.Fatalf("the client that left got %v back, now reserved for %v", addr, host(1))
	}
	if got := pl.dial(t, from(1)).handshake(); got != addr {
		t.Fatalf("the reserved client got %v, want %v", got, addr)
	}
}

// Reservations are in the file when Reserve returns, and a restarted
// engine reads them: the reserved client gets its address, nobody else
// does, and the lease file's memory of another client holding it loses.
func TestReservationsSurviveRestart(t *testing.T) {
	dir := t.TempDir()
	resv, leases := filepath.Join(dir, "reservations.json"), filepath.Join(dir, "leases.json")
	files := func(c *Config) { c.Pool, c.ReservationsFile, c.LeaseFile = smallPool, resv, leases }
	reserved := netip.MustParseAddr("192.0.2.6")

	h := newHarness(t, files)
	h.reserve(host(0x11), netip.MustParseAddr("192.0.2.4"), 0)
	h.reserve(host(0x12), netip.MustParseAddr("192.0.2.5"), 0)
	if err := h.srv.Unreserve(host(0x12)); err != nil {
		t.Fatal(err)
	}
	h.reserve(host(0x11), reserved, 500e3) // replaces .4
	onDisk, err := loadReservationsFile(resv, smallPool)
	if err != nil || len(onDisk) != 1 || onDisk[0] != (messages.Static{Client: host(0x11), Addr: reserved, Rate: 500e3}) {
		t.Fatalf("file right after Reserve: %+v, %v", onDisk, err)
	}
	if err := h.srv.Close(); err != nil {
		t.Fatal(err)
	}

	// Make the lease file say ::1 held the reserved address, as if the
	// reservation had been added to the file while the server was down.
	if err := saveLeaseFile(leases, []leaseRecord{{Client: netip.IPv6Loopback(), Addr: reserved}}, time.Now()); err != nil {
		t.Fatal(err)
	}
	h2 := newHarness(t, files)
	if got := h2.statics(); len(got) != 1 || got[0] != onDisk[0] {
		t.Fatalf("after the restart: %+v, want %+v", got, onDisk)
	}
	for i := range 4 {
		if c := h2.connect(); c.addr == reserved {
			t.Fatalf("session %d from ::1 got %v, reserved for %v (the lease file's grace must give way)", i, reserved, host(0x11))
		}
	}
	// The grace reservation that gave way is gone for good: the lease
	// file, saved once the four leases are in, no longer keeps it.
	var saved leaseFile
	eventually(t, wait, "the lease file to list the four leases", func() bool {
		data, err := os.ReadFile(leases)
		saved = leaseFile{}
		return err == nil && json.Unmarshal(data, &saved) == nil && len(saved.Leases) >= 4
	})
	for _, r := range saved.Leases {
		if r.Addr == reserved {
			t.Fatalf("the lease file still keeps %v for %v: %+v", reserved, r.Client, saved.Leases)
		}
	}
	if g := h2.granted(host(0x11)); g.Addr != reserved || g.Rate != 500e3 {
		t.Fatalf("the reserved client got %+v after the restart", g)
	}
}

func TestBadReservationsFileStopsStart(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "reservations.json")
	content := `{"reservations": [{"client": "2001:db8::11", "addr": "192.0.2.50"}, {"client": "2001:db8::12", "addr": "192.0.2.50"}]}`
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct{ name, file, want string }{
		{"duplicate address", path, "entry 2"},
		{"directory missing", filepath.Join(dir, "nope", "reservations.json"), "does not exist"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ln, err := net.Listen("tcp6", "[::1]:0")
			if err != nil {
				t.Skipf("no IPv6 loopback: %v", err)
			}
			defer ln.Close()
			srv, err := Start(Config{Listener: ln, Device: tuntest.New("fake0", 1500), Pool: testPool, DNS: testDNS, ReservationsFile: tc.file})
			if err == nil {
				_ = srv.Close()
				t.Fatal("Start accepted the file")
			}
			if !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), tc.file) {
				t.Fatalf("Start = %v, want an error naming %s and %q", err, tc.file, tc.want)
			}
		})
	}
}

// A reload makes the file's entries the set: removed ones go, bad ones and
// ones whose address another client holds now are skipped; a file that
// cannot be read keeps the set as it is.
func TestReloadReservations(t *testing.T) {
	path := filepath.Join(t.TempDir(), "reservations.json")
	write := func(s string) {
		if err := os.WriteFile(path, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(`{"reservations": [{"client": "2001:db8::11", "addr": "192.0.2.50"}, {"client": "2001:db8::12", "addr": "192.0.2.51"}]}`)
	h := newHarness(t, func(c *Config) { c.ReservationsFile = path })
	holder := h.connect() // ::1 holds an address now
	reload := `{"reservations": [
		{"client": "2001:db8::12", "addr": "192.0.2.51", "rate": "1mbit"},
		{"client": "2001:db8::13", "addr": "` + holder.addr.String() + `"},
		{"client": "2001:db8::14", "addr": "192.0.2.1"},
		{"client": "::1", "addr": "192.0.2.60"}
	]}`
	write(reload)
	if err := h.srv.ReloadReservations(); err != nil {
		t.Fatal(err)
	}
	want := []messages.Static{{Client: netip.IPv6Loopback(), Addr: netip.MustParseAddr("192.0.2.60")}, {Client: host(0x12), Addr: staticY, Rate: 1e6}}
	got := h.statics()
	if len(got) != 2 || got[0] != want[0] || got[1] != want[1] {
		t.Fatalf("after the reload: %+v, want %+v", got, want)
	}
	if n := h.srv.Metrics().ReservationsRejected.Load(); n != 2 {
		t.Fatalf("rejected = %d, want 2 (the server's address and the address in use)", n)
	}
	if data, _ := os.ReadFile(path); string(data) != reload {
		t.Fatalf("the reload rewrote the file:\n%s", data)
	}
	if g := h.granted(host(0x20)); g.Addr == netip.MustParseAddr("192.0.2.60") {
		t.Fatalf("another client got %v", g.Addr)
	}
	if got := h.connect().addr; got.String() != "192.0.2.60" {
		t.Fatalf("::1's next session got %v, want 192.0.2.60 from the reload", got)
	}
	if err := h.srv.Reserve(messages.Static{Client: host(0x11), Addr: staticX}); err != nil {
		t.Fatalf("the removed reservation's address is still taken: %v", err)
	}

	for name, content := range map[string]string{"garbage": "{broken", "unknown field": `{"reservations": [], "extra": 1}`} {
		write(content)
		if err := h.srv.ReloadReservations(); err == nil {
			t.Fatalf("reload of a %s file succeeded", name)
		}
	}
	_ = os.Remove(path)
	if err := h.srv.ReloadReservations(); err == nil {
		t.Fatal("reload of a missing file succeeded")
	}
	if got := h.statics(); len(got) != 3 {
		t.Fatalf("a failed reload changed the set: %+v", got)
	}
}

// A failed save is reported, but the reservation is in effect: the
// caller must not believe it was refused.
func TestReserveReportsAFailedSave(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	h := newHarness(t, func(c *Config) { c.ReservationsFile = filepath.Join(dir, "reservations.json") })
	if err := os.Remove(dir); err != nil {
		t.Fatal(err)
	}
	err := h.srv.Reserve(messages.Static{Client: host(0x11), Addr: staticX})
	if err == nil || errors.Is(err, ErrBadReservation) || errors.Is(err, ErrReservationConflict) {
		t.Fatalf("Reserve = %v, want a save error", err)
	}
	if got := h.statics(); len(got) != 1 {
		t.Fatalf("reservations = %+v, want the one in effect", got)
	}
}

// Static reservations survive a crash of the pool: the failing
// incarnation hands them over and the next one enforces them.
func TestStaticsSurvivePoolRestart(t *testing.T) {
	h := newHarness(t, withPool(smallPool))
	reserved := netip.MustParseAddr("192.0.2.2") // the first address a newcomer would get
	h.reserve(host(0x11), reserved, 0)
	h.injectPanic("pool")
	eventually(t, wait, "the pool to restart", func() bool { return h.srv.Metrics().Failures(KindPool) == 1 })
	if got := h.statics(); len(got) != 1 || got[0].Addr != reserved {
		t.Fatalf("after the pool restarted: %+v", got)
	}
	if got := h.connect().addr; got == reserved {
		t.Fatalf("a newcomer got %v after the pool restarted", got)
	}
	if g := h.granted(host(0x11)); g.Addr != reserved {
		t.Fatalf("the reserved client got %v", g.Addr)
	}
}

// handoverParent spawns a pool, never answers PoolStarted, and passes on
// the pool's handovers.
type handoverParent struct {
	cfg       *shared
	started   chan struct{}
	handovers chan *messages.PoolHandover
}

func (p *handoverParent) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *actor.Started:
		if _, err := ctx.SpawnNamed(actor.PropsFromProducer(newAddressPool(p.cfg)), poolName); err != nil {
			panic(err)
		}
	case *messages.PoolStarted:
		p.started <- struct{}{}
	case *messages.PoolHandover:
		p.handovers <- m
	}
}

// A pool that fails before it learnt its tables says so: its empty lists
// must not replace the Supervisor's, or the reservations would be lost.
func TestUnseededPoolHandoverIsMarked(t *testing.T) {
	sys := quietSystem()
	defer sys.Shutdown()
	cfg := newShared(Config{Pool: testPool, Device: tuntest.New("pool0", 1500), Metrics: &Metrics{}}.withDefaults(), sys, "parent")
	cfg.recoveryWait = time.Hour
	parent := &handoverParent{cfg: cfg, started: make(chan struct{}, 2), handovers: make(chan *messages.PoolHandover, 2)}
	if _, err := sys.Root.SpawnNamed(actor.PropsFromProducer(func() actor.Actor { return parent }), "parent"); err != nil {
		t.Fatal(err)
	}
	<-parent.started
	sys.Root.Send(cfg.pool, &messages.InjectPanic{Reason: "before LiveSessions"})
	select {
	case m := <-parent.handovers:
		if m.Seeded {
			t.Fatalf("handover %+v claims a table the pool never had", m)
		}
	case <-time.After(wait):
		t.Fatal("no handover")
	}
	<-parent.started
	sys.Root.Send(cfg.pool, &messages.LiveSessions{Statics: []messages.Static{{Client: clientA, Addr: staticX}}})
	sys.Root.Send(cfg.pool, &messages.InjectPanic{Reason: "after LiveSessions"})
	select {
	case m := <-parent.handovers:
		if !m.Seeded || len(m.Statics) != 1 || m.Statics[0].Addr != staticX {
			t.Fatalf("handover %+v, want the seeded statics", m)
		}
	case <-time.After(wait):
		t.Fatal("no second handover")
	}
}
