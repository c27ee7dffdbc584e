package actors

// The static reservations of a fleet. In a fleet the operator's table is
// one record in etcd (the statics key), so a reservation made on any
// node applies on every node: each node's allocator mirrors the record
// from the watch, and a change made on the console is a transaction that
// compares the record's revision. A change that lost a race to another
// node's is computed again from the winner's table, so neither is lost.
// The reservations file, when there is one, is this node's copy of the
// table: it seeds the record when the fleet has none yet, and is
// rewritten whenever the record changes.
//
// The whole table in one record keeps every change atomic (one client,
// one address, both checked in one place); etcd's request limit (1.5 MiB
// by default) bounds it to some ten thousand reservations.

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/4over6d/4over6d/messages"
)

// staticsMaxAttempts bounds how often one change is computed again after
// losing a race: more means another node keeps rewriting the table.
const staticsMaxAttempts = 5

// errStaticsUnchanged says a change has nothing to write.
var errStaticsUnchanged = errors.New("unchanged")

// staticsChange is one change to the fleet's table, waiting its turn:
// one transaction is in flight at a time, so each compares the revision
// the previous one wrote.
type staticsChange struct {
	// next computes the new table from etcd's current one; it returns
	// errStaticsUnchanged when there is nothing to write.
	next     func(cur []messages.Static) ([]messages.Static, error)
	done     func() // logs the change once it is in etcd
	reply    *actor.PID
	reload   bool // the file's table, from a SIGHUP
	attempts int
}

// fleetStatics is the pool's side of the table.
type fleetStatics struct {
	queue  []*staticsChange
	busy   bool // queue[0]'s transaction is in flight
	seeded bool // the first snapshot was compared with the file's table
	broken bool // the record in etcd does not parse: nothing is written over it
}

// bindingConflict refuses a reservation of an address another node has
// bound to another client: its session, or the grace after it. Whether
// that node is alive does not matter: one cut off from etcd may still
// serve the session while its registration is gone.
func (fl *poolFleet) bindingConflict(r messages.Static) error {
	b, bound := fl.view.bindings[r.Addr]
	if !bound || b.Node == fl.me || staticKey(b.client) == staticKey(r.Client) {
		return nil
	}
	return fmt.Errorf("%w: %v is bound to %v on node %s (a session, or its grace after it)",
		ErrReservationConflict, r.Addr, b.client, b.Node)
}

// staticBindable is the allocator's filter for a client's own static
// address: it may lie outside our blocks (reconcile claims it as a /32),
// but not be bound by another node (alive or not: a node cut off from
// etcd may still serve it; the client's own binding there is moved or
// taken over by the sticky path, which checks the node is gone) nor be
// promised to one.
func (fl *poolFleet) staticBindable(a netip.Addr) bool {
	if _, promised := fl.handing[a]; promised {
		return false
	}
	b, bound := fl.view.bindings[a]
	return !bound || b.Node == fl.me
}

func (p *AddressPool) fleetReserve(ctx actor.Context, r messages.Static, reply *actor.PID) {
	r.Client = staticKey(r.Client)
	p.queueStatics(ctx, &staticsChange{reply: reply,
		next: func(cur []messages.Static) ([]messages.Static, error) {
			out := make([]messages.Static, 0, len(cur)+1)
			for _, s := range cur {
				switch {
				case s == r:
					return nil, errStaticsUnchanged
				case s.Addr == r.Addr && staticKey(s.Client) != r.Client:
					return nil, fmt.Errorf("%w: %v is reserved for %v", ErrReservationConflict, r.Addr, s.Client)
				case staticKey(s.Client) != r.Client:
					out = append(out, s)
				}
			}
			return sortStatics(append(out, r)), nil
		},
		done: func() {
			p.cfg.Logger.Info("static reservation set (fleet-wide)", slog.String("client", r.Client.String()),
				slog.String("addr", r.Addr.String()), slog.String("rate", FormatRate(r.Rate)))
		}})
}

func (p *AddressPool) fleetUnreserve(ctx actor.Context, client netip.Addr, reply *actor.PID) {
	client = staticKey(client)
	p.queueStatics(ctx, &staticsChange{reply: reply,
		next: func(cur []messages.Static) ([]messages.Static, error) {
			out := slices.DeleteFunc(slices.Clone(cur), func(s messages.Static) bool { return staticKey(s.Client) == client })
			if len(out) == len(cur) {
				return nil, fmt.Errorf("%w: %v", ErrNoReservation, client)
			}
			return out, nil
		},
		done: func() {
			p.cfg.Logger.Info("static reservation removed (fleet-wide)", slog.String("client", client.String()))
		}})
}

// fleetReplaceStatics makes table the fleet's (a reload of the file, or
// the file seeding a fleet that has no table yet when onlyIfNone).
func (p *AddressPool) fleetReplaceStatics(ctx actor.Context, table []messages.Static, onlyIfNone bool) {
	table = sortStatics(slices.Clone(table))
	p.queueStatics(ctx, &staticsChange{reload: !onlyIfNone,
		next: func(cur []messages.Static) ([]messages.Static, error) {
			if slices.Equal(cur, table) || (onlyIfNone && p.fl.view.staticsRev != 0) {
				return nil, errStaticsUnchanged
			}
			return table, nil
		},
		done: func() {
			p.cfg.Logger.Info("fleet: this node's reservations are now the fleet's", slog.Int("reservations", len(table)))
		}})
}

func sortStatics(t []messages.Static) []messages.Static {
	slices.SortFunc(t, func(x, y messages.Static) int { return x.Client.Compare(y.Client) })
	return t
}

func (p *AddressPool) queueStatics(ctx actor.Context, c *staticsChange) {
	p.fl.statics.queue = append(p.fl.statics.queue, c)
	p.nextStatics(ctx)
}

// nextStatics starts the first queued change, unless one is in flight.
func (p *AddressPool) nextStatics(ctx actor.Context) {
	fl := p.fl
	for !fl.statics.busy && len(fl.statics.queue) > 0 {
		c := fl.statics.queue[0]
		if fl.readOnly || !fl.loaded {
			p.endStatics(ctx, fmt.Errorf("reservations cannot change now: %w", ErrFleetUnavailable))
			continue
		}
		if fl.statics.broken {
			p.endStatics(ctx, fmt.Errorf("reservations cannot change: the fleet's record %s in etcd does not parse (fix or delete it)", fl.f.keys.statics()))
			continue
		}
		table, err := c.next(sortStatics(slices.Clone(fl.view.statics)))
		if err != nil {
			if errors.Is(err, errStaticsUnchanged) {
				err = nil
			}
			p.endStatics(ctx, err)
			continue
		}
		fl.statics.busy = true
		if !p.submit(ctx, &fleetOp{kind: opStatics, statics: table, prev: fl.view.staticsRev}) {
			fl.statics.busy = false
			p.endStatics(ctx, fmt.Errorf("reservations cannot change now: %w (too many transactions queued)", ErrFleetUnavailable))
		}
	}
}

// endStatics answers the first queued change and drops it.
func (p *AddressPool) endStatics(ctx actor.Context, err error) {
	q := &p.fl.statics.queue
	c := (*q)[0]
	*q = (*q)[1:]
	if err != nil {
		p.cfg.Metrics.ReservationsRejected.Add(1)
		p.cfg.Logger.Warn("static reservation change refused", slog.Any("err", err))
	}
	p.answer(ctx, c.reply, &consoleReply{err: err})
	if err != nil && c.reload {
		// A refused reload: the allocator goes back to the fleet's table;
		// the file keeps the operator's entries for the next reload.
		p.cfg.Logger.Error("reservations reload not applied: the fleet's table stays in effect; the file keeps its entries, reload again once etcd is back", slog.Any("err", err))
		p.restoreStatics(ctx)
	}
}

// onStaticsWritten ends a table transaction: written, the change is in
// effect here at once (the watch brings it to the others); beaten by
// another node's change, it is computed again from that one.
func (p *AddressPool) onStaticsWritten(ctx actor.Context, op *fleetOp) {
	fl := p.fl
	fl.statics.busy = false
	if len(fl.statics.queue) == 0 {
		return
	}
	c := fl.statics.queue[0]
	switch {
	case op.err != nil:
		p.endStatics(ctx, fmt.Errorf("writing the reservations to etcd failed; nothing changed: %w: %w", ErrFleetUnavailable, op.err))
	case op.ok:
		if op.rev > fl.view.staticsRev { // else the watch brought a newer table first
			fl.view.statics, fl.view.staticsRev = op.statics, op.rev
		}
		fl.statics.queue = fl.statics.queue[1:]
		c.done()
		p.mirrorStatics(ctx, c.reply)
	default:
		p.applyAnswer(op)
		p.mirrorStatics(ctx, nil)
		if c.attempts++; c.attempts >= staticsMaxAttempts {
			p.endStatics(ctx, fmt.Errorf("the fleet's reservations kept changing under this change; try again"))
		}
	}
	p.nextStatics(ctx)
}

// mirrorStatics makes the allocator's table the fleet's and writes the
// file copy; reply, if any, is answered once the file holds it. While the
// fleet has no table at all, this node's own (its file's) stays, to seed
// the fleet as soon as etcd takes it.
func (p *AddressPool) mirrorStatics(ctx actor.Context, reply *actor.PID) {
	if !p.restoreStatics(ctx) {
		p.answer(ctx, reply, &consoleReply{})
		return
	}
	p.saveStatics(ctx, reply)
}

// restoreStatics makes the allocator's table the fleet's, if there is one
// and it differs; it reports whether it changed anything.
func (p *AddressPool) restoreStatics(ctx actor.Context) bool {
	want := p.fl.view.statics
	if p.fl.view.staticsRev == 0 || slices.Equal(p.alloc.statics(), sortStatics(slices.Clone(want))) {
		return false
	}
	p.alloc.clearStatics()
	for _, r := range want {
		p.applyStatic(ctx, r)
	}
	return true
}

// onStaticsLoaded runs after every snapshot: the first one decides
// between the fleet's table and this node's file (etcd's wins; the file
// seeds a fleet that has none).
func (p *AddressPool) onStaticsLoaded(ctx actor.Context) {
	fl := p.fl
	if !fl.statics.seeded {
		fl.statics.seeded = true
		local := p.alloc.statics()
		if fl.view.staticsRev != 0 && len(local) > 0 && !slices.Equal(local, sortStatics(slices.Clone(fl.view.statics))) {
			p.cfg.Logger.Warn("fleet: the fleet's reservations in etcd replace this node's reservations file",
				slog.Int("file", len(local)), slog.Int("fleet", len(fl.view.statics)))
		}
	}
	p.mirrorStatics(ctx, nil)
	p.seedStatics(ctx)
	p.nextStatics(ctx)
}

// seedStatics offers this node's table to a fleet that has none; the
// fleet tick calls it again until one is there (etcd may refuse at first).
func (p *AddressPool) seedStatics(ctx actor.Context) {
	fl := p.fl
	if fl.view.staticsRev != 0 || fl.statics.broken || fl.statics.busy || len(fl.statics.queue) > 0 || fl.readOnly {
		return
	}
	if local := p.alloc.statics(); len(local) > 0 {
		p.fleetReplaceStatics(ctx, local, true)
	}
}
