package wire

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"math/rand/v2"
	"strings"
	"testing"
	"testing/iotest"
)

// header builds a raw header with any declared length, including ones that
// AppendHeader refuses to produce.
func header(length uint32, typ byte) []byte {
	return append(binary.LittleEndian.AppendUint32(nil, length), typ)
}

// readerKinds deliver the same stream in the ways a socket can: all at once,
// one byte per read, data together with io.EOF, and in halves.
var readerKinds = []struct {
	name string
	wrap func(io.Reader) io.Reader
}{
	{"whole", func(r io.Reader) io.Reader { return r }},
	{"one byte", iotest.OneByteReader},
	{"data with EOF", iotest.DataErrReader},
	{"halves", iotest.HalfReader},
}

func TestDecoder(t *testing.T) {
	var many []byte
	var manyFrames []Frame
	for i := range 200 {
		payload := bytes.Repeat([]byte{byte(i)}, i*7)
		many = AppendFrame(many, TypeDataRequest, payload)
		manyFrames = append(manyFrames, wantFrame(TypeDataRequest, uint32(len(payload)+HeaderLen), payload))
	}
	maxPayload := bytes.Repeat([]byte{0x5a}, MaxPayload)

	tests := []struct {
		name   string
		input  []byte
		frames []Frame
		err    error
	}{
		{"empty stream", nil, nil, io.EOF},
		{"100 ip request", header(5, 100), []Frame{wantFrame(100, 5, nil)}, io.EOF},
		{"101 ip reply", AppendFrame(nil, 101, []byte("x\x00")), []Frame{wantFrame(101, 7, []byte("x\x00"))}, io.EOF},
		{"102 data request", AppendFrame(nil, 102, echoRequest), []Frame{wantFrame(102, 41, echoRequest)}, io.EOF},
		{"103 data reply", AppendFrame(nil, 103, echoReply), []Frame{wantFrame(103, 41, echoReply)}, io.EOF},
		{"104 heartbeat", Heartbeat, []Frame{wantFrame(104, 5, nil)}, io.EOF},
		{"199 unsupported", Unsupported, []Frame{wantFrame(199, 5, nil)}, io.EOF},
		{"200 encrypt request", header(5, 200), []Frame{wantFrame(200, 5, nil)}, io.EOF},
		{"unknown type with payload", cat(header(7, 0), []byte{1, 2}), []Frame{wantFrame(0, 7, []byte{1, 2})}, io.EOF},
		{"length 0 is header only", cat(header(0, 100), Heartbeat), []Frame{wantFrame(100, 0, nil), wantFrame(104, 5, nil)}, io.EOF},
		{"length 3 is header only", cat(header(3, 104), Heartbeat), []Frame{wantFrame(104, 3, nil), wantFrame(104, 5, nil)}, io.EOF},
		{"length 4 is header only", cat(header(4, 100), Heartbeat), []Frame{wantFrame(100, 4, nil), wantFrame(104, 5, nil)}, io.EOF},
		{"100 as a 4101-byte struct", cat(header(4101, 100), make([]byte, 4096)), []Frame{wantFrame(100, 4101, make([]byte, 4096))}, io.EOF},
		{"104 as a 4104-byte struct", cat(header(4104, 104), make([]byte, 4099)), []Frame{wantFrame(104, 4104, make([]byte, 4099))}, io.EOF},
		{"100 with 3 extra bytes", cat(header(8, 100), []byte{7, 7, 7}, Heartbeat), []Frame{wantFrame(100, 8, []byte{7, 7, 7}), wantFrame(104, 5, nil)}, io.EOF},
		{"104 with 3 extra bytes", cat(header(8, 104), []byte{7, 7, 7}), []Frame{wantFrame(104, 8, []byte{7, 7, 7})}, io.EOF},
		{"102 with trailing junk", AppendFrame(nil, 102, cat(echoRequest, junk16)), []Frame{wantFrame(102, 57, cat(echoRequest, junk16))}, io.EOF},
		{"largest frame", AppendFrame(nil, 103, maxPayload), []Frame{wantFrame(103, MaxFrameLen, maxPayload)}, io.EOF},
		{"many frames", many, manyFrames, io.EOF},
		{"truncated header", []byte{5, 0, 0}, nil, io.ErrUnexpectedEOF},
		{"truncated header after a frame", cat(Heartbeat, []byte{5}), []Frame{wantFrame(104, 5, nil)}, io.ErrUnexpectedEOF},
		{"truncated payload", cat(Heartbeat, header(41, 102), echoRequest[:20]), []Frame{wantFrame(104, 5, nil)}, io.ErrUnexpectedEOF},
		{"truncated largest frame", cat(header(MaxFrameLen, 102), maxPayload[:1000]), nil, io.ErrUnexpectedEOF},
		{"length one above the limit", cat(header(MaxFrameLen+1, 102), maxPayload), nil, &FrameTooLargeError{Length: MaxFrameLen + 1}},
		{"length 4 GiB", cat(Heartbeat, header(0xffffffff, 102)), []Frame{wantFrame(104, 5, nil)}, &FrameTooLargeError{Length: 0xffffffff}},
	}
	for _, tt := range tests {
		for _, kind := range readerKinds {
			t.Run(tt.name+"/"+kind.name, func(t *testing.T) {
				frames, err := decodeAll(kind.wrap(bytes.NewReader(tt.input)))
				if !sameErr(err, tt.err) {
					t.Errorf("final error %v, want %v", err, tt.err)
				}
				checkFrames(t, frames, tt.frames)
			})
		}
	}
}

// countingReader counts Read calls, to show how many frames one read picks up.
type countingReader struct {
	r     io.Reader
	reads int
}

func (c *countingReader) Read(p []byte) (int, error) {
	c.reads++
	return c.r.Read(p)
}

func TestDecoderReadsManyFramesPerRead(t *testing.T) {
	var stream []byte
	for range 80 {
		stream = AppendFrame(stream, TypeDataRequest, make([]byte, 1400))
	}
	r := &countingReader{r: bytes.NewReader(stream)}
	frames, err := decodeAll(r)
	if err != io.EOF || len(frames) != 80 {
		t.Fatalf("got %d frames and %v, want 80 and EOF", len(frames), err)
	}
	// One small read while idle, one large read for the rest, one for EOF.
	if r.reads > 3 {
		t.Errorf("%d reads for %d bytes, want at most 3", r.reads, len(stream))
	}
}

// chunkReader returns its input in reads of at most size bytes.
type chunkReader struct {
	data []byte
	size int
}

func (c *chunkReader) Read(p []byte) (int, error) {
	if len(c.data) == 0 {
		return 0, io.EOF
	}
	n := copy(p[:min(len(p), c.size)], c.data)
	c.data = c.data[n:]
	return n, nil
}

// TestDecoderLongStream pushes several buffers' worth of frames of every size,
// in reads of odd sizes, so that partial frames are moved to the front of the
// buffer many times and every frame still comes out intact.
func TestDecoderLongStream(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	var stream []byte
	var want []Frame
	for len(stream) < 4*bufSize {
		n := rng.IntN(2000)
		if rng.IntN(10) == 0 {
			n = MaxPayload - rng.IntN(3)
		}
		payload := make([]byte, n)
		for i := range payload {
			payload[i] = byte(rng.Uint32())
		}
		typ := byte(rng.Uint32())
		stream = AppendFrame(stream, typ, payload)
		want = append(want, wantFrame(typ, uint32(n+HeaderLen), payload))
	}
	for _, size := range []int{1, 3, 4093, 65537, 1 << 20} {
		frames, err := decodeAll(&chunkReader{data: stream, size: size})
		if err != io.EOF {
			t.Fatalf("reads of %d: final error %v, want EOF", size, err)
		}
		checkFrames(t, frames, want)
	}
}

func TestDecoderReadErrors(t *testing.T) {
	errBoom := errors.New("boom")
	tests := []struct {
		name    string
		r       io.Reader
		frames  int
		wantErr error
	}{
		{"error between frames", io.MultiReader(bytes.NewReader(Heartbeat), iotest.ErrReader(errBoom)), 1, errBoom},
		{"error inside a frame", io.MultiReader(bytes.NewReader(cat(Heartbeat, Heartbeat[:2])), iotest.ErrReader(errBoom)), 1, errBoom},
		{"timeout after data", iotest.TimeoutReader(bytes.NewReader(cat(Heartbeat, Heartbeat))), 2, iotest.ErrTimeout},
		{"reader that never progresses", iotest.ErrReader(nil), 0, io.ErrNoProgress},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := NewDecoder(tt.r)
			for range tt.frames {
				if _, err := d.Next(); err != nil {
					t.Fatalf("frame before the error: %v", err)
				}
			}
			_, err := d.Next()
			if !errors.Is(err, tt.wantErr) || !strings.Contains(err.Error(), "failed to read frame") {
				t.Fatalf("got %v, want a wrapped %v", err, tt.wantErr)
			}
			if _, again := d.Next(); again != err {
				t.Errorf("second call returned %v, want the same final error %v", again, err)
			}
			if d.buf != nil {
				t.Error("decoder kept its buffer after a final error")
			}
		})
	}
}

func TestDecoderErrorsAreFinal(t *testing.T) {
	for _, input := range [][]byte{
		cat(Heartbeat, Heartbeat[:3]),
		cat(header(MaxFrameLen+1, 102), Heartbeat),
	} {
		d := NewDecoder(bytes.NewReader(input))
		var first error
		for first == nil {
			_, first = d.Next()
		}
		if _, again := d.Next(); again != first {
			t.Errorf("after %v, Next returned %v", first, again)
		}
		if d.buf != nil {
			t.Errorf("decoder kept its buffer after %v", first)
		}
	}
}

// stepReader returns one chunk per Read, so that a test controls exactly what
// is buffered.
type stepReader struct {
	chunks [][]byte
}

func (s *stepReader) Read(p []byte) (int, error) {
	if len(s.chunks) == 0 {
		return 0, io.EOF
	}
	n := copy(p, s.chunks[0])
	s.chunks[0] = s.chunks[0][n:]
	if len(s.chunks[0]) == 0 {
		s.chunks = s.chunks[1:]
	}
	return n, nil
}

func TestDecoderBuffered(t *testing.T) {
	d := NewDecoder(&stepReader{chunks: [][]byte{
		cat(Heartbeat, AppendFrame(nil, 102, echoRequest), header(41, 102)),
		echoRequest,
		cat(Heartbeat, header(MaxFrameLen+1, 102)),
	}})
	if d.Buffered() {
		t.Error("new decoder reports a buffered frame")
	}
	steps := []struct {
		typ      byte
		buffered bool
	}{
		{104, true},  // the 102 is complete
		{102, false}, // only the header of the next 102 has arrived
		{102, false}, // nothing left
		{104, false}, // the oversized header follows: Next fails, so flush first
	}
	for i, s := range steps {
		f, err := d.Next()
		if err != nil || f.Type != s.typ {
			t.Fatalf("step %d: got type %d, %v; want type %d", i, f.Type, err, s.typ)
		}
		if got := d.Buffered(); got != s.buffered {
			t.Errorf("step %d: Buffered() = %v, want %v", i, got, s.buffered)
		}
	}
}

// signalReader reports the size of every Read before it blocks, so that a test
// can look at the decoder while it waits.
type signalReader struct {
	r     io.Reader
	sizes chan int
}

func (s signalReader) Read(p []byte) (int, error) {
	s.sizes <- len(p)
	return s.r.Read(p)
}

func TestIdleDecoderHoldsNoBuffer(t *testing.T) {
	pr, pw := io.Pipe()
	sizes := make(chan int, 1)
	d := NewDecoder(signalReader{r: pr, sizes: sizes})
	go func() {
		if _, err := pw.Write(cat(Heartbeat, Heartbeat)); err != nil {
			t.Error(err)
		}
	}()
	for i := range 2 {
		if _, err := d.Next(); err != nil {
			t.Fatal(err)
		}
		if d.buf == nil {
			t.Fatalf("frame %d: a decoder with bytes to deliver must hold a buffer", i)
		}
	}
	if n := <-sizes; n != smallLen {
		t.Errorf("first read was into %d bytes, want the %d-byte idle array", n, smallLen)
	}

	type result struct {
		f   Frame
		err error
	}
	done := make(chan result)
	go func() {
		f, err := d.Next()
		done <- result{f, err}
	}()
	if n := <-sizes; n != smallLen {
		t.Errorf("idle read was into %d bytes, want the %d-byte idle array", n, smallLen)
	}
	// The decoder is now blocked in Read, after releasing its buffer.
	if d.buf != nil {
		t.Error("blocked decoder still holds a pooled buffer")
	}
	frame := AppendFrame(nil, TypeDataRequest, make([]byte, 1400))
	go func() {
		if _, err := pw.Write(frame); err != nil {
			t.Error(err)
		}
		pw.Close()
	}()
	got := <-done
	if got.err != nil || got.f.Type != TypeDataRequest || len(got.f.Payload) != 1400 {
		t.Fatalf("after idle: got type %d, %d bytes, %v", got.f.Type, len(got.f.Payload), got.err)
	}
	go func() {
		for range sizes {
		}
	}()
	_, err := d.Next()
	close(sizes)
	if err != io.EOF {
		t.Fatalf("got %v, want EOF", err)
	}
	if d.buf != nil {
		t.Error("decoder holds a buffer after EOF")
	}
}

func TestDecoderReleaseBetweenFrames(t *testing.T) {
	d := NewDecoder(&stepReader{chunks: [][]byte{Heartbeat, AppendFrame(nil, 102, echoRequest)}})
	if f, err := d.Next(); err != nil || f.Type != TypeHeartbeat {
		t.Fatalf("got type %d, %v", f.Type, err)
	}
	d.Release()
	if d.buf != nil {
		t.Fatal("Release kept the buffer")
	}
	d.Release()
	if f, err := d.Next(); err != nil || !bytes.Equal(f.Payload, echoRequest) {
		t.Fatalf("after Release: got %x, %v", f.Payload, err)
	}
	if _, err := d.Next(); err != io.EOF {
		t.Fatalf("got %v, want EOF", err)
	}
}

// loopReader repeats its data forever and fills every read completely, like a
// socket under load.
type loopReader struct {
	data []byte
	off  int
}

func (l *loopReader) Read(p []byte) (int, error) {
	n := 0
	for n < len(p) {
		c := copy(p[n:], l.data[l.off:])
		n += c
		l.off = (l.off + c) % len(l.data)
	}
	return n, nil
}

// TestDecoderSteadyStateAllocs shows that a stream of data frames costs no
// allocation. A 1405-byte frame does not divide the buffer size, so reads never
// end on a frame boundary and the decoder never goes idle.
func TestDecoderSteadyStateAllocs(t *testing.T) {
	d := NewDecoder(&loopReader{data: AppendFrame(nil, TypeDataRequest, make([]byte, 1400))})
	defer d.Release()
	// AllocsPerRun rounds down, so the few allocations the runtime makes for
	// itself (a new thread) vanish, while one per frame shows as 1000.
	allocs := testing.AllocsPerRun(100, func() {
		for range 1000 {
			if _, err := d.Next(); err != nil {
				t.Fatal(err)
			}
		}
	})
	if allocs != 0 {
		t.Errorf("%v allocations per 1000 frames, want 0", allocs)
	}
}
