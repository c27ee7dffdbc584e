package actors

import (
	"log/slog"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/4over6d/4over6d/messages"
	"github.com/4over6d/4over6d/messages/wire"
	"github.com/4over6d/4over6d/tun/tuntest"
)

// Tests of one Session actor on its own: the test plays the pool, the
// Router and the client, so it decides exactly when a lease is granted
// and what reaches the session before that.

// depthGauge is a mailbox middleware that records the most messages ever
// waiting in a mailbox: the memory a client's input costs there.
type depthGauge struct{ depth, max atomic.Int64 }

func (g *depthGauge) MailboxStarted() {}
func (g *depthGauge) MailboxEmpty()   {}
func (g *depthGauge) MessagePosted(any) {
	d := g.depth.Add(1)
	for {
		m := g.max.Load()
		if d <= m || g.max.CompareAndSwap(m, d) {
			return
		}
	}
}
func (g *depthGauge) MessageReceived(any) { g.depth.Add(-1) }

type sessionRig struct {
	t        *testing.T
	sys      *actor.ActorSystem
	cfg      *shared
	pid      *actor.PID
	c        *client
	requests chan *messages.LeaseRequest
	mailbox  *depthGauge
}

// newSessionRig starts a Session on a pipe, with a pool that only records
// the requests it gets; tweaks change its config first.
func newSessionRig(t *testing.T, tweak ...func(*Config)) *sessionRig {
	t.Helper()
	sys := quietSystem()
	r := &sessionRig{t: t, sys: sys, requests: make(chan *messages.LeaseRequest, 16), mailbox: &depthGauge{}}
	cfg := Config{Pool: testPool, DNS: testDNS, Device: tuntest.New("rig0", 1500), Logger: slog.New(slog.DiscardHandler)}
	for _, f := range tweak {
		f(&cfg)
	}
	r.cfg = newShared(cfg.withDefaults(), sys, "rig")
	r.cfg.pool = sys.Root.Spawn(actor.PropsFromFunc(func(ctx actor.Context) {
		if m, ok := ctx.Message().(*messages.LeaseRequest); ok {
			r.requests <- m
		}
	}))
	srv, c := newPipeListener().pair(t, netip.MustParseAddrPort("[2001:db8::2]:4000"))
	r.c = c
	stats := newSessionStats(netip.MustParseAddrPort("[2001:db8::2]:4000"), time.Now())
	props := actor.PropsFromProducer(newSession(r.cfg, srv, stats, messages.ReplySettings{DNS: testDNS}),
		actor.WithMailbox(actor.Unbounded(r.mailbox)))
	r.pid = sys.Root.Spawn(props)
	t.Cleanup(func() {
		_ = sys.Root.PoisonFuture(r.pid).Wait()
		sys.Shutdown()
	})
	return r
}

func (r *sessionRig) request() *messages.LeaseRequest {
	r.t.Helper()
	select {
	case m := <-r.requests:
		return m
	case <-time.After(wait):
		r.t.Fatal("the session asked the pool for no lease")
		return nil
	}
}

func (r *sessionRig) toClient(pkts ...[]byte) {
	b := messages.NewToClient()
	for _, p := range pkts {
		b.AppendCopy(p)
	}
	r.sys.Root.Send(r.pid, b)
}

// The pool tells the Router before the session learns its address, so a
// 103 can reach a session that has not sent its 101: it is dropped and
// counted, and the 101 is still the first frame the client sees.
func TestDataBeforeTheReplyIsDropped(t *testing.T) {
	r := newSessionRig(t)
	r.c.send(wire.TypeIPRequest, nil)
	r.request()
	addr := netip.MustParseAddr("192.0.2.7")
	early, late := ping(inetHost, addr, 1), ping(inetHost, addr, 2)
	r.toClient(early)
	r.sys.Root.Send(r.pid, &messages.LeaseGranted{Addr: addr})
	r.toClient(late)
	if f := r.c.next(wait); f.Type != wire.TypeIPReply {
		t.Fatalf("first frame has type %d, want 101", f.Type)
	}
	if got := r.c.nextData(wait); string(got) != string(late) {
		t.Fatalf("got 103 %x, want the packet sent after the lease", got)
	}
	if n := r.cfg.Metrics.Drops(DropNotAssigned); n != 1 {
		t.Fatalf("not_assigned drops = %d, want 1", n)
	}
}

// A client streaming control frames at line rate costs a few mailbox
// entries, whatever it sends: frames of one kind are coalesced while one
// is waiting for the actor. Every frame is still counted.
func TestControlFloodCostsBoundedMailbox(t *testing.T) {
	r := newSessionRig(t)
	r.c.send(wire.TypeIPRequest, nil)
	r.request()
	r.sys.Root.Send(r.pid, &messages.LeaseGranted{Addr: netip.MustParseAddr("192.0.2.7")})
	if f := r.c.next(wait); f.Type != wire.TypeIPReply {
		t.Fatalf("first frame has type %d, want 101", f.Type)
	}
	const rounds, perRound = 50, 2000
	var burst []byte
	for i := range perRound {
		typ := byte(wire.TypeHeartbeat)
		if i%2 == 1 {
			typ = 150 // no such type
		}
		burst = wire.AppendFrame(burst, typ, nil)
	}
	for range rounds {
		r.c.sendRaw(burst)
	}
	m := r.cfg.Metrics
	eventually(t, wait, "every frame to be counted", func() bool {
		return m.Frames(FrameTypeHeartbeat) == rounds*perRound/2 && m.Frames(FrameTypeUnknown) == rounds*perRound/2
	})
	// Per kind at most one control message, plus the batches budget and
	// timers; without coalescing this is in the tens of thousands.
	if max := r.mailbox.max.Load(); max > inflightBatches+8 {
		t.Fatalf("the session's mailbox held %d messages at once", max)
	}
	if n := m.FrameErrors(FrameUnknownTyp); n != rounds*perRound/2 {
		t.Fatalf("unknown_type frame errors = %d, want %d", n, rounds*perRound/2)
	}
}
