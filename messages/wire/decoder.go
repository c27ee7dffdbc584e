package wire

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"
)

// Memory design. A server holds up to 10,000 sessions, most of them idle, so a
// decoder must not keep a large buffer while it waits; yet while data flows one
// read() should pick up many frames. So:
//
//  1. While bytes are buffered, the decoder owns a bufSize buffer borrowed from
//     bufPool and reads into the free space after the buffered bytes, moving a
//     partial frame to the front first so that every frame is contiguous.
//  2. When nothing is buffered and it must block, it returns the buffer to the
//     pool and blocks reading into the small array inside the Decoder.
//  3. Whatever arrives is copied into a freshly borrowed buffer.
//
// Nothing is ever allocated from a length declared by the peer, and a steady
// stream of frames costs no allocation at all.

// bufSize holds one MaxFrameLen frame contiguously with room to spare, so that
// a read usually brings in many small frames at once.
const bufSize = 128 << 10

// smallLen is the size of the array an idle decoder blocks on: it only has to
// catch the first bytes of the next burst (a heartbeat is 5 bytes).
const smallLen = 64

// maxEmptyReads bounds how often a misbehaving reader may return no bytes and
// no error before the decoder gives up, as bufio does.
const maxEmptyReads = 100

// buffer must hold a whole frame, or Next could never complete a large one.
type buffer [bufSize]byte

var _ = [bufSize - MaxFrameLen]struct{}{} // compile-time check: bufSize >= MaxFrameLen

var bufPool = sync.Pool{New: func() any { return new(buffer) }}

// Decoder splits a byte stream into frames, following the tolerant reading rules
// of docs/protocol.md (the table "What the server tolerates, and what it
// refuses"). It is not safe for concurrent use: one goroutine reads each
// connection.
type Decoder struct {
	r       io.Reader
	buf     *buffer // borrowed from bufPool while bytes are buffered, nil while idle
	start   int     // first unconsumed byte in buf
	end     int     // end of the bytes read into buf
	readErr error   // read error not yet reported: buffered frames come first
	err     error   // final error, returned by every later call to Next
	small   [smallLen]byte
	// A frame whose first bytes have arrived must complete within
	// frameTimeout (0: no bound); see SetFrameTimeout.
	frameTimeout time.Duration
	deadliner    readDeadliner
	frames       uint64 // frames returned so far
	armedFor     uint64 // frames+1 when the deadline was set for the frame in progress
	armed        bool
}

// readDeadliner is the part of a net.Conn that bounds a read in time.
type readDeadliner interface {
	SetReadDeadline(t time.Time) error
}

// NewDecoder returns a decoder reading from r. It borrows no buffer until data
// arrives, so creating one per accepted connection is cheap.
func NewDecoder(r io.Reader) *Decoder {
	return &Decoder{r: r}
}

// SetFrameTimeout bounds the time from a frame's first bytes to its last:
// a frame still incomplete d after a read found it partial fails Next with
// an error matching os.ErrDeadlineExceeded. Without it a client that
// always leaves half a frame buffered (and completes one now and then to
// look alive) would pin a bufSize buffer for as long as it likes. It needs
// a reader with SetReadDeadline (a net.Conn) and does nothing otherwise;
// an idle decoder, with no partial frame, has no deadline.
func (d *Decoder) SetFrameTimeout(t time.Duration) {
	d.deadliner, _ = d.r.(readDeadliner)
	d.frameTimeout = t
}

// Next returns the next frame, reading as needed. Every type is returned,
// unknown ones included, so that the caller decides what to count or ignore.
//
// The errors tell the caller how the connection ended: io.EOF when the stream
// ends cleanly between frames, io.ErrUnexpectedEOF when it ends inside one,
// *FrameTooLargeError when framing is lost, and any other read error wrapped with
// %w. An error is final: every later call returns it again.
func (d *Decoder) Next() (Frame, error) {
	if d.err != nil {
		return Frame{}, d.err
	}
	if err := d.fill(HeaderLen); err != nil {
		return Frame{}, err
	}
	length := binary.LittleEndian.Uint32(d.buf[d.start:])
	typ := d.buf[d.start+4]
	if length > MaxFrameLen {
		d.err = &FrameTooLargeError{Length: length}
		d.Release()
		return Frame{}, d.err
	}
	size := frameSize(length)
	if err := d.fill(size); err != nil {
		return Frame{}, err
	}
	payload := d.buf[d.start+HeaderLen : d.start+size : d.start+size]
	d.start += size
	d.frames++
	return Frame{Type: typ, Length: length, Payload: payload}, nil
}

// Buffered reports whether a complete, acceptable frame is already buffered, so
// that the next call to Next returns it without reading. A session uses it to
// batch consecutive data frames and flush them when the reader would block.
// False does not promise that Next blocks: it also covers a pending error, so
// that the caller flushes before it learns that the stream is over.
func (d *Decoder) Buffered() bool {
	n := d.end - d.start
	if d.err != nil || n < HeaderLen {
		return false
	}
	length := binary.LittleEndian.Uint32(d.buf[d.start:])
	return length <= MaxFrameLen && n >= frameSize(length)
}

// Release returns the borrowed buffer to the pool, so that a finished
// connection gives its memory back at once instead of at the next GC. Call it
// when the connection is done; any bytes still buffered are discarded. The
// decoder stays usable: a later Next borrows a buffer again and carries on with
// whatever the reader delivers next.
func (d *Decoder) Release() {
	if d.buf != nil {
		bufPool.Put(d.buf)
		d.buf = nil
	}
	d.start, d.end = 0, 0
}

// fill reads until at least need bytes are buffered, or reports why it cannot.
func (d *Decoder) fill(need int) error {
	empty := 0
	for d.end-d.start < need {
		if d.readErr != nil {
			return d.fail()
		}
		if d.read() > 0 {
			empty = 0
			continue
		}
		empty++
		if empty >= maxEmptyReads && d.readErr == nil {
			d.readErr = io.ErrNoProgress
		}
	}
	return nil
}

// read performs one Read and returns the number of bytes it delivered.
func (d *Decoder) read() int {
	if d.start == d.end {
		return d.readIdle()
	}
	if d.start > 0 {
		d.end = copy(d.buf[:], d.buf[d.start:d.end])
		d.start = 0
	}
	if err := d.armDeadline(); err != nil {
		d.readErr = err
		return 0
	}
	n, err := d.r.Read(d.buf[d.end:])
	d.end += n
	d.readErr = err
	return n
}

// readIdle blocks on the small array with no buffer borrowed, then moves what
// arrived into a fresh buffer.
func (d *Decoder) readIdle() int {
	d.Release()
	if err := d.disarmDeadline(); err != nil {
		d.readErr = err
		return 0
	}
	n, err := d.r.Read(d.small[:])
	if n > 0 {
		d.buf = bufPool.Get().(*buffer)
		d.end = copy(d.buf[:], d.small[:n])
	}
	d.readErr = err
	return n
}

// armDeadline starts the clock for the frame in progress, once per frame:
// in a steady stream that is one deadline per read that ends mid-frame.
func (d *Decoder) armDeadline() error {
	if d.deadliner == nil || d.frameTimeout <= 0 || d.armedFor == d.frames+1 {
		return nil
	}
	if err := d.deadliner.SetReadDeadline(time.Now().Add(d.frameTimeout)); err != nil {
		return fmt.Errorf("failed to bound the frame in progress: %w", err)
	}
	d.armedFor, d.armed = d.frames+1, true
	return nil
}

// disarmDeadline lifts the frame deadline before an idle read: waiting
// between frames is the silence timeout's business.
func (d *Decoder) disarmDeadline() error {
	if !d.armed {
		return nil
	}
	d.armed, d.armedFor = false, 0
	if err := d.deadliner.SetReadDeadline(time.Time{}); err != nil {
		return fmt.Errorf("failed to clear the frame deadline: %w", err)
	}
	return nil
}

// fail turns the pending read error into the final error and gives the buffer
// back, since no further frame can be completed.
func (d *Decoder) fail() error {
	switch {
	case errors.Is(d.readErr, io.EOF) && d.start == d.end:
		d.err = io.EOF
	case errors.Is(d.readErr, io.EOF):
		d.err = io.ErrUnexpectedEOF
	default:
		d.err = fmt.Errorf("messages: failed to read frame (%d bytes of it buffered): %w", d.end-d.start, d.readErr)
	}
	d.Release()
	return d.err
}
