package actors

import (
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/4over6d/4over6d/messages"
)

// The session's two I/O goroutines. Each belongs to its Session actor,
// talks to it only by messages (reader) or by the session's bounded queue
// (writer), and exits when the actor closes the connection or the queue.

// clientFrame tells the session that a non-data frame arrived. The values
// are preallocated per type, so control traffic allocates nothing.
type clientFrame struct{ typ byte }

func (*clientFrame) IgnoreDeadLetterLogging() {}

var (
	frameIPRequest = &clientFrame{messages.TypeIPRequest}
	frameHeartbeat = &clientFrame{messages.TypeHeartbeat}
	frameEncrypt   = &clientFrame{messages.TypeEncryptRequest}
	frameOther     = &clientFrame{0}
)

func controlMessage(typ byte) *clientFrame {
	switch typ {
	case messages.TypeIPRequest:
		return frameIPRequest
	case messages.TypeHeartbeat:
		return frameHeartbeat
	case messages.TypeEncryptRequest:
		return frameEncrypt
	}
	return frameOther
}

// connClosed reports that one of the session's I/O goroutines hit the end
// of the connection, and why.
type connClosed struct {
	reason CloseReason
	err    error
}

func (*connClosed) IgnoreDeadLetterLogging() {}

// readClient decodes frames until the connection ends. 102 packets are
// batched while more frames are already buffered and sent as soon as the
// decoder would block, so a burst costs one actor message and a lone packet
// is not delayed.
//
// Each batch takes a token of the session's budget first; with none left the
// reader waits, the socket is not read, and TCP slows the client down.
func readClient(conn net.Conn, budget messages.Budget, done <-chan struct{}, m *Metrics, sys *actor.ActorSystem, self *actor.PID, wg *sync.WaitGroup) {
	defer wg.Done()
	send := func(msg any) bool {
		if b, ok := msg.(*messages.FromClient); ok && !budget.Acquire(&b.Batch, done) {
			b.Release()
			return false
		}
		sys.Root.Send(self, msg)
		return true
	}
	reason, err := decodeLoop(conn, m, send)
	sys.Root.Send(self, &connClosed{reason: reason, err: err})
}

// errStopped ends the decode loop when the session is going away.
var errStopped = errors.New("session stopped")

func decodeLoop(r io.Reader, m *Metrics, send func(any) bool) (reason CloseReason, err error) {
	defer func() {
		if p := recover(); p != nil {
			reason, err = ClosePanic, fmt.Errorf("panic in session reader: %v", p)
		}
	}()
	dec := messages.NewDecoder(r)
	defer dec.Release()
	var batch *messages.FromClient
	flush := func() bool {
		ok := batch == nil || send(batch)
		batch = nil
		return ok
	}
	for {
		f, err := dec.Next()
		if err != nil {
			flush()
			return classifyReadErr(err, m)
		}
		switch f.Type {
		case messages.TypeDataRequest:
			pkt, _, _, perr := messages.ParseIPv4(f.Payload)
			if perr != nil {
				m.Drop(DropNotIPv4, 1)
				break
			}
			if batch == nil {
				batch = messages.NewFromClient()
			}
			batch.AppendCopy(pkt)
		default:
			if !flush() || !send(controlMessage(f.Type)) {
				return CloseStopped, errStopped
			}
		}
		if batch != nil && (batch.Full() || !dec.Buffered()) && !flush() {
			return CloseStopped, errStopped
		}
	}
}

func classifyReadErr(err error, m *Metrics) (CloseReason, error) {
	var tooLarge *messages.FrameTooLargeError
	switch {
	case errors.Is(err, io.EOF):
		return CloseClientClosed, nil
	case errors.As(err, &tooLarge):
		m.FrameError(FrameTooLarge)
		return CloseFramingLost, err
	case errors.Is(err, io.ErrUnexpectedEOF):
		m.FrameError(FrameTruncated)
		return CloseTruncated, err
	case errors.Is(err, net.ErrClosed):
		return CloseStopped, nil
	}
	return CloseReadError, err
}

// outQueue is a session's bounded queue towards its client. The session
// actor is the only sender and the writer goroutine the only receiver;
// queued counts packets, so the bound holds however packets are batched.
type outQueue struct {
	ch     chan outItem
	queued *atomic.Int64 // shared with SessionStats for the status page
	limit  int64
}

// outItem is either a batch of 103 packets or one pre-encoded control frame.
type outItem struct {
	batch *messages.ToClient
	frame []byte
}

// outQueueSlots bounds the items (batches or control frames) queued for
// the writer, besides the bound in packets. Every session carries the
// channel's buffer for life (32 bytes a slot), so it is sized for memory:
// 32 slots keep a writer that is busy with one write fed, and the packet
// bound (-queue) is what limits a slow client.
const outQueueSlots = 32

func newOutQueue(limitPackets int, queued *atomic.Int64) *outQueue {
	return &outQueue{ch: make(chan outItem, outQueueSlots), queued: queued, limit: int64(limitPackets)}
}

// offer queues a batch unless that would exceed the bound; it never blocks,
// so a slow client cannot stall the Router.
func (q *outQueue) offer(b *messages.ToClient) bool {
	n := int64(len(b.Packets))
	if q.queued.Load()+n > q.limit {
		return false
	}
	select {
	case q.ch <- outItem{batch: b}:
		q.queued.Add(n)
		return true
	default:
		return false
	}
}

// control queues a control frame; it always fits (control frames are few
// and small), and preserves order with the data around it.
func (q *outQueue) control(frame []byte) bool {
	select {
	case q.ch <- outItem{frame: frame}:
		return true
	default:
		return false
	}
}

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
	w := &coalescer{conn: conn, stall: stall}
	if err := w.run(q, m); err != nil {
		// Tell the actor first: it closes the queue, which ends the
		// drain below.
		sys.Root.Send(self, &connClosed{reason: CloseWriteError, err: err})
	}
	if w.buf != nil {
		writeBufs.Put(w.buf)
	}
	for item := range q.ch {
		if item.batch != nil {
			q.queued.Add(-int64(len(item.batch.Packets)))
			item.batch.Release()
		}
	}
}

type coalescer struct {
	conn  net.Conn
	stall time.Duration
	buf   *[writeBufSize]byte
	n     int
}

func (w *coalescer) run(q *outQueue, m *Metrics) error {
	for item := range q.ch {
		if err := w.add(item, q, m); err != nil {
			return err
		}
		if len(q.ch) == 0 {
			if err := w.flush(); err != nil {
				return err
			}
			writeBufs.Put(w.buf)
			w.buf = nil
		}
	}
	return nil
}

func (w *coalescer) add(item outItem, q *outQueue, m *Metrics) error {
	if item.frame != nil {
		return w.append(item.frame, 0, nil)
	}
	defer item.batch.Release()
	q.queued.Add(-int64(len(item.batch.Packets)))
	for _, pkt := range item.batch.Packets {
		if err := w.append(nil, messages.TypeDataReply, pkt); err != nil {
			return err
		}
	}
	m.PacketsOut.Add(uint64(len(item.batch.Packets)))
	m.BytesOut.Add(uint64(item.batch.Bytes()))
	return nil
}

// append adds a raw frame, or a frame of type typ around payload, flushing
// first if it would not fit.
func (w *coalescer) append(raw []byte, typ byte, payload []byte) error {
	need := len(raw)
	if raw == nil {
		need = messages.HeaderLen + len(payload)
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
		out = messages.AppendFrame(w.buf[w.n:w.n], typ, payload)
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
