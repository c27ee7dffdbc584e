package actors

// The Router's part of the TUN-to-client path:
//
//  1. The TUN actor's reader sends a *messages.ToClient batch of packets.
//  2. The Router looks up each packet's IPv4 destination in its map and
//     moves the packet (no copy) into a batch for the owning session.
//  3. Packets for addresses without a session are dropped and counted.
//  4. Each per-session batch goes to its session in one message; the
//     session queues it for its writer, or drops it if that client is slow.
//
// The map is a cache of the AddressPool's leases: the pool sends every
// change, and a restarted Router asks the pool for the whole table.

import (
	"maps"
	"net/netip"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/4over6d/4over6d/messages"
)

// Router alone owns the IPv4-to-session map used on the data path.
type Router struct {
	cfg    *shared
	routes map[netip.Addr]*actor.PID
	// scratch is reused across batches: one entry per session that
	// receives packets from the current batch (usually one or two).
	scratch []routed
}

type routed struct {
	pid   *actor.PID
	batch *messages.ToClient
}

func newRouter(cfg *shared) actor.Producer {
	return func() actor.Actor {
		return &Router{cfg: cfg, routes: make(map[netip.Addr]*actor.PID)}
	}
}

// Receive handles one message; see the file comment for the data path.
func (r *Router) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *messages.ToClient:
		r.forward(ctx, m)
	case *actor.Started:
		ctx.Request(r.cfg.pool, &messages.RouteSync{})
	case *messages.RouteTable:
		clear(r.routes)
		for _, rt := range m.Routes {
			r.routes[rt.Addr] = rt.Session
		}
	case *messages.RouteAdd:
		r.routes[m.Addr] = m.Session
	case *messages.RouteDel:
		if cur, ok := r.routes[m.Addr]; ok && cur.Equal(m.Session) {
			delete(r.routes, m.Addr)
		}
	case *messages.RoutesQuery:
		ctx.Respond(&messages.Routes{Routes: maps.Clone(r.routes)})
	case *messages.InjectPanic:
		panic("injected fault in router: " + m.Reason)
	}
}

func (r *Router) forward(ctx actor.Context, in *messages.ToClient) {
	// Deferred so the TUN reader gets its budget token back even if
	// routing panics.
	defer in.Recycle()
	for _, pkt := range in.Packets {
		pid, ok := r.lookup(pkt)
		if !ok {
			r.cfg.Metrics.Drop(DropNoRoute, 1)
			messages.ReleasePacket(pkt)
			continue
		}
		out := r.batchFor(ctx, pid)
		out.Packets = append(out.Packets, pkt)
	}
	for i, s := range r.scratch {
		ctx.Send(s.pid, s.batch)
		r.scratch[i] = routed{}
	}
	r.scratch = r.scratch[:0]
}

func (r *Router) lookup(pkt []byte) (*actor.PID, bool) {
	if len(pkt) < 20 || pkt[0]>>4 != 4 {
		return nil, false
	}
	pid, ok := r.routes[netip.AddrFrom4([4]byte(pkt[16:20]))]
	return pid, ok
}

// batchFor finds or starts the outgoing batch for pid; a full batch is
// sent at once so no batch exceeds BatchCap.
func (r *Router) batchFor(ctx actor.Context, pid *actor.PID) *messages.ToClient {
	for i := range r.scratch {
		if r.scratch[i].pid != pid {
			continue
		}
		if r.scratch[i].batch.Full() {
			ctx.Send(pid, r.scratch[i].batch)
			r.scratch[i].batch = messages.NewToClient()
		}
		return r.scratch[i].batch
	}
	b := messages.NewToClient()
	r.scratch = append(r.scratch, routed{pid: pid, batch: b})
	return b
}
