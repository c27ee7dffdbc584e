package actors

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/4over6d/4over6d/messages"
	"github.com/4over6d/4over6d/messages/wire"
)

// The session's reader goroutine. It belongs to its Session actor, talks to
// it only by messages, and exits when the actor closes the connection.
//
// Everything a client sends costs bounded memory in the server, whatever
// its rate:
//   - 102 packets travel in batches, each holding a token of the session's
//     budget (inflightBatches); with none left the reader stops reading and
//     TCP slows the client down.
//   - With a rate limit, a batch waits for its tokens before it is handed
//     on (session_rate.go), and TCP slows the client down the same way.
//   - Control frames (100, 200, unknown types) become at most one
//     message per kind in the actor's mailbox: while one of a kind is
//     waiting, further frames of that kind are coalesced into it (they say
//     nothing it does not: "send the 101 again"). A heartbeat (104) is no
//     message at all: the reader stores the time it arrived where the
//     actor's silence check reads it, so an idle session's heartbeats do
//     not wake its actor. Every frame is still counted in frames_total.

// clientFrame tells the session that a non-data frame arrived. The values
// are preallocated per kind, so control traffic allocates nothing.
type clientFrame struct {
	typ  byte
	kind inflightKind
}

func (*clientFrame) IgnoreDeadLetterLogging() {}

// inflightKind is a bit of a session's inflight set.
type inflightKind uint32

const (
	inflightIPRequest inflightKind = 1 << iota
	inflightEncrypt
	inflightUnknown
)

// controlMessages is the message for each control frame type, by the
// FrameType the reader already worked out to count the frame.
var controlMessages = [numFrameTypes]*clientFrame{
	FrameTypeIPRequest: {wire.TypeIPRequest, inflightIPRequest},
	FrameTypeEncrypt:   {wire.TypeEncryptRequest, inflightEncrypt},
	FrameTypeUnknown:   {0, inflightUnknown},
}

// inflight is the set of control kinds a reader has sent to its actor and
// the actor has not taken yet. Like a Budget it is a token, not shared
// data: the reader sets a bit when it sends, the actor clears it when the
// message arrives.
type inflight struct{ bits atomic.Uint32 }

// claim reports whether k was free and is now taken.
func (f *inflight) claim(k inflightKind) bool {
	return inflightKind(f.bits.Or(uint32(k)))&k == 0
}

// settle frees k: the actor has the message, so the next frame of that
// kind must reach it again.
func (f *inflight) settle(k inflightKind) { f.bits.And(^uint32(k)) }

// connClosed reports that one of the session's I/O goroutines hit the end
// of the connection, and why.
type connClosed struct {
	reason CloseReason
	err    error
}

func (*connClosed) IgnoreDeadLetterLogging() {}

// clientReader is the state of one session's reader goroutine.
type clientReader struct {
	budget   messages.Budget
	done     <-chan struct{}
	inflight *inflight
	heard    *heardClock // the actor's silence check reads it
	stats    *SessionStats
	m        *Metrics
	sys      *actor.ActorSystem
	self     *actor.PID
	batch    *messages.FromClient
	frames   frameCounts // counted here, added to m when the reader would block
	pacer    uplinkPacer // the uplink rate limit (session_rate.go)
}

// readClient decodes frames until the connection ends. 102 packets are
// batched while more frames are already buffered and sent as soon as the
// decoder would block, so a burst costs one actor message and a lone packet
// is not delayed.
func readClient(conn net.Conn, r *clientReader, cfg *shared, wg *sync.WaitGroup) {
	defer wg.Done()
	dec := wire.NewDecoder(conn)
	dec.SetFrameTimeout(cfg.Timeout)
	defer dec.Release()
	reason, err := r.loop(dec)
	r.sys.Root.Send(r.self, &connClosed{reason: reason, err: err})
}

// errStopped ends the decode loop when the session is going away.
var errStopped = errors.New("session stopped")

func (r *clientReader) loop(dec *wire.Decoder) (reason CloseReason, err error) {
	defer func() {
		if p := recover(); p != nil {
			reason, err = ClosePanic, fmt.Errorf("panic in session reader: %v", p)
		}
	}()
	defer r.m.CountFrames(&r.frames)
	for {
		f, err := dec.Next()
		if err != nil {
			r.flush()
			return classifyReadErr(err, r.m)
		}
		t := frameTypeOf(f.Type)
		r.frames[t]++
		if t == FrameTypeData {
			r.data(f.Payload)
		} else if !r.flush() || !r.control(t) {
			return CloseStopped, errStopped
		}
		if r.batch != nil && r.batch.Full() && !r.flush() {
			return CloseStopped, errStopped
		}
		if !dec.Buffered() {
			r.m.CountFrames(&r.frames)
			if !r.flush() {
				return CloseStopped, errStopped
			}
		}
	}
}

// data adds one 102 payload to the batch, or counts it if it is not IPv4.
func (r *clientReader) data(payload []byte) {
	pkt, _, _, err := wire.ParseIPv4(payload)
	if err != nil {
		r.m.Drop(DropNotIPv4, 1)
		return
	}
	if r.batch == nil {
		r.batch = messages.NewFromClient()
	}
	r.batch.AppendCopy(pkt)
}

// flush sends the batch, if any, once it has a budget token; false means
// the session is going away.
func (r *clientReader) flush() bool {
	b := r.batch
	if b == nil {
		return true
	}
	r.batch = nil
	if !r.pace(&b.Batch) || !r.budget.Acquire(&b.Batch, r.done) {
		b.Release()
		return false
	}
	r.sys.Root.Send(r.self, b)
	return true
}

// control tells the actor of a control frame unless one of its kind is
// already waiting for it; a heartbeat only marks the client alive.
func (r *clientReader) control(t FrameType) bool {
	select {
	case <-r.done:
		return false
	default:
	}
	if t == FrameTypeHeartbeat {
		r.heard.note(r.stats)
		return true
	}
	msg := controlMessages[t]
	if r.inflight.claim(msg.kind) {
		r.sys.Root.Send(r.self, msg)
	}
	return true
}

func classifyReadErr(err error, m *Metrics) (CloseReason, error) {
	var tooLarge *wire.FrameTooLargeError
	switch {
	case errors.Is(err, io.EOF):
		return CloseClientClosed, nil
	case errors.As(err, &tooLarge):
		m.FrameError(FrameTooLarge)
		return CloseFramingLost, err
	case errors.Is(err, io.ErrUnexpectedEOF):
		m.FrameError(FrameTruncated)
		return CloseTruncated, err
	case errors.Is(err, os.ErrDeadlineExceeded):
		m.FrameError(FrameStalled)
		return CloseFrameStalled, err
	case errors.Is(err, net.ErrClosed):
		return CloseStopped, nil
	}
	return CloseReadError, err
}
