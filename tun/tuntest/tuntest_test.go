package tuntest_test

import (
	"bytes"
	"errors"
	"io"
	"net/netip"
	"os"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/4over6d/4over6d/tun"
	"github.com/4over6d/4over6d/tun/tuntest"
)

const (
	testMTU = 1500
	// settle is how long a Read must stay blocked to count as blocked.
	settle = 50 * time.Millisecond
	// patience bounds every wait for something that should happen.
	patience = 5 * time.Second
)

var (
	client = netip.MustParseAddr("192.0.2.1")
	peer   = netip.MustParseAddr("198.51.100.2")
	remote = netip.MustParseAddr("203.0.113.9")
)

func bufs(n int) ([][]byte, []int) {
	b := make([][]byte, n)
	for i := range b {
		b[i] = make([]byte, testMTU)
	}
	return b, make([]int, n)
}

type readResult struct {
	n   int
	err error
}

// readAsync runs one Read of n buffers in a goroutine and reports on the
// returned channel; tests using it check for leaks.
func readAsync(d *tuntest.Device, n int) <-chan readResult {
	done := make(chan readResult, 1)
	b, s := bufs(n)
	go func() {
		got, err := d.Read(b, s)
		done <- readResult{got, err}
	}()
	return done
}

func expectBlocked(t *testing.T, done <-chan readResult) {
	t.Helper()
	select {
	case r := <-done:
		t.Fatalf("Read returned (%d, %v) while it should block", r.n, r.err)
	case <-time.After(settle):
	}
}

func awaitRead(t *testing.T, done <-chan readResult) readResult {
	t.Helper()
	select {
	case r := <-done:
		return r
	case <-time.After(patience):
		t.Fatal("Read still blocked")
		return readResult{}
	}
}

func TestReadBatches(t *testing.T) {
	tests := []struct {
		name   string
		inject int
		reads  []int // buffers per Read
		want   []int // packets per Read
	}{
		{"five into three then two", 5, []int{3, 3}, []int{3, 2}},
		{"one into many", 1, []int{8}, []int{1}},
		{"exact fit", 4, []int{4}, []int{4}},
		{"one at a time", 3, []int{1, 1, 1}, []int{1, 1, 1}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := tuntest.New("tun0", testMTU)
			defer d.Close()
			for i := range tc.inject {
				d.Inject(tuntest.Ping(client, peer, 1, uint16(i), nil))
			}
			seq := 0
			for r, nbufs := range tc.reads {
				b, s := bufs(nbufs)
				n, err := d.Read(b, s)
				if err != nil || n != tc.want[r] {
					t.Fatalf("Read %d = (%d, %v), want (%d, nil)", r, n, err, tc.want[r])
				}
				for i := range n {
					sum, err := tuntest.Parse(b[i][:s[i]])
					if err != nil || int(sum.Seq) != seq {
						t.Fatalf("packet %d: seq %d, err %v; want seq %d", seq, sum.Seq, err, seq)
					}
					seq++
				}
			}
		})
	}
}

func TestReadBlocksUntilInject(t *testing.T) {
	defer goleak.VerifyNone(t)
	d := tuntest.New("tun0", testMTU)
	defer d.Close()

	done := readAsync(d, 4)
	expectBlocked(t, done)
	d.Inject(tuntest.Ping(client, peer, 7, 1, []byte("x")))
	if r := awaitRead(t, done); r.err != nil || r.n != 1 {
		t.Fatalf("Read = (%d, %v), want (1, nil)", r.n, r.err)
	}
}

func TestInjectBlocksWhenFull(t *testing.T) {
	defer goleak.VerifyNone(t)
	d := tuntest.New("tun0", testMTU)
	defer d.Close()
	pkt := tuntest.Ping(client, peer, 1, 1, nil)
	for range 4096 {
		d.Inject(pkt)
	}
	injected := make(chan struct{})
	go func() {
		d.Inject(pkt)
		close(injected)
	}()
	select {
	case <-injected:
		t.Fatal("Inject into a full queue returned without a Read")
	case <-time.After(settle):
	}
	b, s := bufs(1)
	if _, err := d.Read(b, s); err != nil {
		t.Fatalf("Read: %v", err)
	}
	select {
	case <-injected:
	case <-time.After(patience):
		t.Fatal("Inject still blocked after a Read made room")
	}
}

func TestSetReadDeadline(t *testing.T) {
	tests := []struct {
		name string
		// before sets deadlines before Read starts.
		before []time.Duration // relative to now; 0 means the zero time
		// during moves the deadline while Read is pending, if set.
		during *time.Duration
		// queued packets are injected before Read starts.
		queued      int
		wantTimeout bool
		minWait     time.Duration
	}{
		{name: "past fails at once", before: []time.Duration{-time.Second}, wantTimeout: true},
		{name: "past fails even with packets queued", before: []time.Duration{-time.Second}, queued: 3, wantTimeout: true},
		{name: "future fails when due", before: []time.Duration{80 * time.Millisecond}, wantTimeout: true, minWait: 80 * time.Millisecond},
		{name: "zero clears a past deadline", before: []time.Duration{-time.Second, 0}},
		{name: "far future does not fire", before: []time.Duration{time.Hour}},
		{name: "moved to the past while pending", during: ptr(-time.Second), wantTimeout: true},
		{name: "moved to the future while pending", before: []time.Duration{time.Hour}, during: ptr(30 * time.Millisecond), wantTimeout: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			defer goleak.VerifyNone(t)
			d := tuntest.New("tun0", testMTU)
			defer d.Close()
			for _, rel := range tc.before {
				if err := d.SetReadDeadline(deadline(rel)); err != nil {
					t.Fatalf("SetReadDeadline: %v", err)
				}
			}
			for i := range tc.queued {
				d.Inject(tuntest.Ping(client, peer, 1, uint16(i), nil))
			}
			start := time.Now()
			done := readAsync(d, 1)
			if tc.during != nil {
				expectBlocked(t, done)
				if err := d.SetReadDeadline(deadline(*tc.during)); err != nil {
					t.Fatalf("SetReadDeadline: %v", err)
				}
			}
			if !tc.wantTimeout {
				expectBlocked(t, done)
				d.Inject(tuntest.Ping(client, peer, 1, 1, nil))
			}
			r := awaitRead(t, done)
			if got := errors.Is(r.err, os.ErrDeadlineExceeded); got != tc.wantTimeout {
				t.Fatalf("Read = (%d, %v), want deadline exceeded: %v", r.n, r.err, tc.wantTimeout)
			}
			if !tc.wantTimeout && (r.err != nil || r.n != 1) {
				t.Fatalf("Read = (%d, %v), want (1, nil)", r.n, r.err)
			}
			if waited := time.Since(start); waited < tc.minWait {
				t.Fatalf("Read timed out after %v, before the %v deadline", waited, tc.minWait)
			}
		})
	}
}

func ptr(d time.Duration) *time.Duration { return &d }

func deadline(rel time.Duration) time.Time {
	if rel == 0 {
		return time.Time{}
	}
	return time.Now().Add(rel)
}

func TestClose(t *testing.T) {
	defer goleak.VerifyNone(t)
	d := tuntest.New("tun0", testMTU)
	done := readAsync(d, 1)
	expectBlocked(t, done)
	if err := d.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if r := awaitRead(t, done); !errors.Is(r.err, tun.ErrClosed) {
		t.Fatalf("pending Read after Close = (%d, %v), want tun.ErrClosed", r.n, r.err)
	}

	d.Inject(tuntest.Ping(client, peer, 1, 1, nil)) // must not block or panic
	b, s := bufs(1)
	if _, err := d.Read(b, s); !errors.Is(err, tun.ErrClosed) {
		t.Fatalf("Read after Close: %v, want tun.ErrClosed", err)
	}
	if n, err := d.Write([][]byte{tuntest.Ping(client, peer, 1, 1, nil)}); n != 0 || !errors.Is(err, tun.ErrClosed) {
		t.Fatalf("Write after Close = (%d, %v), want (0, tun.ErrClosed)", n, err)
	}
	if err := d.SetReadDeadline(time.Now()); !errors.Is(err, tun.ErrClosed) {
		t.Fatalf("SetReadDeadline after Close: %v, want tun.ErrClosed", err)
	}
	if err := d.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

func TestCloseDiscardsQueuedPackets(t *testing.T) {
	const queued = 32
	d := tuntest.New("tun0", testMTU)
	for i := range queued {
		d.Inject(tuntest.Ping(client, peer, 1, uint16(i), nil))
	}
	if err := d.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	b, s := bufs(1)
	for range queued {
		if n, err := d.Read(b, s); !errors.Is(err, tun.ErrClosed) {
			t.Fatalf("Read after Close with packets queued = (%d, %v), want tun.ErrClosed", n, err)
		}
	}
}

func TestLoopback(t *testing.T) {
	inside := netip.MustParseAddr("198.51.100.7")
	tests := []struct {
		name     string
		prefix   netip.Prefix
		written  [][]byte
		wantBack []netip.Addr // destinations read back, in order
	}{
		{
			name:   "only in-prefix destinations come back",
			prefix: netip.MustParsePrefix("198.51.100.0/24"),
			written: [][]byte{
				tuntest.Ping(client, inside, 1, 1, nil),
				tuntest.Ping(client, remote, 1, 2, nil),
				tuntest.UDP(netip.AddrPortFrom(client, 4000), netip.AddrPortFrom(peer, 53), []byte("q")),
			},
			wantBack: []netip.Addr{inside, peer},
		},
		{
			name:    "off by default",
			written: [][]byte{tuntest.Ping(client, inside, 1, 1, nil)},
		},
		{
			name:    "junk is never looped",
			prefix:  netip.MustParsePrefix("0.0.0.0/0"),
			written: [][]byte{append([]byte{0x60}, make([]byte, 39)...), bytes.Repeat([]byte{0x45}, 8)},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := tuntest.New("tun0", testMTU)
			defer d.Close()
			d.SetLoopback(tc.prefix)
			if n, err := d.Write(tc.written); n != len(tc.written) || err != nil {
				t.Fatalf("Write = (%d, %v), want (%d, nil)", n, err, len(tc.written))
			}
			if got := len(d.Written()); got != len(tc.written) {
				t.Fatalf("Written holds %d packets, want every one of %d", got, len(tc.written))
			}
			if err := d.SetReadDeadline(time.Now().Add(settle)); err != nil {
				t.Fatalf("SetReadDeadline: %v", err)
			}
			b, s := bufs(len(tc.written) + 1)
			n, err := d.Read(b, s)
			if len(tc.wantBack) == 0 {
				if !errors.Is(err, os.ErrDeadlineExceeded) {
					t.Fatalf("Read = (%d, %v), want nothing looped back", n, err)
				}
				return
			}
			if err != nil || n != len(tc.wantBack) {
				t.Fatalf("Read = (%d, %v), want (%d, nil)", n, err, len(tc.wantBack))
			}
			for i, want := range tc.wantBack {
				sum, err := tuntest.Parse(b[i][:s[i]])
				if err != nil || sum.Dst != want {
					t.Fatalf("looped packet %d: dst %v, err %v; want dst %v", i, sum.Dst, err, want)
				}
			}
		})
	}
}

func TestWrittenDropsWhenFull(t *testing.T) {
	const extra = 3
	d := tuntest.New("tun0", testMTU)
	defer d.Close()
	pkt := tuntest.Ping(client, peer, 1, 1, nil)
	for range 4096 + extra {
		if n, err := d.Write([][]byte{pkt}); n != 1 || err != nil {
			t.Fatalf("Write = (%d, %v), want (1, nil)", n, err)
		}
	}
	if got := d.Dropped(); got != extra {
		t.Fatalf("Dropped = %d, want %d", got, extra)
	}
	if got := len(d.Written()); got != 4096 {
		t.Fatalf("Written holds %d, want 4096", got)
	}
}

func TestWriteRejectsBadSizes(t *testing.T) {
	good := tuntest.Ping(client, peer, 1, 1, nil)
	tests := []struct {
		name  string
		bufs  [][]byte
		wantN int
	}{
		{"empty after good", [][]byte{good, {}}, 1},
		{"oversize first", [][]byte{make([]byte, testMTU+1), good}, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := tuntest.New("tun0", testMTU)
			defer d.Close()
			n, err := d.Write(tc.bufs)
			if n != tc.wantN || !errors.Is(err, tuntest.ErrPacketSize) {
				t.Fatalf("Write = (%d, %v), want (%d, ErrPacketSize)", n, err, tc.wantN)
			}
			if got := len(d.Written()); got != tc.wantN {
				t.Fatalf("Written holds %d, want %d", got, tc.wantN)
			}
		})
	}
}

func TestReadRejectsBadBuffers(t *testing.T) {
	tests := []struct {
		name  string
		bufs  [][]byte
		sizes []int
	}{
		{"no buffers", nil, nil},
		{"fewer sizes than buffers", [][]byte{make([]byte, testMTU), make([]byte, testMTU)}, make([]int, 1)},
		{"buffer below MTU", [][]byte{make([]byte, testMTU-1)}, make([]int, 1)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := tuntest.New("tun0", testMTU)
			defer d.Close()
			d.Inject(tuntest.Ping(client, peer, 1, 1, nil))
			if n, err := d.Read(tc.bufs, tc.sizes); n != 0 || !errors.Is(err, io.ErrShortBuffer) {
				t.Fatalf("Read = (%d, %v), want (0, io.ErrShortBuffer)", n, err)
			}
			b, s := bufs(1)
			if n, err := d.Read(b, s); n != 1 || err != nil {
				t.Fatalf("packet lost by the rejected Read: (%d, %v)", n, err)
			}
		})
	}
}

func TestPacketsAreCopied(t *testing.T) {
	d := tuntest.New("tun0", testMTU)
	defer d.Close()
	orig := tuntest.Ping(client, peer, 1, 1, []byte("data"))
	pkt := bytes.Clone(orig)

	d.Inject(pkt)
	if _, err := d.Write([][]byte{pkt}); err != nil {
		t.Fatalf("Write: %v", err)
	}
	pkt[len(pkt)-1] ^= 0xff

	b, s := bufs(1)
	if _, err := d.Read(b, s); err != nil || !bytes.Equal(b[0][:s[0]], orig) {
		t.Fatalf("Read returned %x, %v; want the packet as injected %x", b[0][:s[0]], err, orig)
	}
	if got := <-d.Written(); !bytes.Equal(got, orig) {
		t.Fatalf("Written returned %x, want the packet as written %x", got, orig)
	}
}

func TestNameAndMTU(t *testing.T) {
	d := tuntest.New("tun7", 1280)
	defer d.Close()
	if d.Name() != "tun7" || d.MTU() != 1280 {
		t.Fatalf("Name, MTU = %q, %d; want tun7, 1280", d.Name(), d.MTU())
	}
}
