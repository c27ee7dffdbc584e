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
	"sync"
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
type workerDispatcher struct {
	work chan func()   // unbuffered: a send succeeds only into a waiting worker
	quit chan struct{} // closed by stop: waiting workers exit
	wg   sync.WaitGroup
}

var _ actor.Dispatcher = (*workerDispatcher)(nil)

func newWorkerDispatcher() *workerDispatcher {
	return &workerDispatcher{work: make(chan func()), quit: make(chan struct{})}
}

// stop ends the waiting workers and waits for every worker to exit, so a
// closed server leaves no goroutine behind. A turn scheduled after it
// still runs, on a worker that exits at once.
func (d *workerDispatcher) stop() {
	close(d.quit)
	d.wg.Wait()
}

// Schedule hands fn (one mailbox turn) to a waiting worker, or to a new
// one when none waits. It never blocks.
func (d *workerDispatcher) Schedule(fn func()) {
	select {
	case d.work <- fn:
	default:
		d.wg.Add(1)
		go d.worker(fn)
	}
}

// Throughput is the number of messages of one mailbox turn.
func (d *workerDispatcher) Throughput() int { return dispatchThroughput }

// worker runs turns until none has come for workerLinger or the
// dispatcher stops.
func (d *workerDispatcher) worker(fn func()) {
	defer d.wg.Done()
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
