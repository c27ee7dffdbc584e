package actors

// The session's way to its client: a bounded data lane for 103 batches and
// a control lane for 101, 104 and 199, drained by one writer goroutine.
//
//  1. The session actor queues data with offer (dropped and counted when the
//     client is slow) and control with control (never dropped).
//  2. The writer takes control first: before every data batch it looks at
//     the control lane, so a control frame waits behind at most the batch
//     being encoded, however full the data lane is.
//  3. Frames are coalesced into one borrowed buffer and written when the
//     queue runs empty or the buffer is full.

import (
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/4over6d/4over6d/messages"
	"github.com/4over6d/4over6d/messages/wire"
)

// controlKind names a control frame towards the client. At most one frame
// of each kind is pending at a time: a second heartbeat or 101 asked for
// while the first has not been written yet says nothing the first does not,
// so it is coalesced into it. That bounds the control lane without ever
// dropping what a client waits for.
type controlKind uint32

const (
	controlReply       controlKind = 1 << iota // 101
	controlHeartbeat                           // 104
	controlUnsupported                         // 199
	numControlKinds    = 3
)

// controlFrame is one pending control frame; frame is immutable.
type controlFrame struct {
	kind  controlKind
	frame []byte
}

// outQueue is a session's queue towards its client. The session actor is
// the only sender and the writer goroutine the only receiver; queued
// counts data packets, so the bound holds however packets are batched.
type outQueue struct {
	data    chan *messages.ToClient
	ctrl    chan controlFrame // holds one frame per pending kind at most
	pending atomic.Uint32     // kinds queued in ctrl and not yet taken
	queued  *atomic.Int64     // shared with SessionStats for the status page
	limit   int64
}

// outQueueSlots bounds the data batches queued for the writer, besides the
// bound in packets. Every session carries the channel's buffer for life (8
// bytes a slot), so it is sized for memory: 32 slots keep a writer that is
// busy with one write fed, and the packet bound (-queue) is what limits a
// slow client.
const outQueueSlots = 32

func newOutQueue(limitPackets int, queued *atomic.Int64) *outQueue {
	return &outQueue{
		data:   make(chan *messages.ToClient, outQueueSlots),
		ctrl:   make(chan controlFrame, numControlKinds),
		queued: queued,
		limit:  int64(limitPackets),
	}
}

// offer queues a batch unless that would exceed the bound; it never blocks,
// so a slow client cannot stall the Router.
func (q *outQueue) offer(b *messages.ToClient) bool {
	n := int64(len(b.Packets))
	if q.queued.Load()+n > q.limit {
		return false
	}
	select {
	case q.data <- b:
		q.queued.Add(n)
		return true
	default:
		return false
	}
}

// control queues a control frame of kind k, or reports that one of that
// kind is already pending (coalesced). It never blocks and never drops:
// ctrl has room for one frame of every kind.
func (q *outQueue) control(k controlKind, frame []byte) (queued bool) {
	if controlKind(q.pending.Or(uint32(k)))&k != 0 {
		return false
	}
	q.ctrl <- controlFrame{kind: k, frame: frame}
	return true
}

// take marks a control frame as taken by the writer, so the next one of
// its kind is queued rather than coalesced.
func (q *outQueue) take(c controlFrame) []byte {
	q.pending.And(^uint32(c.kind))
	return c.frame
}

// close ends the writer once it has drained what is queued. Only the
// session actor calls it, once, at shutdown.
func (q *outQueue) close() { close(q.data) }

// writeBufSize is the coalescing buffer borrowed while data flows: many
// 103 frames go out in one write, and it goes back to the pool when the
// queue drains, so an idle session holds none.
const writeBufSize = 128 << 10

var writeBufs = sync.Pool{New: func() any { return new([writeBufSize]byte) }}

// writeClient drains the queue to the connection, flushing whenever the
// queue is empty. A write that makes no progress within stall fails, which
// closes the session.
func writeClient(conn net.Conn, q *outQueue, stall time.Duration, m *Metrics, sys *actor.ActorSystem, self *actor.PID, wg *sync.WaitGroup) {
	defer wg.Done()
	w := &coalescer{conn: conn, stall: stall, q: q, m: m}
	if err := w.run(); err != nil {
		// Tell the actor first: it closes the queue, which ends the
		// drain below.
		sys.Root.Send(self, &connClosed{reason: CloseWriteError, err: err})
	}
	w.release()
	for b := range q.data {
		m.Drop(DropSessionEnded, len(b.Packets))
		q.queued.Add(-int64(len(b.Packets)))
		b.Release()
	}
}

type coalescer struct {
	conn  net.Conn
	stall time.Duration
	q     *outQueue
	m     *Metrics
	buf   *[writeBufSize]byte
	n     int
}

// run writes until the data lane is closed.
func (w *coalescer) run() error {
	for {
		frame, b, open, err := w.next()
		switch {
		case err != nil:
		case frame != nil:
			err = w.append(frame, 0, nil)
		case !open:
			return w.flush()
		default:
			err = w.batch(b)
		}
		if err != nil {
			return err
		}
	}
}

// next returns a pending control frame if there is one, else the next data
// batch (open is false once the data lane is closed); with both lanes empty
// it flushes and waits for either.
func (w *coalescer) next() (frame []byte, b *messages.ToClient, open bool, err error) {
	select {
	case c := <-w.q.ctrl:
		return w.q.take(c), nil, true, nil
	default:
	}
	select {
	case b, open = <-w.q.data:
		return nil, b, open, nil
	default:
	}
	if err := w.idle(); err != nil {
		return nil, nil, false, err
	}
	select {
	case c := <-w.q.ctrl:
		return w.q.take(c), nil, true, nil
	case b, open = <-w.q.data:
		return nil, b, open, nil
	}
}

// idle flushes before the writer blocks and gives the buffer back, so a
// quiet session holds none.
func (w *coalescer) idle() error {
	if err := w.flush(); err != nil {
		return err
	}
	w.release()
	return nil
}

func (w *coalescer) release() {
	if w.buf != nil {
		writeBufs.Put(w.buf)
		w.buf = nil
	}
}

func (w *coalescer) batch(b *messages.ToClient) error {
	defer b.Release()
	w.q.queued.Add(-int64(len(b.Packets)))
	for _, pkt := range b.Packets {
		if err := w.append(nil, wire.TypeDataReply, pkt); err != nil {
			w.m.Drop(DropSessionEnded, len(b.Packets)) // not counted out: the connection failed
			return err
		}
	}
	w.m.PacketsOut.Add(uint64(len(b.Packets)))
	w.m.BytesOut.Add(uint64(b.Bytes()))
	return nil
}

// append adds a raw frame, or a frame of type typ around payload, flushing
// first if it would not fit.
func (w *coalescer) append(raw []byte, typ byte, payload []byte) error {
	need := len(raw)
	if raw == nil {
		need = wire.HeaderLen + len(payload)
	}
	if w.buf == nil {
		w.buf = writeBufs.Get().(*[writeBufSize]byte)
	}
	if w.n+need > writeBufSize {
		if err := w.flush(); err != nil {
			return err
		}
	}
	var out []byte
	if raw != nil {
		out = append(w.buf[w.n:w.n], raw...)
	} else {
		out = wire.AppendFrame(w.buf[w.n:w.n], typ, payload)
	}
	w.n += len(out)
	return nil
}

func (w *coalescer) flush() error {
	if w.n == 0 {
		return nil
	}
	if err := w.conn.SetWriteDeadline(time.Now().Add(w.stall)); err != nil {
		return fmt.Errorf("failed to set write deadline: %w", err)
	}
	_, err := w.conn.Write(w.buf[:w.n])
	w.n = 0
	if err != nil {
		return fmt.Errorf("failed to write to client: %w", err)
	}
	return nil
}
