package actors

// The AddressPool's static reservations (the operator console's
// "reservations"): the allocator keeps the table; this file is the pool's
// side of it: the requests from Server (Reserve, Unreserve, Reservations,
// Pool, ReloadReservations), the conflict rules that need the lease table,
// and the writes of the reservations file.
//
// The file is written by a goroutine the pool owns (staticsWriter), one
// snapshot at a time and always the newest, so Receive never waits for a
// disk and no older snapshot can overwrite a newer one. A Reserve or
// Unreserve is answered once the snapshot holding it is on disk.

import (
	"fmt"
	"log/slog"
	"net/netip"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/4over6d/4over6d/messages"
)

// Requests from Server to the pool, and their answers. They are internal
// to the package: only Server sends them.
type (
	staticsQuery     struct{}
	poolStatsQuery   struct{}
	reserveRequest   struct{ static messages.Static }
	unreserveRequest struct{ client netip.Addr }
	// staticsReload replaces the whole set with the file's entries;
	// skipped is how many entries the file parser already dropped.
	staticsReload struct {
		statics []messages.Static
		skipped int
	}
	staticsAnswer struct{ statics []messages.Static }
	consoleReply  struct{ err error }
	reloadResult  struct{ applied, removed, skipped int }
)

// staticsState is the pool's part of the static reservations beyond the
// allocator's table.
type staticsState struct {
	queued  []pendingConsole // requests that arrived while recovering
	writer  *staticsWriter   // nil without a reservations file
	version uint64           // of the newest snapshot given to the writer
	waiting []awaitingSave   // Reserve/Unreserve answers due once saved
	seeded  bool             // LiveSessions gave this incarnation its table
}

type pendingConsole struct {
	msg   any
	reply *actor.PID
}

type awaitingSave struct {
	version uint64
	reply   *actor.PID
}

// onConsole serves a request from Server. While recovering, the lease
// table is partial (a conflict could be missed) and the static table may
// not have arrived yet, so requests wait for the end of recovery.
func (p *AddressPool) onConsole(ctx actor.Context, msg any, reply *actor.PID) {
	if p.recovering {
		p.statics.queued = append(p.statics.queued, pendingConsole{msg: msg, reply: reply})
		return
	}
	switch m := msg.(type) {
	case *staticsQuery:
		p.answer(ctx, reply, &staticsAnswer{statics: p.alloc.statics()})
	case *poolStatsQuery:
		p.answer(ctx, reply, p.poolStats())
	case *reserveRequest:
		p.reserve(ctx, m.static, reply)
	case *unreserveRequest:
		p.unreserve(ctx, m.client, reply)
	case *staticsReload:
		p.answer(ctx, reply, p.reload(ctx, m))
	}
}

// flushConsole serves the requests queued during recovery, in order.
func (p *AddressPool) flushConsole(ctx actor.Context) {
	queued := p.statics.queued
	p.statics.queued = nil
	for _, q := range queued {
		p.onConsole(ctx, q.msg, q.reply)
	}
}

func (p *AddressPool) answer(ctx actor.Context, to *actor.PID, msg any) {
	if to != nil {
		ctx.Send(to, msg)
	}
}

func (p *AddressPool) poolStats() PoolStats {
	a := p.alloc
	return PoolStats{Size: a.size, Leased: a.leased(), Reserved: len(a.static.byAddr), Free: a.size - a.leased() - a.staticIdle()}
}

func (p *AddressPool) reserve(ctx actor.Context, r messages.Static, reply *actor.PID) {
	err := checkStatic(p.cfg.Pool, r)
	if err == nil {
		err = p.staticConflict(r)
	}
	if err == nil && p.fl != nil {
		err = p.fl.bindingConflict(r)
	}
	if err != nil {
		p.cfg.Metrics.ReservationsRejected.Add(1)
		p.cfg.Logger.Warn("static reservation refused", slog.String("client", r.Client.String()),
			slog.String("addr", r.Addr.String()), slog.Any("err", err))
		p.answer(ctx, reply, &consoleReply{err: err})
		return
	}
	if p.fl != nil {
		p.fleetReserve(ctx, r, reply)
		return
	}
	p.applyStatic(ctx, r)
	p.cfg.Logger.Info("static reservation set", slog.String("client", r.Client.String()),
		slog.String("addr", r.Addr.String()), slog.String("rate", FormatRate(r.Rate)))
	p.saveStatics(ctx, reply)
}

func (p *AddressPool) unreserve(ctx actor.Context, client netip.Addr, reply *actor.PID) {
	if p.fl != nil {
		p.fleetUnreserve(ctx, client, reply)
		return
	}
	old, ok := p.alloc.removeStatic(client)
	if !ok {
		p.answer(ctx, reply, &consoleReply{err: fmt.Errorf("%w: %v", ErrNoReservation, client)})
		return
	}
	p.cfg.Metrics.PoolReserved.Store(int64(len(p.alloc.static.byAddr)))
	p.cfg.Logger.Info("static reservation removed", slog.String("client", old.Client.String()), slog.String("addr", old.Addr.String()))
	p.saveStatics(ctx, reply)
}

// staticConflict refuses a valid reservation that collides with another
// client: r.Addr reserved for it, or leased to one of its sessions now.
// The same client's own reservation or session is no conflict.
func (p *AddressPool) staticConflict(r messages.Static) error {
	client := staticKey(r.Client)
	if cur, ok := p.alloc.staticAt(r.Addr); ok && cur.Client != client {
		return fmt.Errorf("%w: %v is reserved for %v", ErrReservationConflict, r.Addr, cur.Client)
	}
	if owner, ok := p.alloc.holder(r.Addr); ok {
		if l := p.leases[owner]; staticKey(l.Client.Addr()) != client {
			return fmt.Errorf("%w: %v is leased now to %v", ErrReservationConflict, r.Addr, l.Client)
		}
	}
	return nil
}

// applyStatic records a checked reservation. A grace reservation of
// another client for the address gives way (logged), and the lease file,
// which holds grace reservations, is due for a write.
func (p *AddressPool) applyStatic(ctx actor.Context, r messages.Static) {
	if g, dropped := p.alloc.setStatic(r); dropped {
		p.logGraceDropped(g, r.Client)
		p.markDirty(ctx)
	}
	p.cfg.Metrics.PoolReserved.Store(int64(len(p.alloc.static.byAddr)))
}

func (p *AddressPool) logGraceDropped(g messages.Reservation, static netip.Addr) {
	p.cfg.Logger.Info("dropping grace reservation: the address is statically reserved for another client",
		slog.String("addr", g.Addr.String()), slog.String("grace_client", g.Client.String()), slog.String("static_client", static.String()))
}

// reload replaces the set with the file's entries. An entry whose address
// is leased now to another client's session is skipped (logged, counted);
// a reservation the file no longer has is removed. The file itself is
// left as the operator wrote it.
func (p *AddressPool) reload(ctx actor.Context, m *staticsReload) *reloadResult {
	before := p.alloc.statics()
	p.alloc.clearStatics()
	res := &reloadResult{skipped: m.skipped}
	for _, r := range m.statics {
		err := checkStatic(p.cfg.Pool, r)
		if err == nil {
			err = p.staticConflict(r)
		}
		if err != nil {
			res.skipped++
			p.cfg.Metrics.ReservationsRejected.Add(1)
			p.cfg.Logger.Warn("reservations reload: skipping entry", slog.String("client", r.Client.String()),
				slog.String("addr", r.Addr.String()), slog.Any("err", err))
			continue
		}
		p.applyStatic(ctx, r)
		res.applied++
	}
	for _, r := range before {
		if _, kept := p.alloc.staticFor(r.Client); !kept {
			res.removed++
			p.cfg.Logger.Info("reservations reload: removed", slog.String("client", r.Client.String()), slog.String("addr", r.Addr.String()))
		}
	}
	p.cfg.Metrics.PoolReserved.Store(int64(len(p.alloc.static.byAddr)))
	p.cfg.Logger.Info("reservations reloaded", slog.String("file", p.cfg.ReservationsFile),
		slog.Int("reservations", res.applied), slog.Int("removed", res.removed), slog.Int("skipped", res.skipped))
	if p.fl != nil {
		p.fleetReplaceStatics(ctx, p.alloc.statics(), false) // the file's table becomes the fleet's
	}
	return res
}

// seed gives a new incarnation its tables: the static reservations first,
// so that a grace reservation (from the lease file or a failed
// predecessor) of another client for a static address is dropped.
func (p *AddressPool) seed(ctx actor.Context, live *messages.LiveSessions) {
	for _, r := range live.Statics {
		if p.fl != nil && p.fl.view.staticsRev != 0 {
			break // the fleet's table came first, and it wins (pool_fleet_static.go)
		}
		p.alloc.setStatic(r)
	}
	for _, r := range live.Reservations {
		if s, ok := p.alloc.staticAt(r.Addr); ok && s.Client != staticKey(r.Client) {
			p.logGraceDropped(r, s.Client)
			p.markDirty(ctx)
			continue
		}
		p.alloc.reserve(r)
	}
	p.statics.seeded = true
	p.cfg.Metrics.PoolReserved.Store(int64(len(p.alloc.static.byAddr)))
}

// staticRate is the rate of client's reservation for LeaseGranted (0: the
// server's -rate-limit). It applies to every session of the client, also
// one that got another address because its reserved one was taken by the
// client's other session.
func (p *AddressPool) staticRate(client netip.Addr) uint64 {
	r, _ := p.alloc.staticFor(client)
	return r.Rate
}

// saveStatics hands the current set to the writer and answers reply once
// it is on disk; without a file, at once.
func (p *AddressPool) saveStatics(ctx actor.Context, reply *actor.PID) {
	if p.statics.writer == nil {
		p.answer(ctx, reply, &consoleReply{})
		return
	}
	p.statics.version++
	p.statics.writer.offer(staticsSnapshot{version: p.statics.version, statics: p.alloc.statics()})
	if reply != nil {
		p.statics.waiting = append(p.statics.waiting, awaitingSave{version: p.statics.version, reply: reply})
	}
}

// startStaticsWriter starts this incarnation's writer, if there is a file.
func (p *AddressPool) startStaticsWriter(ctx actor.Context) {
	if p.cfg.ReservationsFile == "" {
		return
	}
	self, sys := ctx.Self(), ctx.ActorSystem()
	p.statics.writer = startStaticsWriter(p.cfg.ReservationsFile, p.incarnation, func(m *staticsSaved) { sys.Root.Send(self, m) })
}

// onStaticsSaved answers the changes the saved snapshot holds.
func (p *AddressPool) onStaticsSaved(ctx actor.Context, m *staticsSaved) {
	if m.incarnation != p.incarnation {
		return // a predecessor's writer; its waiters were answered at its stop
	}
	p.answerSaved(ctx, m.version, m.err)
}

func (p *AddressPool) answerSaved(ctx actor.Context, version uint64, err error) {
	if err != nil {
		p.cfg.Logger.Error("failed to save reservations", slog.String("file", p.cfg.ReservationsFile), slog.Any("err", err))
		err = fmt.Errorf("the change is in effect, but saving it failed: %w", err)
	}
	rest := p.statics.waiting[:0]
	for _, w := range p.statics.waiting {
		if w.version <= version {
			p.answer(ctx, w.reply, &consoleReply{err: err})
		} else {
			rest = append(rest, w)
		}
	}
	p.statics.waiting = rest
}

// stopStaticsWriter lets the writer finish the newest snapshot, then
// answers whoever still waits for it.
func (p *AddressPool) stopStaticsWriter(ctx actor.Context) {
	if p.statics.writer == nil {
		return
	}
	last := p.statics.writer.stop()
	p.statics.writer = nil
	if len(p.statics.waiting) > 0 {
		p.answerSaved(ctx, last.version, last.err)
	}
}
