package actors

import (
	"cmp"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/4over6d/4over6d/messages"
)

// The AddressPool's fleet mode. The pool stays the only allocator of its
// node; etcd decides who may have an address (fleet_keys.go), and the
// pool's view of etcd (fleet_view.go) only picks candidates. A lease
// request becomes a wait that advances by transactions the agent runs
// (fleet_agent.go, fleet_ops.go) and by watch events:
//
//	sticky:   the client's binding is ours   -> bind (revision-checked) -> grant
//	          held by a live node            -> move request; the holder closes its
//	                                            session (moved) and rebinds to us -> grant
//	          held by a dead node            -> takeover (the dead node's registration
//	                                            must be gone) + /32 claim -> grant
//	fresh:    a free address of our blocks   -> bind (create if absent) -> grant
//	          none                           -> claim a block, then fresh again
//
// Waits never block Receive; a session that asks again while its wait is
// pending is just remembered.

// waitStage is where a lease request stands.
type waitStage int

const (
	stageQueued   waitStage = iota // the view or the keeper's first word is not in yet
	stageBlock                     // waiting for a block claim
	stageBind                      // a bind transaction is in flight
	stageMove                      // waiting for the holder to hand the address over
	stageTakeover                  // a takeover transaction is in flight
)

// fleetWait is one lease request being served.
type fleetWait struct {
	req      *messages.LeaseRequest
	reply    *actor.PID
	src      netip.Addr
	stage    waitStage
	addr     netip.Addr
	holder   string
	deadline time.Time
	attempts int
	noSticky bool // the binding could not be had: any address will do
	looked   bool // the binding was read from etcd after the view lacked it
	seq      uint64
}

// fleetMaxClaims bounds the block claims in flight: enough for a burst of
// setups (each claim serves a block's worth), few enough not to grab
// blocks other nodes could use.
const fleetMaxClaims = 4

// fleetMaxAttempts bounds the transactions one request may lose to other
// nodes before it is denied.
const fleetMaxAttempts = 5

// fleetTickEvery is the period of the pool's fleet housekeeping: expired
// move requests, bindings whose grace ran out, empty blocks, numbers.
const fleetTickEvery = time.Second

type fleetTick struct{ incarnation uint64 }

func (*fleetTick) IgnoreDeadLetterLogging() {}

// fleetStatusQuery asks the pool for FleetStatus.
type fleetStatusQuery struct{}

// poolFleet is the pool's fleet state.
type poolFleet struct {
	f        *Fleet
	me       string
	agent    *fleetAgent
	view     *fleetView
	loaded   bool // a snapshot is in
	known    bool // the keeper has spoken
	readOnly bool
	waits    map[string]*fleetWait     // by session id
	handing  map[netip.Addr]moveRecord // ours, promised to another node once its session ends
	pending  map[netip.Addr]bool       // unbind transactions in flight
	releases map[netip.Addr]bool       // block releases in flight
	empty    map[netip.Addr]time.Time  // our blocks with nothing in them, since
	claiming map[netip.Addr]bool       // block claims in flight
	// rejoining: a rejoin is in flight; leases lost meanwhile wait in
	// lost, so that two rejoins never replace each other's leases.
	rejoining bool
	lost      [2]bool
	myBlocks  []netip.Prefix      // the blocks we hold, sorted (countFleet)
	seq       uint64              // of the last wait, to serve waits in order
	fixing    map[netip.Addr]bool // claims and binds for live sessions in flight (reconcile)
	plane     string              // the data plane last programmed, as text
	numbers   [2]int              // last published sessions, leased
	numbered  time.Time
	timer     *time.Timer
	statics   fleetStatics
}

func (p *AddressPool) startFleet(ctx actor.Context) {
	f := p.cfg.Fleet
	fl := &poolFleet{f: f, me: f.cfg.Node, view: newFleetView(f.keys, f.cfg.BlockBits),
		waits: make(map[string]*fleetWait), handing: make(map[netip.Addr]moveRecord),
		pending: make(map[netip.Addr]bool), fixing: make(map[netip.Addr]bool), releases: make(map[netip.Addr]bool), empty: make(map[netip.Addr]time.Time),
		claiming: make(map[netip.Addr]bool)}
	p.fl = fl
	p.alloc.usable, p.alloc.staticOK = fl.usable, fl.staticBindable
	p.alloc.blocks = func() []netip.Prefix { return fl.myBlocks }
	self, sys := ctx.Self(), ctx.ActorSystem()
	fl.agent = startFleetAgent(f, func(m any) { sys.Root.Send(self, m) }, p.cfg.Metrics, p.cfg.Logger)
	p.armFleetTick(ctx)
}

func (p *AddressPool) stopFleet() {
	if p.fl == nil {
		return
	}
	stopTimer(p.fl.timer)
	p.fl.agent.stop()
}

func (p *AddressPool) armFleetTick(ctx actor.Context) {
	self, sys, tick := ctx.Self(), ctx.ActorSystem(), &fleetTick{incarnation: p.incarnation}
	p.fl.timer = time.AfterFunc(fleetTickEvery, func() { sys.Root.Send(self, tick) })
}

// usable is the allocator's filter: ours (block or claim), bound to
// nobody else, not promised to another node.
func (fl *poolFleet) usable(a netip.Addr) bool {
	if fl.view.owner(a) != fl.me {
		return false
	}
	if _, promised := fl.handing[a]; promised {
		return false
	}
	b, bound := fl.view.bindings[a]
	return !bound || b.Node == fl.me
}

// onFleet handles the fleet's messages; false if m is not one.
func (p *AddressPool) onFleet(ctx actor.Context, m any) bool {
	if p.fl == nil {
		return false
	}
	switch m := m.(type) {
	case *fleetSnapshot:
		p.fl.view = newFleetView(p.fl.f.keys, p.fl.f.cfg.BlockBits)
		p.fl.loaded = true
		p.onFleetEvents(ctx, m.Events)
		p.onStaticsLoaded(ctx)
	case *fleetEvents:
		if p.fl.loaded {
			p.onFleetEvents(ctx, m.Events)
		}
	case *fleetHealth:
		p.onFleetHealth(ctx, m.ReadOnly)
	case *fleetLeaseLost:
		p.rejoin(ctx, m)
	case *fleetBindingsExpiring:
		p.giveUpAll(ctx, "the binding lease could not be renewed and may run out: other nodes may lease these addresses")
	case *fleetOpDone:
		p.onFleetOp(ctx, m.Op)
	case *fleetTick:
		if m.incarnation == p.incarnation {
			p.onFleetTick(ctx)
			p.armFleetTick(ctx)
		}
	case *fleetStatusQuery:
		ctx.Respond(p.fleetStatus())
	default:
		return false
	}
	return true
}

func (p *AddressPool) onFleetHealth(ctx actor.Context, readOnly bool) {
	fl := p.fl
	was, first := fl.readOnly, !fl.known
	fl.readOnly, fl.known = readOnly, true
	ro := int64(0)
	if readOnly {
		ro = 1
	}
	p.cfg.Metrics.FleetState.Store(ro)
	ctx.Send(ctx.Parent(), &messages.FleetState{ReadOnly: readOnly})
	switch {
	case readOnly && (first || !was):
		p.cfg.Logger.Warn("fleet: etcd cannot be reached safely; read-only: existing sessions go on, new ones are refused (fleet_unavailable)")
	case !readOnly && (was || first):
		if !first {
			p.cfg.Logger.Info("fleet: etcd is back; taking new sessions again")
		}
		// What changed while we were read-only (a lease that ran out, a
		// block taken) was applied to the view but not acted on.
		p.reconcile(ctx)
		p.programPlane()
	}
	p.serveQueued(ctx)
}

// fleetGrant is grant in fleet mode.
func (p *AddressPool) fleetGrant(ctx actor.Context, m *messages.LeaseRequest, reply *actor.PID) {
	fl, id := p.fl, m.Session.Id
	if w, ok := fl.waits[id]; ok {
		w.reply = reply // the session asked again; the wait goes on
		return
	}
	if l, ok := p.leases[id]; ok {
		ctx.Send(reply, &messages.LeaseGranted{Addr: l.Addr, Rate: p.staticRate(m.Client.Addr())})
		return
	}
	fl.seq++
	w := &fleetWait{req: m, reply: reply, src: p.alloc.key(m.Client.Addr()), seq: fl.seq}
	fl.waits[id] = w
	ctx.Watch(m.Session)
	if !fl.loaded || !fl.known {
		return // served by serveQueued
	}
	p.advance(ctx, w)
}

func (p *AddressPool) serveQueued(ctx actor.Context) {
	fl := p.fl
	if !fl.loaded || !fl.known {
		return
	}
	for _, w := range p.waitsAt(stageQueued) {
		p.advance(ctx, w)
	}
}

// waitsAt lists the waits at stage in the order they came, so a burst of
// setups is served first come, first served.
func (p *AddressPool) waitsAt(stage waitStage) []*fleetWait {
	var out []*fleetWait
	for _, w := range p.fl.waits {
		if w.stage == stage {
			out = append(out, w)
		}
	}
	slices.SortFunc(out, func(a, b *fleetWait) int { return cmp.Compare(a.seq, b.seq) })
	return out
}

// advance takes a wait one step: the client's binding if it can be had,
// else a fresh address.
func (p *AddressPool) advance(ctx actor.Context, w *fleetWait) {
	fl := p.fl
	if fl.readOnly {
		p.denyFleet(ctx, w, "the fleet's etcd cannot be reached safely")
		return
	}
	if w.noSticky || w.attempts >= fleetMaxAttempts {
		p.fresh(ctx, w)
		return
	}
	ce, ok := fl.view.clients[w.src]
	addr := ce.addr
	if s, static := p.alloc.staticFor(w.req.Client.Addr()); static && (!ok || s.Addr != addr) &&
		p.alloc.isFree(s.Addr) && fl.staticBindable(s.Addr) {
		p.fresh(ctx, w) // the operator's address beats the client's last one
		return
	}
	b, bound := fl.view.bindings[addr]
	if ok && !bound && !w.looked {
		// The client record is newer than our view of its binding (a
		// transaction's answer told us): read the binding first.
		w.looked = true
		p.submitFor(ctx, w, &fleetOp{kind: opRead, session: w.req.Session.Id, addr: addr, src: w.src})
		return
	}
	if !ok || !bound || p.alloc.key(b.client) != w.src {
		p.fresh(ctx, w)
		return
	}
	switch _, alive := fl.view.nodes[b.Node]; {
	case b.Node == fl.me:
		p.bindOwn(ctx, w, addr, b)
	case alive:
		p.requestMove(ctx, w, addr, b.Node)
	default:
		p.takeover(ctx, w, addr, b)
	}
}

// bindOwn leases our own binding again (a client back within -grace).
func (p *AddressPool) bindOwn(ctx actor.Context, w *fleetWait, addr netip.Addr, b binding) {
	if !p.alloc.claim(w.req.Session.Id, addr) {
		w.noSticky = true // another session of this client holds it
		p.fresh(ctx, w)
		return
	}
	p.bind(ctx, w, addr, b.modRev, netip.Addr{})
}

func (p *AddressPool) bind(ctx actor.Context, w *fleetWait, addr netip.Addr, prev int64, cleanup netip.Addr) {
	w.stage, w.addr = stageBind, addr
	p.submitFor(ctx, w, &fleetOp{kind: opBind, session: w.req.Session.Id, addr: addr, src: w.src,
		client: w.req.Client.Addr(), prev: prev, cleanup: cleanup, srcRev: p.fl.view.clients[w.src].modRev})
}

func (p *AddressPool) requestMove(ctx actor.Context, w *fleetWait, addr netip.Addr, holder string) {
	w.stage, w.addr, w.holder = stageMove, addr, holder
	// The holder's registration goes within one TTL if it is dead; a
	// live holder answers within a round trip.
	w.deadline = time.Now().Add(p.fl.f.cfg.TTL + 2*time.Second)
	p.submitFor(ctx, w, &fleetOp{kind: opMove, session: w.req.Session.Id, addr: addr, src: w.src})
}

func (p *AddressPool) takeover(ctx actor.Context, w *fleetWait, addr netip.Addr, b binding) {
	w.stage, w.addr = stageTakeover, addr
	claim := p.fl.view.blocks[p.fl.view.blockOf(addr)] != p.fl.me
	p.submitFor(ctx, w, &fleetOp{kind: opTakeover, session: w.req.Session.Id, addr: addr, src: w.src,
		client: w.req.Client.Addr(), prev: b.modRev, node: b.Node, claim: claim})
}

// fresh leases any free address of our blocks, claiming a block if none.
func (p *AddressPool) fresh(ctx actor.Context, w *fleetWait) {
	fl, id := p.fl, w.req.Session.Id
	addr, ok := p.alloc.allocate(id, w.req.Client.Addr(), time.Now())
	if ok {
		prev, cleanup := int64(0), netip.Addr{}
		if b, bound := fl.view.bindings[addr]; bound {
			prev = b.modRev
			if src := p.alloc.key(b.client); src != w.src {
				cleanup = src // a grace reservation given away: its client index goes
			}
		}
		p.bind(ctx, w, addr, prev, cleanup)
		p.claimAhead(ctx)
		return
	}
	w.stage = stageBlock
	if !p.claimBlocks(ctx) && len(fl.claiming) == 0 {
		p.cfg.Metrics.LeaseDenials.Add(1)
		delete(fl.waits, id)
		ctx.Send(w.reply, &messages.LeaseDenied{Reason: "address pool exhausted (every block of the fleet is held and ours are full)"})
	}
}

// claimBlocks claims as many blocks as the waiting setups need, up to
// fleetMaxClaims in flight; false if no block is free.
func (p *AddressPool) claimBlocks(ctx actor.Context) bool {
	fl := p.fl
	size := 1 << (32 - fl.f.cfg.BlockBits)
	need := (len(p.waitsAt(stageBlock)) + size - 1) / size
	for len(fl.claiming) < min(need, fleetMaxClaims) {
		if !p.claimOne(ctx) {
			return false
		}
	}
	return true
}

// claimAhead claims the next block while half a block is still free, so
// that a steady stream of setups does not wait for a claim's round trip.
func (p *AddressPool) claimAhead(ctx actor.Context) {
	fl := p.fl
	size := 1 << (32 - fl.f.cfg.BlockBits)
	if len(fl.claiming) == 0 && len(fl.myBlocks)*size-p.alloc.leased() < size/2 {
		p.claimOne(ctx)
	}
}

func (p *AddressPool) claimOne(ctx actor.Context) bool {
	first, ok := p.freeBlock()
	if !ok {
		return false
	}
	p.fl.claiming[first] = true
	return p.submit(ctx, &fleetOp{kind: opClaimBlock, addr: first})
}

// freeBlock picks the lowest block nobody holds and we are not claiming.
// Nodes that start together race for the same blocks; a lost race costs
// one round trip to etcd, with the claims in flight at once and ahead of
// the binds.
func (p *AddressPool) freeBlock() (netip.Addr, bool) {
	bits := p.fl.f.cfg.BlockBits
	pool := p.cfg.Pool.Masked()
	step := uint32(1) << (32 - bits)
	n := uint32(1) << (bits - pool.Bits())
	base := addrToU32(pool.Addr())
	for i := range n {
		first := u32ToAddr(base + i*step)
		if _, held := p.fl.view.blocks[first]; !held && !p.fl.claiming[first] {
			return first, true
		}
	}
	return netip.Addr{}, false
}

func (p *AddressPool) submitFor(ctx actor.Context, w *fleetWait, op *fleetOp) {
	if !p.fl.agent.submit(op) {
		p.alloc.drop(w.req.Session.Id)
		p.denyFleet(ctx, w, "too many etcd transactions queued")
	}
}

// submit hands op to the agent; when its queue is full the op is dropped
// and what was marked in flight for it is undone, so that a later tick or
// event tries again (nothing may stay "in flight" forever).
func (p *AddressPool) submit(ctx actor.Context, op *fleetOp) bool {
	if p.fl.agent.submit(op) {
		return true
	}
	fl := p.fl
	p.cfg.Logger.Warn("fleet: transaction queue full; dropping a transaction", slog.Int("kind", int(op.kind)), slog.String("addr", op.addr.String()))
	switch op.kind {
	case opClaimBlock:
		delete(fl.claiming, op.addr)
	case opClaim, opBind: // reconcile's and a move's (a setup's go through submitFor)
		delete(fl.fixing, op.addr)
		if op.kind == opClaim && fl.view.claims[op.addr] == fl.me {
			delete(fl.view.claims, op.addr)
		}
	case opUnbind:
		delete(fl.pending, op.addr)
	case opReleaseBlock:
		delete(fl.releases, op.addr)
	case opRejoin:
		fl.rejoining = false
	}
	return false
}

func (p *AddressPool) denyFleet(ctx actor.Context, w *fleetWait, why string) {
	delete(p.fl.waits, w.req.Session.Id)
	p.cfg.Metrics.LeaseDenials.Add(1)
	ctx.Send(w.reply, &messages.LeaseDenied{Reason: "fleet unavailable: " + why, Fleet: true})
}

// grantWait completes a wait: the address is ours in etcd.
func (p *AddressPool) grantWait(ctx actor.Context, w *fleetWait, addr netip.Addr) {
	id := w.req.Session.Id
	delete(p.fl.waits, id)
	if _, known := p.leases[id]; !known {
		p.record(ctx, w.req.Session, w.req.Client, addr, w.req.Inbox)
	}
	ctx.Send(w.reply, &messages.LeaseGranted{Addr: addr, Rate: p.staticRate(w.req.Client.Addr())})
}

func (p *AddressPool) onFleetOp(ctx actor.Context, op *fleetOp) {
	fl := p.fl
	w := fl.waits[op.session]
	if op.session != "" && w == nil {
		return // the session ended meanwhile; the sweep tidies its binding
	}
	switch op.kind {
	case opClaimBlock:
		p.onBlockClaimed(ctx, op)
	case opBind:
		if w == nil {
			p.onFixed(ctx, op)
			return
		}
		p.onBound(ctx, w, op)
	case opClaim:
		p.onFixed(ctx, op)
	case opTakeover:
		p.onTakenOver(ctx, w, op)
	case opRead:
		if op.err != nil {
			p.denyFleet(ctx, w, "etcd did not answer")
			return
		}
		p.applyAnswer(op)
		p.advance(ctx, w)
	case opMove:
		if op.err != nil {
			w.noSticky = true
			p.advance(ctx, w)
		}
	case opRejoin:
		p.onRejoined(ctx, op)
	case opStatics:
		p.onStaticsWritten(ctx, op)
	case opUnbind:
		delete(fl.pending, op.addr)
	case opReleaseBlock:
		delete(fl.releases, op.addr)
	case opHandover:
		if op.err != nil || !op.ok {
			p.cfg.Logger.Warn("fleet: handing an address over failed; the other node will give its client another",
				slog.String("addr", op.addr.String()), slog.Any("err", op.err))
		}
	}
}

func (p *AddressPool) onBlockClaimed(ctx actor.Context, op *fleetOp) {
	fl := p.fl
	delete(fl.claiming, op.addr)
	switch {
	case op.err != nil:
		p.cfg.Logger.Warn("fleet: claiming a block failed", slog.String("block", op.addr.String()), slog.Any("err", op.err))
		if len(fl.claiming) > 0 {
			return // the others may still serve the waits
		}
		for _, w := range p.waitsAt(stageBlock) {
			p.denyFleet(ctx, w, "claiming a block failed")
		}
		return
	case op.ok:
		fl.view.blocks[op.addr] = fl.me // the watch confirms it
		p.cfg.Logger.Info("fleet: claimed a block", slog.String("block", netip.PrefixFrom(op.addr, fl.f.cfg.BlockBits).String()))
		p.programPlane()
		p.countFleet()
	default:
		// Another node was first; the watch tells us who, and we pick
		// another. Its event may have come in before this answer: the
		// placeholder must not replace the owner it named, or this node
		// would never route to that block.
		if _, known := fl.view.blocks[op.addr]; !known {
			fl.view.blocks[op.addr] = "?"
		}
	}
	for _, w := range p.waitsAt(stageBlock) {
		switch {
		case fl.waits[w.req.Session.Id] != w || w.stage != stageBlock:
		default:
			// advance, not fresh: while the block was being claimed the
			// watch may have told us that this client is bound elsewhere
			// (it moved here from a live node), and a fresh address bound
			// over that record would cost the client its address.
			p.advance(ctx, w)
		}
	}
}

func (p *AddressPool) onBound(ctx actor.Context, w *fleetWait, op *fleetOp) {
	switch {
	case op.err != nil:
		p.alloc.drop(w.req.Session.Id)
		p.denyFleet(ctx, w, "etcd did not answer")
	case op.ok:
		p.noteBinding(op, p.fl.me)
		p.grantWait(ctx, w, op.addr)
	default:
		// Someone changed the binding, or the client's, since we looked:
		// the transaction's answer says how things are; try again.
		p.applyAnswer(op)
		p.alloc.drop(w.req.Session.Id)
		w.attempts++
		if w.attempts >= fleetMaxAttempts {
			p.denyFleet(ctx, w, "lost every attempt to bind an address to other nodes")
			return
		}
		p.advance(ctx, w)
	}
}

// onFixed ends a reconcile transaction. A claim or bind refused means
// another node holds the address now: the next reconcile, on the watch's
// news, closes the session; an etcd error is retried then too.
func (p *AddressPool) onFixed(ctx actor.Context, op *fleetOp) {
	fl := p.fl
	delete(fl.fixing, op.addr)
	switch {
	case op.err != nil:
		if op.kind == opClaim && fl.view.claims[op.addr] == fl.me {
			delete(fl.view.claims, op.addr)
		}
	case op.ok && op.kind == opBind:
		p.noteBinding(op, fl.me)
		p.cfg.Logger.Info("fleet: bound a live session's address again", slog.String("addr", op.addr.String()))
	case op.ok && op.kind == opClaim:
		p.cfg.Logger.Info("fleet: claimed a live session's address (/32)", slog.String("addr", op.addr.String()))
	case !op.ok && op.kind == opClaim:
		// Someone else's: the watch says whose, and may have already.
		if fl.view.claims[op.addr] == fl.me {
			delete(fl.view.claims, op.addr)
		}
		p.applyAnswer(op)
	case !op.ok:
		p.applyAnswer(op)
	}
	p.programPlane()
}

// noteBinding applies a transaction's write to the view at once, so the
// next decision does not wait for the watch.
func (p *AddressPool) noteBinding(op *fleetOp, node string) {
	v := p.fl.view
	v.bindings[op.addr] = binding{bindingRecord: bindingRecord{Node: node, Client: op.client.String()}, client: op.client, modRev: op.rev,
		lease: int64(p.fl.f.leases.Load().bind)}
	v.clients[op.src] = clientEntry{addr: op.addr, modRev: op.rev}
	if op.cleanup.IsValid() {
		delete(v.clients, op.cleanup)
	}
}

func (p *AddressPool) onTakenOver(ctx actor.Context, w *fleetWait, op *fleetOp) {
	switch {
	case op.err != nil:
		p.denyFleet(ctx, w, "etcd did not answer")
	case op.ok && p.alloc.claim(w.req.Session.Id, op.addr):
		p.noteBinding(op, p.fl.me)
		if op.claim {
			p.fl.view.claims[op.addr] = p.fl.me
			p.programPlane()
		}
		p.cfg.Logger.Info("fleet: took over a client's address from a node that is gone",
			slog.String("addr", op.addr.String()), slog.String("from", op.node), slog.String("client", op.client.String()))
		p.grantWait(ctx, w, op.addr)
	default:
		p.applyAnswer(op)
		w.attempts++
		p.advance(ctx, w)
	}
}

// applyAnswer folds what a failed transaction read back into the view.
func (p *AddressPool) applyAnswer(op *fleetOp) {
	for _, e := range op.answer {
		p.fl.view.apply(e)
	}
}

// onFleetEvents applies watch events and reacts to the ones that concern
// waits and our own addresses.
func (p *AddressPool) onFleetEvents(ctx actor.Context, events []fleetEvent) {
	fl := p.fl
	statics := false
	for _, e := range events {
		if !fl.view.apply(e) {
			p.cfg.Logger.Warn("fleet: ignoring a record that does not parse", slog.String("key", e.Key))
			if e.Key == fl.f.keys.statics() {
				fl.statics.broken = true
			}
			continue
		}
		dir, name, _ := fl.view.keys.split(e.Key)
		switch {
		case dir == dirMoves && !e.Deleted:
			if src, err := netip.ParseAddr(name); err == nil {
				p.onMoveRequest(ctx, src)
			}
		case dir == dirAddrs && !e.Deleted:
			if a, err := netip.ParseAddr(name); err == nil {
				p.onBindingChanged(ctx, a)
			}
		case dir == dirNodes && e.Deleted:
			p.onNodeGone(ctx, name)
		case dir == keyStatics:
			statics, fl.statics.broken = true, false
		}
	}
	if statics && fl.statics.seeded {
		p.mirrorStatics(ctx, nil)
	}
	p.reconcile(ctx)
	p.programPlane()
	p.serveQueued(ctx)
	p.countFleet()
}

// onMoveRequest: another node has our client; close our session of it
// (moved) and hand the address over once it has ended.
func (p *AddressPool) onMoveRequest(ctx actor.Context, src netip.Addr) {
	fl := p.fl
	mv := fl.view.moves[src]
	ce, ok := fl.view.clients[src]
	addr := ce.addr
	b, bound := fl.view.bindings[addr]
	if mv.Node == fl.me || !ok || !bound || b.Node != fl.me || p.alloc.key(b.client) != src {
		return
	}
	fl.handing[addr] = mv
	if owner, leased := p.alloc.holder(addr); leased {
		if l, ok := p.leases[owner]; ok {
			p.cfg.Logger.Info("fleet: client showed up on another node; closing its session here",
				slog.String("client", l.Client.String()), slog.String("addr", addr.String()), slog.String("node", mv.Node))
			ctx.Send(l.Session, &messages.Moved{})
			return // handed over when it has ended (onTerminated)
		}
	}
	p.handOver(ctx, addr)
}

// handOver rebinds addr to the node that asked for it.
func (p *AddressPool) handOver(ctx actor.Context, addr netip.Addr) {
	fl := p.fl
	mv, ok := fl.handing[addr]
	if !ok {
		return
	}
	delete(fl.handing, addr)
	b := fl.view.bindings[addr]
	p.alloc.forget(addr)
	p.submit(ctx, &fleetOp{kind: opHandover, addr: addr, src: p.alloc.key(b.client), client: b.client, prev: b.modRev,
		node: mv.Node, lease: mv.Lease, claim: fl.view.claims[addr] == fl.me})
}

// onBindingChanged completes a move wait when the holder rebound the
// address to us.
func (p *AddressPool) onBindingChanged(ctx actor.Context, addr netip.Addr) {
	fl := p.fl
	b := fl.view.bindings[addr]
	if b.Node != fl.me {
		return
	}
	for _, w := range fl.waits {
		if w.stage != stageMove || w.addr != addr {
			continue
		}
		if !p.alloc.claim(w.req.Session.Id, addr) {
			w.noSticky = true
			p.advance(ctx, w)
			return
		}
		if fl.view.owner(addr) != fl.me {
			fl.view.claims[addr] = fl.me
			p.submit(ctx, &fleetOp{kind: opClaim, addr: addr})
		}
		p.cfg.Logger.Info("fleet: a client moved here with its address", slog.String("addr", addr.String()),
			slog.String("from", w.holder), slog.String("client", w.req.Client.String()))
		p.grantWait(ctx, w, addr)
		return
	}
}

// onNodeGone turns move waits on a dead holder into takeovers.
func (p *AddressPool) onNodeGone(ctx actor.Context, node string) {
	if node == p.fl.me {
		return
	}
	p.cfg.Logger.Info("fleet: a node left (or its lease ran out)", slog.String("node", node))
	for _, w := range p.fl.waits {
		if w.stage == stageMove && w.holder == node {
			p.advance(ctx, w)
		}
	}
}

// fleetTerminated tidies a wait or hands over the address of a session
// that ended (called from onTerminated after the lease is released).
func (p *AddressPool) fleetTerminated(ctx actor.Context, who *actor.PID, addr netip.Addr) {
	if p.fl == nil {
		return
	}
	if w, ok := p.fl.waits[who.Id]; ok {
		delete(p.fl.waits, who.Id)
		if w.stage == stageMove {
			p.submit(ctx, &fleetOp{kind: opDeleteMove, src: w.src})
		}
		p.alloc.drop(who.Id)
	}
	if addr.IsValid() {
		p.handOver(ctx, addr)
	}
}

func (p *AddressPool) onFleetTick(ctx actor.Context) {
	fl := p.fl
	if !fl.loaded {
		return
	}
	now := time.Now()
	for _, w := range fl.waits {
		if w.stage == stageMove && now.After(w.deadline) {
			p.cfg.Logger.Warn("fleet: the holder of a client's address did not hand it over in time; giving the client another",
				slog.String("client", w.req.Client.String()), slog.String("holder", w.holder))
			p.submit(ctx, &fleetOp{kind: opDeleteMove, src: w.src})
			w.noSticky = true
			p.advance(ctx, w)
		}
	}
	if fl.readOnly {
		return
	}
	p.sweepBindings(ctx, now)
	p.sweepBlocks(ctx, now)
	p.publishNumbers(ctx, now)
	p.seedStatics(ctx)
}

// sweepBindings deletes our bindings that no session holds and no grace
// reservation keeps any more.
func (p *AddressPool) sweepBindings(ctx actor.Context, now time.Time) {
	fl := p.fl
	current := int64(fl.f.leases.Load().bind)
	for addr, b := range fl.view.bindings {
		// A binding under an earlier process's lease (a restart under the
		// same name) is left to run out with that lease: its client may
		// still come back here, or to another node.
		if b.Node != fl.me || b.lease != current || fl.pending[addr] || p.inUse(addr, now) {
			continue
		}
		fl.pending[addr] = true
		p.submit(ctx, &fleetOp{kind: opUnbind, addr: addr, src: p.alloc.key(b.client), prev: b.modRev,
			claim: fl.view.claims[addr] == fl.me})
	}
}

// inUse: leased, reserved, wanted by a wait or being handed over.
func (p *AddressPool) inUse(addr netip.Addr, now time.Time) bool {
	if _, leased := p.alloc.holder(addr); leased || p.alloc.isReserved(addr, now) {
		return true
	}
	if _, promised := p.fl.handing[addr]; promised {
		return true
	}
	for _, w := range p.fl.waits {
		if w.addr == addr {
			return true
		}
	}
	return false
}

// sweepBlocks gives back blocks that have held nothing for -grace.
func (p *AddressPool) sweepBlocks(ctx actor.Context, now time.Time) {
	fl := p.fl
	used := make(map[netip.Addr]bool)
	for addr, b := range fl.view.bindings {
		if b.Node == fl.me {
			used[fl.view.blockOf(addr)] = true
		}
	}
	for _, l := range p.leases {
		used[fl.view.blockOf(l.Addr)] = true
	}
	for first, node := range fl.view.blocks {
		if node != fl.me || used[first] || fl.releases[first] {
			delete(fl.empty, first)
			continue
		}
		since, ok := fl.empty[first]
		if !ok {
			fl.empty[first] = now
			continue
		}
		if now.Sub(since) >= fl.f.cfg.Grace && !p.anyWaiting() {
			delete(fl.empty, first)
			fl.releases[first] = true
			p.cfg.Logger.Info("fleet: giving back an empty block", slog.String("block", netip.PrefixFrom(first, fl.f.cfg.BlockBits).String()))
			p.submit(ctx, &fleetOp{kind: opReleaseBlock, addr: first})
		}
	}
}

func (p *AddressPool) anyWaiting() bool { return len(p.fl.waits) > 0 }

// publishNumbers refreshes our node record when our numbers changed, at
// most every two seconds.
func (p *AddressPool) publishNumbers(ctx actor.Context, now time.Time) {
	fl := p.fl
	n := [2]int{len(p.leases), p.alloc.leased()}
	if n == fl.numbers || now.Sub(fl.numbered) < 2*time.Second {
		return
	}
	fl.numbers, fl.numbered = n, now
	p.submit(ctx, &fleetOp{kind: opNodeUpdate, numbers: n})
}

// rejoin replaces the leases etcd lost, one rejoin at a time.
func (p *AddressPool) rejoin(ctx actor.Context, m *fleetLeaseLost) {
	fl := p.fl
	fl.lost[0], fl.lost[1] = fl.lost[0] || m.Node, fl.lost[1] || m.Bind
	if fl.rejoining {
		return
	}
	fl.rejoining = true
	lost := fl.lost
	fl.lost = [2]bool{}
	if !p.submit(ctx, &fleetOp{kind: opRejoin, lost: lost}) {
		fl.lost = lost // the keeper says so again on its next round
	}
}

// onRejoined: after a lost lease the node is registered again; what the
// old lease carried is re-claimed by reconcile, from the fresh snapshot
// the watcher loads.
func (p *AddressPool) onRejoined(ctx actor.Context, op *fleetOp) {
	p.fl.rejoining = false
	if p.fl.lost != [2]bool{} {
		defer p.rejoin(ctx, &fleetLeaseLost{})
	}
	if op.err != nil {
		p.cfg.Logger.Error("fleet: re-registering failed; retrying", slog.Any("err", op.err))
		self, sys, again := ctx.Self(), ctx.ActorSystem(), &fleetLeaseLost{Node: op.lost[0], Bind: op.lost[1]}
		time.AfterFunc(time.Second, func() { sys.Root.Send(self, again) })
		return
	}
	p.cfg.Logger.Warn("fleet: registered again after etcd lost our lease; re-claiming our sessions' addresses")
	if op.lost[1] {
		for a, b := range p.fl.view.bindings {
			if b.Node == p.fl.me {
				delete(p.fl.view.bindings, a) // gone with the lease: bound again below
			}
		}
	}
	p.reconcile(ctx)
}

// reconcile makes etcd vouch for every live session: its binding ours
// and its address in our blocks or claims. What is missing is claimed
// again (after a partition that outlasted a lease); a session whose
// address another node holds is closed (fleet_lost).
func (p *AddressPool) reconcile(ctx actor.Context) {
	fl := p.fl
	if fl.readOnly || !fl.loaded {
		return
	}
	for _, l := range p.leases {
		a := l.Addr
		if fl.fixing[a] {
			continue
		}
		b, bound := fl.view.bindings[a]
		owner := fl.view.owner(a)
		switch {
		case bound && b.Node != fl.me, fl.view.claims[a] != "" && fl.view.claims[a] != fl.me:
			if _, promised := fl.handing[a]; promised {
				continue // handed over when the session ends
			}
			p.cfg.Logger.Error("fleet: another node holds our session's address; closing the session",
				slog.String("addr", a.String()), slog.String("client", l.Client.String()))
			ctx.Send(l.Session, &messages.FleetLost{})
		case !bound:
			fl.fixing[a] = true
			p.submit(ctx, &fleetOp{kind: opBind, addr: a, src: p.alloc.key(l.Client.Addr()), client: l.Client.Addr(),
				srcRev: fl.view.clients[p.alloc.key(l.Client.Addr())].modRev, session: ""})
		case owner != fl.me:
			fl.fixing[a] = true
			fl.view.claims[a] = fl.me
			p.submit(ctx, &fleetOp{kind: opClaim, addr: a})
		}
	}
}

// giveUpAll closes every session: the node cannot vouch for their
// addresses any more.
func (p *AddressPool) giveUpAll(ctx actor.Context, why string) {
	if len(p.leases) == 0 {
		return
	}
	p.cfg.Logger.Error("fleet: closing every session: "+why, slog.Int("sessions", len(p.leases)))
	for _, l := range p.leases {
		ctx.Send(l.Session, &messages.FleetLost{})
	}
}

// programPlane hands the data plane its new state when it changed.
func (p *AddressPool) programPlane() {
	fl := p.fl
	s := planeState{peers: fl.view.peers(fl.me), local: fl.view.localClaims(fl.me)}
	key := planeKey(s)
	if key == fl.plane {
		return
	}
	fl.plane = key
	if fl.f.cfg.DataPlane != nil {
		fl.agent.setPlane(s)
	}
	p.countFleet()
}

func planeKey(s planeState) string {
	var b []byte
	for _, peer := range s.peers {
		b = append(b, peer.Name...)
		b = append(b, ' ')
		b = append(b, peer.Underlay.String()...)
		b = append(b, peer.MAC.String()...)
		for _, pr := range peer.Prefixes {
			b = append(b, ' ')
			b = append(b, pr.String()...)
		}
		b = append(b, ';')
	}
	for _, a := range s.local {
		b = append(b, a.String()...)
		b = append(b, ',')
	}
	return string(b)
}

func (p *AddressPool) countFleet() {
	fl := p.fl
	fl.myBlocks = fl.view.blocksOf(fl.me)
	p.cfg.Metrics.FleetBlocks.Store(int64(len(fl.myBlocks)))
	p.cfg.Metrics.FleetClaims.Store(int64(len(fl.view.claimsOf(fl.me))))
}

// fleetStatus is the fleet as this node sees it.
func (p *AddressPool) fleetStatus() FleetStatus {
	fl := p.fl
	st := FleetStatus{Self: fl.me, State: "ok", Pool: p.cfg.Pool.Masked().String()}
	if fl.readOnly || !fl.known {
		st.State = "read-only"
	}
	for name, r := range fl.view.nodes {
		n := FleetNode{Name: name, UpSince: r.UpSince, Blocks: fl.view.blocksOf(name), Claims: fl.view.claimsOf(name),
			Sessions: r.Sessions, Leased: r.Leased, Self: name == fl.me}
		n.Addr, _ = netip.ParseAddr(r.Addr)
		if n.Self {
			n.Sessions, n.Leased = len(p.leases), p.alloc.leased()
		}
		st.Nodes = append(st.Nodes, n)
	}
	slices.SortFunc(st.Nodes, func(a, b FleetNode) int { return strings.Compare(a.Name, b.Name) })
	return st
}
