package actors

import (
	"github.com/4over6d/4over6d/messages"
)

// staticsWriter writes the reservations file for one AddressPool
// incarnation, off the pool's goroutine: a slow disk delays only the
// answers to Reserve and Unreserve, never a lease. It holds at most one
// snapshot waiting, the newest (a newer one replaces it unwritten, as it
// holds every change the older one did), and it is the file's only writer,
// so an older snapshot can never overwrite a newer one.
type staticsWriter struct {
	in   chan staticsSnapshot
	done chan struct{}
	last staticsSaved // the goroutine's; read by stop after done
}

type staticsSnapshot struct {
	version uint64
	statics []messages.Static
}

// staticsSaved tells the pool that the snapshot of version is written (or
// why not). It carries the incarnation, as a restarted pool starts its
// versions afresh.
type staticsSaved struct {
	incarnation, version uint64
	err                  error
}

func (*staticsSaved) IgnoreDeadLetterLogging() {}

func startStaticsWriter(path string, incarnation uint64, notify func(*staticsSaved)) *staticsWriter {
	w := &staticsWriter{in: make(chan staticsSnapshot, 1), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		for s := range w.in {
			w.last = staticsSaved{incarnation: incarnation, version: s.version, err: saveReservationsFile(path, s.statics)}
			saved := w.last
			notify(&saved)
		}
	}()
	return w
}

// offer queues s, replacing a snapshot not yet taken. Only the pool
// calls it, so after the drain the channel has room.
func (w *staticsWriter) offer(s staticsSnapshot) {
	select {
	case <-w.in:
	default:
	}
	w.in <- s
}

// stop waits until the newest snapshot is written and the goroutine is
// gone, and returns the last outcome.
func (w *staticsWriter) stop() staticsSaved {
	close(w.in)
	<-w.done
	return w.last
}
