package wire

import (
	"bytes"
	"errors"
	"io"
	"runtime"
	"sync/atomic"
	"testing"
)

// Bounds on what decoding a whole fuzz input may allocate, once the pooled
// buffers are set aside. Those are counted exactly, through bufPool.New, because
// the pool is emptied by any GC and, under the race detector, drops a quarter of
// what is put back. What remains is the Decoder itself (144 bytes) and at most
// one *FrameTooLargeError (8 bytes); the reader never fails otherwise, so no
// error is wrapped. A decoder that allocated per frame (the many-frame seed
// shows it at once), or by a declared length (up to 64 KiB accepted, up to
// 4 GiB declared), exceeds these.
//
// The counters are process-wide, and the runtime allocates for itself now and
// then (about 5.6 KiB when restarting the world after ReadMemStats starts a new
// OS thread), so a measurement is retried: a decoder's own allocations recur on
// every attempt, the runtime's do not.
const (
	fuzzMaxMallocs = 2
	fuzzMaxBytes   = 256
	fuzzAttempts   = 3
)

// countBufferAllocs makes bufPool count the buffers it allocates, for the life
// of the fuzz target.
func countBufferAllocs(f *testing.F) *atomic.Uint64 {
	var n atomic.Uint64
	orig := bufPool.New
	bufPool.New = func() any {
		n.Add(1)
		return orig()
	}
	f.Cleanup(func() { bufPool.New = orig })
	return &n
}

// maxSeedLen leaves out the 4 KiB struct vectors: the fuzzer minimises every
// interesting input in time quadratic in its length, which for 4 KiB takes its
// whole default minute and stalls fuzzing, while their large junk payloads are
// no different to the decoder from any payload above the idle array's 64 bytes
// (nor to ParseIPReply from any other junk). TestGolden decodes them.
const maxSeedLen = 1 << 10

func goldenSeeds(f *testing.F) [][]byte {
	var seeds [][]byte
	for _, tt := range goldenCases {
		if seed := readGolden(f, tt.file); len(seed) <= maxSeedLen {
			seeds = append(seeds, seed)
		}
	}
	return seeds
}

// FuzzDecoder feeds arbitrary streams, in reads of a fuzzed size, and checks
// that the decoder never panics, allocates only its pooled buffer, consumes
// exactly the stream on a clean EOF, and that every frame it accepts survives
// re-encoding.
func FuzzDecoder(f *testing.F) {
	newBuffers := countBufferAllocs(f)
	seeds := goldenSeeds(f)
	seeds = append(seeds, bytes.Join(seeds, nil))
	for _, seed := range seeds {
		for _, chunk := range []uint16{0, 1, 7} {
			f.Add(seed, chunk)
		}
	}
	f.Fuzz(func(t *testing.T, data []byte, chunk uint16) {
		size := int(chunk)
		if size == 0 {
			size = len(data) + 1
		}
		r := &chunkReader{}
		var consumed, frames int
		var err error
		decode := func() {
			*r = chunkReader{data: data, size: size}
			d := NewDecoder(r)
			consumed, frames, err = 0, 0, nil
			for err == nil {
				var fr Frame
				if fr, err = d.Next(); err == nil {
					consumed += frameSize(fr.Length)
					frames++
				}
			}
			d.Release()
		}
		var mallocs, allocated, buffers uint64
		for range fuzzAttempts {
			mallocs, allocated, buffers = measureAllocs(newBuffers, decode)
			if mallocs <= fuzzMaxMallocs && allocated <= fuzzMaxBytes {
				break
			}
		}
		if mallocs > fuzzMaxMallocs || allocated > fuzzMaxBytes {
			t.Errorf("%d frames from %d bytes: %d allocations, %d bytes besides %d pooled buffers",
				frames, len(data), mallocs, allocated, buffers)
		}
		var tooLarge *FrameTooLargeError
		switch {
		case err == io.EOF:
			if consumed != len(data) {
				t.Errorf("clean EOF after %d of %d bytes", consumed, len(data))
			}
		case err == io.ErrUnexpectedEOF, errors.As(err, &tooLarge):
		default:
			t.Errorf("unexpected error %v", err)
		}

		checkReencode(t, data)
	})
}

// measureAllocs runs f and returns the allocations it made besides pooled
// buffers, and the number of pooled buffers.
func measureAllocs(newBuffers *atomic.Uint64, f func()) (mallocs, bytes, buffers uint64) {
	var before, after runtime.MemStats
	buffersBefore := newBuffers.Load()
	runtime.ReadMemStats(&before)
	f()
	runtime.ReadMemStats(&after)
	buffers = newBuffers.Load() - buffersBefore
	return after.Mallocs - before.Mallocs - buffers, after.TotalAlloc - before.TotalAlloc - buffers*bufSize, buffers
}

// checkReencode decodes data again and checks that every frame, re-encoded
// the way we send it, decodes to the same type and payload.
func checkReencode(t *testing.T, data []byte) {
	d := NewDecoder(bytes.NewReader(data))
	defer d.Release()
	var enc []byte
	for {
		fr, err := d.Next()
		if err != nil {
			return
		}
		enc = AppendFrame(enc[:0], fr.Type, fr.Payload)
		again, err := decodeAll(bytes.NewReader(enc))
		if err != io.EOF || len(again) != 1 {
			t.Fatalf("re-encoded %x decodes to %d frames and %v", enc, len(again), err)
		}
		g := again[0]
		if g.Type != fr.Type || !bytes.Equal(g.Payload, fr.Payload) || int(g.Length) != len(enc) {
			t.Fatalf("re-encoded frame type %d length %d payload %x decodes as type %d length %d payload %x",
				fr.Type, len(enc), fr.Payload, g.Type, g.Length, g.Payload)
		}
	}
}

// FuzzParseIPReply checks that parsing never panics and that whatever parses
// is formatted into a payload that parses back to the same reply.
func FuzzParseIPReply(f *testing.F) {
	for _, tt := range goldenCases {
		for _, fr := range tt.frames {
			if len(fr.Payload) <= maxSeedLen {
				f.Add(fr.Payload)
			}
		}
	}
	for _, s := range []string{
		"13.8.0.2 0.0.0.0 202.38.120.242 8.8.8.8 202.106.0.20",
		"13.8.0.2 0.0.0.0 202.38.120.242 8.8.8.8 202.106.0.20\r\n",
		" 1.2.3.4\t5.6.7.8  9.9.9.9 1.1.1.1 255.255.255.255 \x00junk",
		"13.8.0.2 0.0.0.0 2001:db8::1 8.8.8.8 202.106.0.20 \x00",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, payload []byte) {
		r, err := ParseIPReply(payload)
		if err != nil {
			if !errors.Is(err, ErrMalformedIPReply) {
				t.Fatalf("error %v does not wrap ErrMalformedIPReply", err)
			}
			return
		}
		formatted := r.Format()
		if !bytes.HasSuffix(formatted, []byte(" \x00")) {
			t.Errorf("Format() = %q lacks the trailing space and NUL", formatted)
		}
		again, err := ParseIPReply(formatted)
		if err != nil || again != r {
			t.Errorf("%q parsed as %+v, formatted as %q, parsed back as %+v, %v", payload, r, formatted, again, err)
		}
	})
}
