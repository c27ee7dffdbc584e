package actors

// The Router's part of the TUN-to-client path:
//
//  1. The TUN actor's reader sends a *messages.ToClient batch of packets.
//  2. The Router looks up each packet's IPv4 destination in its map and
//     moves the packet (no copy) into a batch for the owning session.
//  3. Packets for addresses without a session are dropped and counted:
//     as session_ended when the address's session ended less than -grace
//     ago (replies in flight when its client left: at the end of a load
//     test these are every packet still between the server and the far
//     host), else as no_route.
//  4. Each per-session batch goes to its session in one message if the
//     session's inbox budget has a token (else it is dropped and counted);
//     the session queues it for its writer, or drops it if that client is
//     slow.
//
// The map is a cache of the AddressPool's leases: the pool sends every
// change, and a restarted Router asks the pool for the whole table. Until
// the table arrives it holds the batches it gets (at most routerBudget, the
// TUN reader's tokens) instead of dropping them as unroutable.

import (
	"net/netip"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/4over6d/4over6d/messages"
	"github.com/4over6d/4over6d/messages/wire"
)

// Router alone owns the IPv4-to-session map used on the data path.
type Router struct {
	cfg    *shared
	routes map[netip.Addr]route
	ended  endedRoutes          // addresses whose session ended within -grace
	synced bool                 // the pool's table has arrived
	held   []*messages.ToClient // batches that arrived before it
	// scratch is reused across batches: one entry per session that
	// receives packets from the current batch (usually one or two).
	scratch []routed
}

// route is where packets for one address go: the session and its inbox
// budget.
type route struct {
	pid   *actor.PID
	inbox messages.Budget
}

type routed struct {
	route
	batch *messages.ToClient
}

func newRouter(cfg *shared) actor.Producer {
	return func() actor.Actor {
		return &Router{cfg: cfg, routes: make(map[netip.Addr]route), ended: endedRoutes{window: cfg.Grace}}
	}
}

// Receive handles one message; see the file comment for the data path.
func (r *Router) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *messages.ToClient:
		if !r.synced {
			r.held = append(r.held, m)
			return
		}
		r.forward(ctx, m)
	case *actor.Started:
		ctx.Request(r.cfg.pool, &messages.RouteSync{})
	case *messages.RouteTable:
		r.replace(ctx, m)
	case *actor.Restarting, *actor.Stopping:
		r.dropHeld()
	case *messages.HealthCheck:
		ctx.Respond(&messages.Healthy{})
	case *messages.RouteAdd:
		r.routes[m.Addr] = route{pid: m.Session, inbox: m.Inbox}
		r.ended.remove(m.Addr)
	case *messages.RouteDel:
		if cur, ok := r.routes[m.Addr]; ok && cur.pid.Equal(m.Session) {
			delete(r.routes, m.Addr)
			r.ended.add(m.Addr, r.cfg.now())
		}
		if ctx.Sender() != nil {
			// A closing session asks: the answer follows every batch
			// sent to it (session_release.go).
			ctx.Respond(&routeReleased{})
		}
	case *messages.RoutesQuery:
		ctx.Respond(r.table())
	case *messages.InjectPanic:
		panic("injected fault in router: " + m.Reason)
	}
}

// replace installs the pool's whole table and routes what was held.
func (r *Router) replace(ctx actor.Context, t *messages.RouteTable) {
	clear(r.routes)
	for _, rt := range t.Routes {
		r.routes[rt.Addr] = route{pid: rt.Session, inbox: rt.Inbox}
		r.ended.remove(rt.Addr)
	}
	r.synced = true
	held := r.held
	r.held = nil
	for _, b := range held {
		r.forward(ctx, b)
	}
}

// dropHeld gives up the held batches (and the TUN reader's tokens) when
// this incarnation ends before its table arrived.
func (r *Router) dropHeld() {
	for _, b := range r.held {
		r.cfg.Metrics.Drop(DropNoRoute, len(b.Packets))
		b.Release()
	}
	r.held = nil
}

func (r *Router) forward(ctx actor.Context, in *messages.ToClient) {
	// Deferred so the TUN reader gets its budget token back even if
	// routing panics.
	defer in.Recycle()
	var now time.Time // read at the first packet without a route
	for _, pkt := range in.Packets {
		rt, ok := r.lookup(pkt)
		if !ok {
			r.dropUnrouted(pkt, &now)
			continue
		}
		out := r.batchFor(ctx, rt)
		out.Packets = append(out.Packets, pkt)
	}
	for i, s := range r.scratch {
		r.deliver(ctx, s.route, s.batch)
		r.scratch[i] = routed{}
	}
	r.scratch = r.scratch[:0]
}

// deliver sends b to its session, or drops it when the session already
// has inboxBatches waiting: the Router never waits for a session.
func (r *Router) deliver(ctx actor.Context, rt route, b *messages.ToClient) {
	if !rt.inbox.TryAcquire(&b.Batch) {
		r.cfg.Metrics.Drop(DropQueueFull, len(b.Packets))
		b.Release()
		return
	}
	ctx.Send(rt.pid, b)
}

// dropUnrouted counts and releases a packet no session holds the address
// of; *now is the batch's clock, read once and only if needed.
func (r *Router) dropUnrouted(pkt []byte, now *time.Time) {
	reason := DropNoRoute
	if len(pkt) >= 20 && pkt[0]>>4 == 4 {
		if now.IsZero() {
			*now = r.cfg.now()
		}
		if r.ended.within(netip.AddrFrom4([4]byte(pkt[16:20])), *now) {
			reason = DropSessionEnded
		}
	}
	r.cfg.Metrics.Drop(reason, 1)
	wire.ReleasePacket(pkt)
}

func (r *Router) lookup(pkt []byte) (route, bool) {
	if len(pkt) < 20 || pkt[0]>>4 != 4 {
		return route{}, false
	}
	rt, ok := r.routes[netip.AddrFrom4([4]byte(pkt[16:20]))]
	return rt, ok
}

// batchFor finds or starts the outgoing batch for rt; a full batch is
// sent at once so no batch exceeds wire.BatchCap.
func (r *Router) batchFor(ctx actor.Context, rt route) *messages.ToClient {
	for i := range r.scratch {
		if r.scratch[i].pid != rt.pid {
			continue
		}
		if r.scratch[i].batch.Full() {
			r.deliver(ctx, rt, r.scratch[i].batch)
			r.scratch[i].batch = messages.NewToClient()
		}
		return r.scratch[i].batch
	}
	b := messages.NewToClient()
	r.scratch = append(r.scratch, routed{route: rt, batch: b})
	return b
}

// table copies the map for RoutesQuery.
func (r *Router) table() *messages.Routes {
	out := make(map[netip.Addr]*actor.PID, len(r.routes))
	for addr, rt := range r.routes {
		out[addr] = rt.pid
	}
	return &messages.Routes{Routes: out}
}
