package actors

import (
	"net/netip"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/4over6d/4over6d/messages"
	"github.com/4over6d/4over6d/messages/wire"
)

// A closing session stops only once the Router has dropped its route, so
// the batches the Router sent it until then are counted as session_ended
// rather than discarded with its mailbox; without an answer it stops after
// routeReleaseWait.
func TestClosingSessionCountsWhatTheRouterSentIt(t *testing.T) {
	tests := []struct {
		name   string
		answer bool // the stand-in Router answers the RouteDel
	}{
		{"the Router answers", true},
		{"the Router does not answer", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := newSessionRig(t)
			dels := make(chan *actor.PID, 1) // who asked
			router, err := r.sys.Root.SpawnNamed(actor.PropsFromFunc(func(ctx actor.Context) {
				if m, ok := ctx.Message().(*messages.RouteDel); ok && ctx.Sender() != nil {
					dels <- m.Session
				}
			}), "rig/router")
			if err != nil {
				t.Fatal(err)
			}
			if !router.Equal(r.cfg.router) {
				t.Fatalf("stand-in Router %v is not the session's %v", router, r.cfg.router)
			}
			addr := netip.MustParseAddr("192.0.2.7")
			r.c.send(wire.TypeIPRequest, nil)
			r.request()
			r.sys.Root.Send(r.pid, &messages.LeaseGranted{Addr: addr})
			if f := r.c.next(wait); f.Type != wire.TypeIPReply {
				t.Fatalf("first frame has type %d, want 101", f.Type)
			}
			ended := make(chan struct{})
			r.sys.Root.Spawn(actor.PropsFromFunc(func(ctx actor.Context) {
				switch ctx.Message().(type) {
				case *actor.Started:
					ctx.Watch(r.pid)
				case *actor.Terminated:
					close(ended)
				}
			}))
			_ = r.c.conn.Close()
			var asker *actor.PID
			select {
			case asker = <-dels:
			case <-time.After(wait):
				t.Fatal("the closing session did not ask the Router to drop its route")
			}
			// What the Router sent before it handled the RouteDel: the
			// session is still there to count it.
			r.toClient(ping(inetHost, addr, 1), ping(inetHost, addr, 2))
			r.toClient(ping(inetHost, addr, 3))
			eventually(t, wait, "3 session_ended drops", func() bool { return r.cfg.Metrics.Drops(DropSessionEnded) == 3 })
			if tc.answer {
				r.sys.Root.RequestWithCustomSender(asker, &routeReleased{}, router)
			}
			select {
			case <-ended:
			case <-time.After(wait):
				t.Fatal("the session did not stop")
			}
		})
	}
}
