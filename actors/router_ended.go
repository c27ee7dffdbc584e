package actors

import (
	"net/netip"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/4over6d/4over6d/messages"
)

// endedRoutes remembers the addresses whose session ended within the last
// window (the pool's -grace, while the address stays reserved for its
// client), so the Router can tell a packet for such an address
// (session_ended: replies still in flight when the client went away, or
// the far side not yet told) from one for an address no session held
// recently (no_route). It costs one entry per ended session for window,
// never anything per packet. It is the Router's own state: a restarted
// Router starts without it, and counts packets for addresses that ended
// before the restart as no_route.
type endedRoutes struct {
	window time.Duration
	at     map[netip.Addr]time.Time
	// order holds the same ends oldest first, for pruning without a
	// scan; an entry whose address was re-added or ended again later is
	// stale and skipped.
	order []endedRoute
	head  int
}

type endedRoute struct {
	addr netip.Addr
	at   time.Time
}

// add records that addr's session ended at now, and forgets what is
// older than the window.
func (e *endedRoutes) add(addr netip.Addr, now time.Time) {
	e.prune(now)
	if e.at == nil {
		e.at = make(map[netip.Addr]time.Time)
	}
	e.at[addr] = now
	e.order = append(e.order, endedRoute{addr: addr, at: now})
}

// remove forgets addr: a session holds it again.
func (e *endedRoutes) remove(addr netip.Addr) { delete(e.at, addr) }

// within reports whether addr's session ended less than the window
// before now.
func (e *endedRoutes) within(addr netip.Addr, now time.Time) bool {
	e.prune(now)
	_, ok := e.at[addr]
	return ok
}

// prune forgets the ends at least the window old.
func (e *endedRoutes) prune(now time.Time) {
	for e.head < len(e.order) && now.Sub(e.order[e.head].at) >= e.window {
		old := e.order[e.head]
		if at, ok := e.at[old.addr]; ok && at.Equal(old.at) {
			delete(e.at, old.addr)
		}
		e.order[e.head] = endedRoute{}
		e.head++
	}
	switch {
	case e.head == len(e.order):
		e.order, e.head = e.order[:0], 0
	case e.head > len(e.order)/2:
		n := copy(e.order, e.order[e.head:])
		clear(e.order[n:])
		e.order, e.head = e.order[:n], 0
	}
}

// len is the number of addresses remembered (stale order entries aside).
func (e *endedRoutes) len() int { return len(e.at) }

// countDeadBatches counts and releases the TUN-side batches that reach no
// actor: the Router sent them to a session that stopped before the pool's
// RouteDel reached it (session_ended), or the TUN reader sent them to a
// Router that is gone (no_route, at shutdown). Dead letters are published
// on the sender's goroutine, and such a batch has no other owner left.
func countDeadBatches(sys *actor.ActorSystem, cfg *shared) {
	sys.EventStream.Subscribe(func(ev any) {
		dl, ok := ev.(*actor.DeadLetterEvent)
		if !ok {
			return
		}
		b, ok := dl.Message.(*messages.ToClient)
		if !ok {
			return
		}
		reason := DropSessionEnded
		if dl.PID.Equal(cfg.router) {
			reason = DropNoRoute
		}
		cfg.Metrics.Drop(reason, len(b.Packets))
		b.Release()
	})
}
