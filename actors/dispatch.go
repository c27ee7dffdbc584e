package actors

// The dispatcher of the actors on the packet path (sessions, Router, TUN
// actor). protoactor's default dispatcher starts a new goroutine every
// time an idle mailbox gets a message (`go fn()`). At idle, that is every
// packet: a ping crosses four such mailboxes on the server. A new
// goroutine starts with the runtime's small starting stack, and the
// actor's receive path (protoactor's context, our Receive, the syscall
// underneath) outgrows it, so every packet also paid for a few stack
// copies (runtime.morestack, ~9% of the server's CPU in an idle-ping
// profile; the uplink spent ~80 µs in user space per packet).
//
// workerDispatcher runs each mailbox's turn on a parked worker goroutine
// instead, whose stack has already grown, and starts a new one only when
// every worker is busy. A worker exits after it has waited workerLinger
// with nothing to do, so an idle server keeps none for long. It moves
// mailbox turns only: which actor runs, in what order, and what it may
// touch are protoactor's rules as before (one turn of a mailbox at a time).

import (
	"fmt"
	"sync/atomic"
	"time"

	"github.com/asynkron/protoactor-go/actor"
)

// workerLinger is how long an idle worker waits for a mailbox turn before
// it exits: long enough to span the gaps of a ping or a heartbeat burst,
// short enough that an idle server holds no workers.
const workerLinger = 2 * time.Second

// dispatchThroughput is protoactor's default: messages per mailbox turn
// before the worker yields to other mailboxes.
const dispatchThroughput = 300

// workerDispatcher is an actor.Dispatcher with a pool of parked workers.
// It counts its workers with an atomic rather than a sync.WaitGroup: a
// live actor may schedule a turn while stop is waiting (a wedged server
// being closed), and a WaitGroup forbids an Add racing its Wait.
type workerDispatcher struct {
	work    chan func()   // unbuffered: a send succeeds only into a waiting worker
	quit    chan struct{} // closed by stop: waiting workers exit
	live    atomic.Int64  // workers started and not yet exited
	exited  chan struct{} // a token each time a worker exits after stop began
	stopped atomic.Bool
}

var _ actor.Dispatcher = (*workerDispatcher)(nil)

func newWorkerDispatcher() *workerDispatcher {
	return &workerDispatcher{work: make(chan func()), quit: make(chan struct{}), exited: make(chan struct{}, 1)}
}

// stop ends the waiting workers and waits up to limit for every worker to
// exit, so a closed server leaves no goroutine behind; a worker stuck in a
// turn (a wedged actor) cannot be waited for, and stop returns an error
// naming how many are left rather than hanging its caller. A turn
// scheduled after stop still runs, on a worker that exits at once.
func (d *workerDispatcher) stop(limit time.Duration) error {
	if d.stopped.Swap(true) {
		return nil
	}
	close(d.quit)
	deadline := time.NewTimer(limit)
	defer deadline.Stop()
	for d.live.Load() > 0 {
		select {
		case <-d.exited:
		case <-deadline.C:
			return fmt.Errorf("%d actor worker goroutines still busy after %v", d.live.Load(), limit)
		}
	}
	return nil
}

// Schedule hands fn (one mailbox turn) to a waiting worker, or to a new
// one when none waits. It never blocks.
func (d *workerDispatcher) Schedule(fn func()) {
	select {
	case d.work <- fn:
	default:
		d.live.Add(1)
		go d.worker(fn)
	}
}

// Throughput is the number of messages of one mailbox turn.
func (d *workerDispatcher) Throughput() int { return dispatchThroughput }

// worker runs turns until none has come for workerLinger or the
// dispatcher stops.
func (d *workerDispatcher) worker(fn func()) {
	defer d.exit()
	t := time.NewTimer(workerLinger)
	defer t.Stop()
	for {
		fn()
		fn = nil
		t.Reset(workerLinger)
		select {
		case fn = <-d.work:
		case <-t.C:
			return
		case <-d.quit:
			return
		}
	}
}

// exit counts a worker out and, once stop has begun, wakes stop to look
// at the count again (one token is enough: stop re-reads the count).
func (d *workerDispatcher) exit() {
	d.live.Add(-1)
	if d.stopped.Load() {
		select {
		case d.exited <- struct{}{}:
		default:
		}
	}
}
