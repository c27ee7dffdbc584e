package wire

import (
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"
)

// scriptedConn returns one chunk per Read and records every read deadline
// it is given, so a test can see when the decoder starts and stops the
// clock on a frame.
type scriptedConn struct {
	chunks    [][]byte
	deadlines []time.Time
}

func (c *scriptedConn) Read(p []byte) (int, error) {
	if len(c.chunks) == 0 {
		return 0, io.EOF
	}
	n := copy(p, c.chunks[0])
	if c.chunks[0] = c.chunks[0][n:]; len(c.chunks[0]) == 0 {
		c.chunks = c.chunks[1:]
	}
	return n, nil
}

func (c *scriptedConn) SetReadDeadline(t time.Time) error {
	c.deadlines = append(c.deadlines, t)
	return nil
}

// A client that always leaves half a frame buffered and completes one now
// and then looks alive; the frame timeout is armed once for each partial
// frame and lifted when the decoder goes idle between frames.
func TestFrameTimeoutIsArmedPerPartialFrame(t *testing.T) {
	hb := AppendFrame(nil, TypeHeartbeat, nil)
	x := AppendFrame(nil, TypeDataRequest, make([]byte, 100))
	y := AppendFrame(nil, TypeDataRequest, make([]byte, 200))
	for _, tc := range []struct {
		name    string
		timeout time.Duration
		armed   int // deadlines set in the future
		cleared int // deadlines lifted
	}{
		{"bounded", time.Minute, 2, 1},
		{"unbounded", 0, 0, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := &scriptedConn{chunks: [][]byte{
				append(append([]byte{}, hb...), x[:50]...),
				append(append(append([]byte{}, x[50:]...), hb...), y[:10]...),
				y[10:],
			}}
			d := NewDecoder(c)
			d.SetFrameTimeout(tc.timeout)
			var types []byte
			for {
				f, err := d.Next()
				if errors.Is(err, io.EOF) {
					break
				}
				if err != nil {
					t.Fatalf("after %d frames: %v", len(types), err)
				}
				types = append(types, f.Type)
			}
			if want := []byte{TypeHeartbeat, TypeDataRequest, TypeHeartbeat, TypeDataRequest}; string(types) != string(want) {
				t.Fatalf("frames %v, want %v", types, want)
			}
			armed, cleared := 0, 0
			for _, dl := range c.deadlines {
				if dl.IsZero() {
					cleared++
				} else {
					armed++
				}
			}
			if armed != tc.armed || cleared != tc.cleared {
				t.Fatalf("deadlines %v: %d armed, %d cleared; want %d and %d", c.deadlines, armed, cleared, tc.armed, tc.cleared)
			}
		})
	}
}

// A frame that never completes fails Next once the timeout passes, on a
// real connection with real deadlines.
func TestStalledFrameFailsAfterTimeout(t *testing.T) {
	srv, cli := net.Pipe()
	defer srv.Close()
	defer cli.Close()
	frame := AppendFrame(nil, TypeDataRequest, make([]byte, 1000))
	go func() { _, _ = cli.Write(frame[:500]) }() // and nothing more
	d := NewDecoder(srv)
	defer d.Release()
	d.SetFrameTimeout(50 * time.Millisecond)
	_, err := d.Next()
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Next on a stalled frame: %v, want a deadline error", err)
	}
}
