package actors

// The session's way to its client: a bounded data lane for 103 batches and
// a control lane for 101, 104 and 199, drained by one writer goroutine
// that runs only while there is something to write.
//
//  1. The session actor queues data with offer (dropped and counted when the
//     client is slow) and control with control (never dropped); either
//     starts a writer if none is running. Data for an idle queue (a
//     ping's reply) and a control frame for one (an idle session's
//     heartbeat) are written by the actor itself with one non-blocking
//     write (sendNow, controlNow); a writer starts only for what the
//     socket did not take.
//  2. The writer takes control first: before every data batch it looks at
//     the control lane, so a control frame waits behind at most the batch
//     being encoded, however full the data lane is.
//  3. Frames are coalesced into one borrowed buffer and written when the
//     queue runs empty or the buffer is full; with the queue empty and
//     flushed, the writer gives the buffer back and exits.

import (
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
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
//
// The writer runs only while there is something to write: the actor starts
// it when it queues into an idle queue, and it exits once it has flushed
// and found both lanes empty, so an idle session holds no writer goroutine
// (its stack was a third of an idle session's memory). running is the
// token that makes it one writer at a time: whoever sets it (the actor
// starting a writer or writing a control frame at once, a parking writer
// that finds more work) is the only one touching the connection until it
// clears it.
type outQueue struct {
	data    chan *messages.ToClient
	ctrl    chan controlFrame // holds one frame per pending kind at most
	pending atomic.Uint32     // kinds queued in ctrl and not yet taken
	queued  *atomic.Int64     // shared with SessionStats for the status page
	limit   int64
	running atomic.Bool // a writer (or the actor, for one control frame) holds the connection
	w       *clientWriter
	closed  bool                // the actor closed the queue; the actor's alone
	rest    []byte              // the unwritten tail of a frame the actor began to write; the next writer's first bytes
	restBuf *[writeBufSize]byte // the borrowed buffer rest lies in (nil for a control frame's)
	linger  *time.Timer         // the writers' wait on an empty queue (writerLinger); made by the first
}

// clientWriter is what a writer goroutine needs, fixed for the session's
// life.
type clientWriter struct {
	conn  net.Conn
	raw   syscall.RawConn // nil when conn has no file descriptor (tests' pipes)
	stall time.Duration
	m     *Metrics
	sys   *actor.ActorSystem
	self  *actor.PID
	wg    *sync.WaitGroup // the session's I/O goroutines, joined in Stopped
	// sysWrite is the non-blocking write of controlNow and sendNow (nil:
	// syscall.Write); tests make it write short.
	sysWrite func(fd int, b []byte) (int, error)
	// try is the callback of tryWrite's raw write, made once by attach
	// (a closure per write would allocate on the packet path); tryBuf
	// and tryN are its argument and result, the caller's alone.
	try    func(fd uintptr) bool
	tryBuf []byte
	tryN   int
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

// attach gives the queue its connection: from now on queuing starts a
// writer when none is running. Without it (the lane tests) nothing is
// written.
func (q *outQueue) attach(w *clientWriter) {
	if sc, ok := w.conn.(syscall.Conn); ok && w.raw == nil {
		w.raw, _ = sc.SyscallConn()
	}
	w.try = w.rawWrite
	q.w = w
}

// offer queues a batch unless that would exceed the bound or the queue is
// closed; it never blocks, so a slow client cannot stall the Router.
func (q *outQueue) offer(b *messages.ToClient) bool {
	n := int64(len(b.Packets))
	if q.closed || q.queued.Load()+n > q.limit {
		return false
	}
	if q.sendNow(b) {
		return true
	}
	select {
	case q.data <- b:
		q.queued.Add(n)
		q.wake()
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
	q.wake()
	return true
}

// controlNow writes a control frame at once when no writer is running and
// nothing is queued, with one non-blocking write from the caller (the
// session actor), so an idle session's heartbeat wakes no goroutine; it
// queues the frame otherwise, or for whatever a full socket did not take.
// It never blocks: a client that stopped reading is the writer's to wait
// for (and to time out).
func (q *outQueue) controlNow(k controlKind, frame []byte) {
	if q.w == nil || q.w.raw == nil || q.closed || !q.empty() || !q.running.CompareAndSwap(false, true) {
		q.control(k, frame)
		return
	}
	// A writer that was parking may have cleared running just before new
	// work came in: the frame must not overtake a queued 101.
	n := 0
	if q.empty() {
		n = q.w.tryWrite(frame)
	}
	switch {
	case n == len(frame):
		q.running.Store(false)
	case n > 0:
		q.rest = frame[n:] // the rest of this frame goes before anything else
		q.start()
	default:
		if controlKind(q.pending.Or(uint32(k)))&k == 0 {
			q.ctrl <- controlFrame{kind: k, frame: frame}
		}
		q.start()
	}
}

// sendNow writes a data batch at once when no writer is running and
// nothing is queued, with one non-blocking write from the caller (the
// session actor), so a lone packet (a ping's reply) wakes no writer
// goroutine; whatever the socket did not take, a writer sends next, before
// anything queued after it. It reports whether it took b (then released
// and counted out); false leaves b to be queued.
func (q *outQueue) sendNow(b *messages.ToClient) bool {
	if q.w == nil || q.w.raw == nil || !q.empty() || !q.running.CompareAndSwap(false, true) {
		return false
	}
	if !q.empty() {
		// A parking writer let go just as more came in: the work left is
		// a new writer's, and b goes behind it.
		q.start()
		return false
	}
	size := 0
	for _, pkt := range b.Packets {
		size += wire.HeaderLen + len(pkt)
	}
	if size > writeBufSize {
		q.running.Store(false) // too big to write in one: the writer's
		return false
	}
	buf := writeBufs.Get().(*[writeBufSize]byte)
	out := buf[:0]
	for _, pkt := range b.Packets {
		out = wire.AppendFrame(out, wire.TypeDataReply, pkt)
	}
	q.w.m.PacketsOut.Add(uint64(len(b.Packets)))
	q.w.m.BytesOut.Add(uint64(b.Bytes()))
	b.Release()
	n := q.w.tryWrite(out)
	if n == len(out) {
		writeBufs.Put(buf)
		q.running.Store(false)
		return true
	}
	q.rest, q.restBuf = out[n:], buf // the writer sends the rest first, then gives buf back
	q.start()
	return true
}

// take marks a control frame as taken by the writer, so the next one of
// its kind is queued rather than coalesced.
func (q *outQueue) take(c controlFrame) []byte {
	q.pending.And(^uint32(c.kind))
	return c.frame
}

// empty reports whether both lanes are empty (a closed, drained data lane
// counts as empty).
func (q *outQueue) empty() bool { return len(q.ctrl) == 0 && len(q.data) == 0 }

// wake starts a writer unless one is running or the queue is closed. Only
// the session actor calls it, so the WaitGroup's Add never races its Wait.
func (q *outQueue) wake() {
	if q.w == nil || q.closed || !q.running.CompareAndSwap(false, true) {
		return
	}
	q.start()
}

// start runs a writer for the holder of running, which hands it over.
func (q *outQueue) start() {
	q.w.wg.Add(1)
	go q.write()
}

// park is the writer's way out: it gives up running and reports whether it
// must carry on, because something was queued before it let go and no one
// else has started on it.
func (q *outQueue) park() (carryOn bool) {
	q.running.Store(false)
	return !q.empty() && q.running.CompareAndSwap(false, true)
}

// close ends the queue; a running writer drains what is queued and exits,
// and without one the actor releases the batches itself. Only the session
// actor calls it, once, at shutdown, after closing the connection.
func (q *outQueue) close() {
	q.closed = true
	close(q.data)
	if q.running.CompareAndSwap(false, true) {
		q.discard()
	}
}

// discard releases the batches left in the closed data lane, counted as
// session_ended: they were for a session that is closing.
func (q *outQueue) discard() {
	for b := range q.data {
		if q.w != nil {
			q.w.m.Drop(DropSessionEnded, len(b.Packets))
		}
		q.queued.Add(-int64(len(b.Packets)))
		b.Release()
	}
}

// writeBufSize is the coalescing buffer borrowed while data flows: many
// 103 frames go out in one write, and it goes back to the pool when the
// queue drains, so an idle session holds none.
const writeBufSize = 128 << 10

var writeBufs = sync.Pool{New: func() any { return new([writeBufSize]byte) }}

// write is one writer goroutine: it drains the queue to the connection,
// flushing whenever the queue is empty, and exits when it stays empty. A
// write that makes no progress within stall fails, which closes the
// session; that writer then keeps running (so no other starts) and
// releases what is queued until the actor closes the queue.
func (q *outQueue) write() {
	defer q.w.wg.Done()
	w := &coalescer{conn: q.w.conn, stall: q.w.stall, q: q, m: q.w.m}
	err := w.run()
	if err == nil {
		return
	}
	// Tell the actor first: it closes the queue, which ends the drain
	// below.
	q.w.sys.Root.Send(q.w.self, &connClosed{reason: CloseWriteError, err: err})
	w.release()
	q.discard()
}

// tryWrite makes one non-blocking write of b and returns how much of it
// went out (0 when the socket buffer is full or the write failed: the
// writer then tries again and reports the failure).
func (w *clientWriter) tryWrite(b []byte) int {
	w.tryBuf = b
	defer func() { w.tryBuf = nil }()
	for retry := true; ; retry = false {
		w.tryN = 0
		err := w.raw.Write(w.try)
		// A deadline a writer set for its last write has passed by the
		// time a heartbeat is due; lift it and try once more.
		if errors.Is(err, os.ErrDeadlineExceeded) && retry && w.conn.SetWriteDeadline(time.Time{}) == nil {
			continue
		}
		return w.tryN
	}
}

// rawWrite is tryWrite's callback: one write of tryBuf, never waiting for
// room (that is the writer's job).
func (w *clientWriter) rawWrite(fd uintptr) bool {
	write := w.sysWrite
	if write == nil {
		write = syscall.Write
	}
	n, err := write(int(fd), w.tryBuf)
	if err != nil || n < 0 {
		n = 0
	}
	w.tryN = n
	return true
}

type coalescer struct {
	conn  net.Conn
	stall time.Duration
	q     *outQueue
	m     *Metrics
	buf   *[writeBufSize]byte
	n     int
}

// run writes until the queue has stayed empty for writerLinger (nil,
// after parking) or the data lane is closed.
func (w *coalescer) run() error {
	if rest := w.q.rest; rest != nil {
		err := w.append(rest, 0, nil)
		if w.q.restBuf != nil {
			writeBufs.Put(w.q.restBuf)
		}
		w.q.rest, w.q.restBuf = nil, nil
		if err != nil {
			return err
		}
	}
	for {
		frame, b, open, empty := w.next()
		if empty {
			if err := w.idle(); err != nil {
				return err
			}
			if frame, b, open, empty = w.wait(); empty {
				if !w.q.park() {
					return nil
				}
				continue
			}
		}
		var err error
		switch {
		case frame != nil:
			err = w.append(frame, 0, nil)
		case b != nil:
			err = w.batch(b)
		case !open:
			return w.flush()
		}
		if err != nil {
			return err
		}
	}
}

// writerLinger is how long a writer waits on an empty queue before it
// exits. Data rarely comes alone: within a flow the next batch usually
// follows within milliseconds, and a writer that is still there costs the
// sender one wake-up where a new one costs a start and the growth of its
// stack (the stream case of BenchmarkSessionWriter was 3-4x slower when
// writers exited at once). An idle session's control frames need no
// writer at all (controlNow), so idle sessions hold none.
const writerLinger = 250 * time.Millisecond

// next returns a pending control frame if there is one, else the next data
// batch (open is false once the data lane is closed and drained), else
// empty.
func (w *coalescer) next() (frame []byte, b *messages.ToClient, open, empty bool) {
	select {
	case c := <-w.q.ctrl:
		return w.q.take(c), nil, true, false
	default:
	}
	select {
	case b, open = <-w.q.data:
		return nil, b, open, false
	default:
		return nil, nil, true, true
	}
}

// wait is next that waits up to writerLinger for either lane; empty means
// nothing came.
func (w *coalescer) wait() (frame []byte, b *messages.ToClient, open, empty bool) {
	t := w.q.linger
	if t == nil {
		t = time.NewTimer(writerLinger)
		w.q.linger = t
	} else {
		t.Reset(writerLinger)
	}
	select {
	case c := <-w.q.ctrl:
		t.Stop()
		return w.q.take(c), nil, true, false
	case b, open = <-w.q.data:
		t.Stop()
		return nil, b, open, false
	case <-t.C:
		return nil, nil, true, true
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
