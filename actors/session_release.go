package actors

import (
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/4over6d/4over6d/messages"
)

// routeReleaseWait bounds how long a closing session waits for the Router
// to confirm that its route is gone (a Router that is restarting may never
// answer); the session then stops anyway.
const routeReleaseWait = time.Second

type (
	// routeReleased is the Router's answer to a session's RouteDel.
	routeReleased  struct{}
	releaseTimeout struct{}
)

func (*routeReleased) IgnoreDeadLetterLogging()  {}
func (*releaseTimeout) IgnoreDeadLetterLogging() {}

// releaseRoute begins the end of an assigned session: its connection and
// queue close at once, and the Router is asked to drop its route. The
// Router answers after every batch it sent the session, which therefore
// reach the session first and are counted (session_ended) instead of
// being discarded with the mailbox of a stopped actor. It reports whether
// the session now waits for that answer before it stops.
func (s *Session) releaseRoute(ctx actor.Context) bool {
	if s.releasing {
		return true
	}
	if s.state != stateAssigned || !s.addr.IsValid() {
		return false
	}
	s.releasing = true
	s.shutdown()
	ctx.Request(s.cfg.router, &messages.RouteDel{Addr: s.addr, Session: ctx.Self()})
	s.releaseWait = sendAfter(ctx.ActorSystem(), ctx.Self(), routeReleaseWait, &releaseTimeout{})
	return true
}

// onReleased stops a releasing session once the Router has answered (or
// the wait is over, or the Router is gone: a dead letter's response).
func (s *Session) onReleased(ctx actor.Context) {
	if !s.releasing {
		return
	}
	stopTimer(s.releaseWait)
	ctx.Stop(ctx.Self())
}
