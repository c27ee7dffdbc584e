package actors

import (
	"log/slog"
	"net/netip"
	"sync/atomic"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/4over6d/4over6d/messages"
)

// defaultRecoveryWait bounds how long a fresh pool waits for live sessions
// to restate their leases before it serves new requests anyway.
const defaultRecoveryWait = 2 * time.Second

// AddressPool is the source of truth for leases. It watches every session
// it leased to, so an address comes back however the session ended, and it
// keeps the Router's map in step by sending it every change.
//
// Every incarnation starts in recovery: it asks the Supervisor for the
// live sessions, collects their LeaseClaims, and only then answers new
// LeaseRequests (queued meanwhile). After a crash this rebuilds the table
// without handing out an address twice. Reservations of clients that are
// gone survive a crash too: the failing incarnation hands them to the
// Supervisor (PoolHandover), which gives them to the next (LiveSessions).
type AddressPool struct {
	cfg         *shared
	incarnation uint64
	alloc       *allocator
	leases      map[string]messages.Lease // by session PID id
	awaiting    map[string]bool           // sessions yet to restate their lease
	pending     []pendingLease
	recovering  bool
	timer       *time.Timer
	dirty       bool // leases changed since the lease file was written
	saveTimer   *time.Timer
	statics     staticsState // see pool_static.go
	fl          *poolFleet   // fleet mode (pool_fleet.go); nil on a single node
}

type pendingLease struct {
	req    *messages.LeaseRequest
	sender *actor.PID
}

type (
	// recoveryTimeout ends the recovery of the incarnation that set it,
	// and of no other.
	recoveryTimeout struct{ incarnation uint64 }
	saveLeasesTick  struct{}
)

func (*recoveryTimeout) IgnoreDeadLetterLogging() {}
func (*saveLeasesTick) IgnoreDeadLetterLogging()  {}

func newAddressPool(cfg *shared) actor.Producer {
	var incarnations atomic.Uint64
	return func() actor.Actor {
		alloc := newAllocator(cfg.Pool, cfg.Grace)
		alloc.sourceBits = cfg.SourcePrefix
		return &AddressPool{
			cfg:         cfg,
			incarnation: incarnations.Add(1),
			alloc:       alloc,
			leases:      make(map[string]messages.Lease),
			awaiting:    make(map[string]bool),
		}
	}
}

// Receive handles one message; see the type comment for the protocol.
func (p *AddressPool) Receive(ctx actor.Context) {
	if p.onFleet(ctx, ctx.Message()) {
		return
	}
	switch m := ctx.Message().(type) {
	case *actor.Started:
		p.cfg.Metrics.PoolSize.Store(int64(p.alloc.size))
		p.startStaticsWriter(ctx)
		if p.cfg.Fleet != nil {
			p.startFleet(ctx)
		}
		p.startRecovery(ctx)
	case *messages.LiveSessions:
		p.expectClaims(ctx, m)
	case *messages.LeaseClaim:
		p.onClaim(ctx, m)
	case *recoveryTimeout:
		if p.recovering && m.incarnation == p.incarnation {
			p.cfg.Logger.Warn("address pool recovery timed out", slog.Int("sessions_missing", len(p.awaiting)))
			p.finishRecovery(ctx)
		}
	case *messages.LeaseRequest:
		if p.recovering {
			p.pending = append(p.pending, pendingLease{req: m, sender: ctx.Sender()})
			return
		}
		p.grant(ctx, m, ctx.Sender())
	case *staticsQuery, *poolStatsQuery, *reserveRequest, *unreserveRequest, *staticsReload:
		p.onConsole(ctx, m, ctx.Sender())
	case *staticsSaved:
		p.onStaticsSaved(ctx, m)
	case *actor.Terminated:
		p.onTerminated(ctx, m.Who)
	case *messages.RouteSync:
		ctx.Respond(p.routeTable())
	case *messages.LeasesQuery:
		ctx.Respond(p.table())
	case *messages.HealthCheck:
		ctx.Respond(&messages.Healthy{})
	case *messages.InjectPanic:
		panic("injected fault in address pool: " + m.Reason)
	case *saveLeasesTick:
		p.saveTimer = nil
		p.saveLeases()
	case *actor.Restarting:
		p.stop(ctx)
		ctx.Send(ctx.Parent(), &messages.PoolHandover{Reservations: p.reservations(), Statics: p.alloc.statics(), Seeded: p.statics.seeded})
	case *actor.Stopping:
		p.stop(ctx)
	}
}

func (p *AddressPool) stop(ctx actor.Context) {
	p.stopFleet()
	p.stopTimer()
	stopTimer(p.saveTimer)
	p.saveLeases()
	p.stopStaticsWriter(ctx)
}

func (p *AddressPool) reservations() []messages.Reservation {
	return p.alloc.reservations(time.Now())
}

func (p *AddressPool) startRecovery(ctx actor.Context) {
	p.recovering = true
	ctx.Send(ctx.Parent(), &messages.PoolStarted{})
	self, sys, tick := ctx.Self(), ctx.ActorSystem(), &recoveryTimeout{incarnation: p.incarnation}
	p.timer = time.AfterFunc(p.cfg.recoveryWait, func() { sys.Root.Send(self, tick) })
}

func (p *AddressPool) stopTimer() {
	if p.timer != nil {
		p.timer.Stop()
	}
}

func (p *AddressPool) expectClaims(ctx actor.Context, live *messages.LiveSessions) {
	p.seed(ctx, live)
	for _, s := range live.Sessions {
		if _, known := p.leases[s.Id]; !known {
			p.awaiting[s.Id] = true
			ctx.Watch(s)
		}
	}
	if len(p.awaiting) == 0 {
		p.finishRecovery(ctx)
	}
}

func (p *AddressPool) onClaim(ctx actor.Context, m *messages.LeaseClaim) {
	delete(p.awaiting, m.Session.Id)
	if m.Addr.IsValid() {
		if p.alloc.claim(m.Session.Id, m.Addr) {
			p.record(ctx, m.Session, m.Client, m.Addr, m.Inbox)
		} else {
			p.cfg.Logger.Error("lease claim conflicts with another session; closing the claimant",
				slog.String("addr", m.Addr.String()), slog.String("session", m.Session.Id))
			ctx.Stop(m.Session)
		}
	}
	if p.recovering && len(p.awaiting) == 0 {
		p.finishRecovery(ctx)
	}
}

func (p *AddressPool) finishRecovery(ctx actor.Context) {
	p.recovering = false
	p.stopTimer()
	clear(p.awaiting)
	ctx.Send(p.cfg.router, p.routeTable())
	if p.dirty {
		p.markDirty(ctx) // claims made while recovering were not saved
	}
	p.flushConsole(ctx) // before the leases: a reservation made meanwhile wins
	queued := p.pending
	p.pending = nil
	for _, q := range queued {
		p.grant(ctx, q.req, q.sender)
	}
	p.cfg.Logger.Debug("address pool ready", slog.Int("leases", len(p.leases)))
}

func (p *AddressPool) grant(ctx actor.Context, m *messages.LeaseRequest, reply *actor.PID) {
	if p.fl != nil {
		p.fleetGrant(ctx, m, reply)
		return
	}
	addr, ok := p.alloc.allocate(m.Session.Id, m.Client.Addr(), time.Now())
	if !ok {
		p.cfg.Metrics.LeaseDenials.Add(1)
		ctx.Send(reply, &messages.LeaseDenied{Reason: "address pool exhausted"})
		return
	}
	if _, known := p.leases[m.Session.Id]; !known {
		p.record(ctx, m.Session, m.Client, addr, m.Inbox)
	}
	ctx.Send(reply, &messages.LeaseGranted{Addr: addr, Rate: p.staticRate(m.Client.Addr())})
}

// record stores a lease, watches its session and tells the Router before
// anyone learns the address, so no packet for it can arrive unrouted.
func (p *AddressPool) record(ctx actor.Context, session *actor.PID, client netip.AddrPort, addr netip.Addr, inbox messages.Budget) {
	p.leases[session.Id] = messages.Lease{Addr: addr, Session: session, Client: client, Since: time.Now(), Inbox: inbox}
	p.cfg.Metrics.PoolLeased.Store(int64(len(p.leases)))
	p.markDirty(ctx)
	ctx.Watch(session)
	ctx.Send(p.cfg.router, &messages.RouteAdd{Addr: addr, Session: session, Inbox: inbox})
}

func (p *AddressPool) onTerminated(ctx actor.Context, who *actor.PID) {
	if p.recovering && p.awaiting[who.Id] {
		delete(p.awaiting, who.Id)
		if len(p.awaiting) == 0 {
			p.finishRecovery(ctx)
		}
	}
	lease, ok := p.leases[who.Id]
	if !ok {
		p.fleetTerminated(ctx, who, netip.Addr{})
		return
	}
	delete(p.leases, who.Id)
	p.cfg.Metrics.PoolLeased.Store(int64(len(p.leases)))
	p.alloc.release(who.Id, lease.Client.Addr(), time.Now())
	p.markDirty(ctx)
	ctx.Send(p.cfg.router, &messages.RouteDel{Addr: lease.Addr, Session: lease.Session})
	p.fleetTerminated(ctx, who, lease.Addr)
}

func (p *AddressPool) routeTable() *messages.RouteTable {
	t := &messages.RouteTable{Routes: make([]messages.RouteAdd, 0, len(p.leases))}
	for _, l := range p.leases {
		t.Routes = append(t.Routes, messages.RouteAdd{Addr: l.Addr, Session: l.Session, Inbox: l.Inbox})
	}
	return t
}

func (p *AddressPool) table() *messages.LeaseTable {
	t := &messages.LeaseTable{Leases: make([]messages.Lease, 0, len(p.leases)), Size: p.alloc.size}
	for _, l := range p.leases {
		t.Leases = append(t.Leases, l)
	}
	return t
}

// markDirty schedules a lease-file write, at most one per leaseSaveEvery.
func (p *AddressPool) markDirty(ctx actor.Context) {
	if p.cfg.LeaseFile == "" {
		return
	}
	p.dirty = true
	if p.saveTimer == nil {
		self, sys := ctx.Self(), ctx.ActorSystem()
		p.saveTimer = time.AfterFunc(leaseSaveEvery, func() { sys.Root.Send(self, &saveLeasesTick{}) })
	}
}

// saveLeases writes the lease file if anything changed. It runs on the
// pool's own goroutine: the write is small and rate-limited, and a single
// writer means no older snapshot can overwrite a newer one.
//
// A recovering pool does not write: its table is still partial, and the
// file holds its predecessor's complete one.
func (p *AddressPool) saveLeases() {
	if p.cfg.LeaseFile == "" || !p.dirty || p.recovering {
		return
	}
	now := time.Now()
	recs := make([]leaseRecord, 0, len(p.leases))
	for _, l := range p.leases {
		if l.Client.Addr().IsValid() {
			recs = append(recs, leaseRecord{Client: l.Client.Addr(), Addr: l.Addr})
		}
	}
	for _, r := range p.alloc.reservations(now) {
		recs = append(recs, leaseRecord{Client: r.Client, Addr: r.Addr, Until: r.Until})
	}
	if err := saveLeaseFile(p.cfg.LeaseFile, recs, now); err != nil {
		p.cfg.Logger.Error("failed to save leases", slog.String("file", p.cfg.LeaseFile), slog.Any("err", err))
		return
	}
	p.dirty = false
}
