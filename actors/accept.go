package actors

import (
	"errors"
	"log/slog"
	"net"
	"time"

	"github.com/asynkron/protoactor-go/actor"
)

// acceptor is the Supervisor's accept goroutine and the hand-over between
// them. Connections travel in a channel the Supervisor owns, not inside
// actor messages: a message still in a mailbox when its actor stops is
// dropped without a trace, and its connection would stay open and never
// be served. The goroutine only sends a tick per connection; at stop the
// Supervisor closes whatever is still in the channel.
type acceptor struct {
	l     net.Listener
	conns chan net.Conn
	quit  chan struct{} // closed by stop: a goroutine waiting to hand over gives up
	done  chan struct{} // closed when the goroutine has exited
}

// acceptTick tells the Supervisor that a connection is waiting in conns.
type acceptTick struct{}

func (*acceptTick) IgnoreDeadLetterLogging() {}

var tickAccept = &acceptTick{}

// acceptBacklog is how many accepted connections may wait for the
// Supervisor; beyond it the goroutine stops accepting and the kernel's
// listen backlog holds the rest.
const acceptBacklog = 64

// acceptRetry is the pause after a failed Accept (such as running out of
// file descriptors), so the loop does not spin.
const acceptRetry = 50 * time.Millisecond

func startAcceptor(l net.Listener, log *slog.Logger, sys *actor.ActorSystem, self *actor.PID) *acceptor {
	a := &acceptor{l: l, conns: make(chan net.Conn, acceptBacklog), quit: make(chan struct{}), done: make(chan struct{})}
	go a.loop(log, sys, self)
	return a
}

// loop never stalls on a client: it only hands connections over.
func (a *acceptor) loop(log *slog.Logger, sys *actor.ActorSystem, self *actor.PID) {
	defer close(a.done)
	for {
		conn, err := a.l.Accept()
		if errors.Is(err, net.ErrClosed) {
			return
		}
		if err != nil {
			log.Error("failed to accept a connection; retrying", slog.Any("err", err))
			select {
			case <-time.After(acceptRetry):
				continue
			case <-a.quit:
				return
			}
		}
		select {
		case a.conns <- conn:
			sys.Root.Send(self, tickAccept)
		case <-a.quit:
			_ = conn.Close()
			return
		}
	}
}

// take returns a connection the goroutine handed over, if any is left.
func (a *acceptor) take() (net.Conn, bool) {
	if a == nil {
		return nil, false
	}
	select {
	case c := <-a.conns:
		return c, true
	default:
		return nil, false
	}
}

// stop closes the listener, waits for the goroutine and closes every
// connection not yet taken: their clients see the server go away.
func (a *acceptor) stop() {
	close(a.quit)
	_ = a.l.Close()
	<-a.done
	for {
		c, ok := a.take()
		if !ok {
			return
		}
		_ = c.Close()
	}
}
