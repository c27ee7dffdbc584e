package actors

import (
	"encoding/binary"
	"errors"
	"net"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/4over6d/4over6d/messages"
	"github.com/4over6d/4over6d/messages/wire"
)

// The writer's life: it runs only while something is queued, one at a
// time, keeps the frames in order across restarts, and is gone (its
// batches released) once the queue is closed, idle or not.

// exclusiveConn counts the writes made through it and those that
// overlapped another write: there must be one writer at a time.
type exclusiveConn struct {
	net.Conn
	raw                        syscall.RawConn // nil: the connection has no file descriptor
	busy, overlaps             atomic.Int32
	writes, rawWrites, written atomic.Int64
}

func (c *exclusiveConn) enter() {
	if c.busy.Add(1) > 1 {
		c.overlaps.Add(1)
	}
}

func (c *exclusiveConn) leave() { c.busy.Add(-1) }

func (c *exclusiveConn) Write(b []byte) (int, error) {
	c.enter()
	defer c.leave()
	c.writes.Add(1)
	return c.Conn.Write(b)
}

func (c *exclusiveConn) SyscallConn() (syscall.RawConn, error) {
	if c.raw == nil {
		return nil, errors.New("no file descriptor")
	}
	return exclusiveRaw{c}, nil
}

type exclusiveRaw struct{ c *exclusiveConn }

func (r exclusiveRaw) Control(f func(uintptr)) error   { return r.c.raw.Control(f) }
func (r exclusiveRaw) Read(f func(uintptr) bool) error { return r.c.raw.Read(f) }
func (r exclusiveRaw) Write(f func(uintptr) bool) error {
	r.c.enter()
	defer r.c.leave()
	r.c.rawWrites.Add(1)
	return r.c.raw.Write(f)
}

// connPair returns the server end (wrapped) and the client end of a
// connection of the given kind: "tcp" over the IPv6 loopback (with a file
// descriptor, so control frames can be written directly) or "pipe".
func connPair(t *testing.T, kind string) (*exclusiveConn, net.Conn) {
	t.Helper()
	if kind == "pipe" {
		srv, cli := net.Pipe()
		t.Cleanup(func() { _ = srv.Close(); _ = cli.Close() })
		return &exclusiveConn{Conn: srv}, cli
	}
	ln, err := net.Listen("tcp6", "[::1]:0")
	if err != nil {
		t.Skipf("no IPv6 loopback on this machine: %v", err)
	}
	defer ln.Close()
	cli, err := net.Dial("tcp6", ln.Addr().String())
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	srv, err := ln.Accept()
	if err != nil {
		t.Fatalf("accept: %v", err)
	}
	t.Cleanup(func() { _ = srv.Close(); _ = cli.Close() })
	raw, err := srv.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatalf("SyscallConn: %v", err)
	}
	return &exclusiveConn{Conn: srv, raw: raw}, cli
}

// writerRig is an outQueue with its writer attached to one connection.
type writerRig struct {
	t      *testing.T
	q      *outQueue
	conn   *exclusiveConn
	cli    net.Conn
	queued atomic.Int64
	wg     sync.WaitGroup
	closed chan *connClosed // what the writer told its owner
}

func newWriterRig(t *testing.T, kind string, limit int) *writerRig {
	t.Helper()
	r := &writerRig{t: t, closed: make(chan *connClosed, 1)}
	r.conn, r.cli = connPair(t, kind)
	r.q = newOutQueue(limit, &r.queued)
	sys := quietSystem()
	t.Cleanup(sys.Shutdown)
	owner := sys.Root.Spawn(actor.PropsFromFunc(func(ctx actor.Context) {
		if m, ok := ctx.Message().(*connClosed); ok {
			select {
			case r.closed <- m:
			default:
			}
		}
	}))
	r.q.attach(&clientWriter{conn: r.conn, stall: wait, m: &Metrics{}, sys: sys, self: owner, wg: &r.wg})
	return r
}

// seqBatch is a batch of n 100-byte packets numbered from first.
func seqBatch(first uint32, n int) *messages.ToClient {
	b := messages.NewToClient()
	for i := range n {
		pkt := make([]byte, 100)
		binary.BigEndian.PutUint32(pkt, first+uint32(i))
		b.AppendCopy(pkt)
	}
	return b
}

// writersDone waits for every writer to have exited.
func (r *writerRig) writersDone(what string) {
	r.t.Helper()
	done := make(chan struct{})
	go func() { r.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(wait):
		r.t.Fatalf("%s: a writer is still running after %v", what, wait)
	}
}

// idle waits until no writer holds the queue and every writer has exited.
func (r *writerRig) idle(what string) {
	r.t.Helper()
	eventually(r.t, wait, what+": writer parked", func() bool { return !r.q.running.Load() })
	r.writersDone(what)
}

// expectData reads data frames numbered first.. up to n of them, in order.
func expectData(t *testing.T, dec *wire.Decoder, first uint32, n int) {
	t.Helper()
	for want := first; want < first+uint32(n); want++ {
		f, err := dec.Next()
		if err != nil {
			t.Fatalf("waiting for packet %d: %v", want, err)
		}
		if f.Type != wire.TypeDataReply {
			t.Fatalf("waiting for packet %d: got a frame of type %d", want, f.Type)
		}
		if got := binary.BigEndian.Uint32(f.Payload); got != want {
			t.Fatalf("got packet %d, want %d", got, want)
		}
	}
}

func TestWriterRunsOnlyWhileSomethingIsQueued(t *testing.T) {
	for _, kind := range []string{"tcp", "pipe"} {
		t.Run(kind, func(t *testing.T) {
			r := newWriterRig(t, kind, 1024)
			dec := wire.NewDecoder(r.cli)
			defer dec.Release()
			if r.q.running.Load() {
				t.Fatal("a writer runs before anything was queued")
			}
			for round := range 3 {
				first := uint32(round * 100)
				for i := range 4 {
					if !r.q.offer(seqBatch(first+uint32(i*10), 10)) {
						t.Fatalf("round %d: batch %d refused", round, i)
					}
				}
				expectData(t, dec, first, 40)
				r.idle("after round " + string(rune('0'+round)))
				if q := r.queued.Load(); q != 0 {
					t.Fatalf("round %d: %d packets still counted as queued", round, q)
				}
			}
			if r.conn.overlaps.Load() != 0 {
				t.Fatalf("%d writes overlapped", r.conn.overlaps.Load())
			}
		})
	}
}

// A producer that queues while the writer keeps parking and restarting
// (the client reads as fast as it can) gets every packet through, in order,
// with heartbeats in between and never two writers at once.
func TestFramesKeepTheirOrderAcrossWriterRestarts(t *testing.T) {
	const packets = 3000
	for _, kind := range []string{"tcp", "pipe"} {
		t.Run(kind, func(t *testing.T) {
			r := newWriterRig(t, kind, 256)
			var heartbeats atomic.Int64
			readErr := make(chan error, 1)
			go func() {
				dec := wire.NewDecoder(r.cli)
				defer dec.Release()
				want := uint32(0)
				for want < packets {
					f, err := dec.Next()
					switch {
					case err != nil:
						readErr <- err
						return
					case f.Type == wire.TypeHeartbeat:
						heartbeats.Add(1)
					case f.Type != wire.TypeDataReply:
						readErr <- errors.New("unexpected frame type")
						return
					default:
						if got := binary.BigEndian.Uint32(f.Payload); got != want {
							readErr <- errors.New("packet out of order")
							return
						}
						want++
					}
				}
				readErr <- nil
			}()
			sent, deadline := uint32(0), time.Now().Add(wait)
			for i := 0; sent < packets; i++ {
				n := min(1+i%3, packets-int(sent))
				b := seqBatch(sent, n)
				for !r.q.offer(b) {
					if time.Now().After(deadline) {
						t.Fatalf("the queue stayed full for %v after %d packets: no writer drains it", wait, sent)
					}
					runtime.Gosched() // the queue is full: let the writer drain it
				}
				sent += uint32(n)
				if i%7 == 0 {
					r.q.controlNow(controlHeartbeat, heartbeatFrame)
				}
			}
			select {
			case err := <-readErr:
				if err != nil {
					t.Fatalf("client: %v", err)
				}
			case <-time.After(wait):
				t.Fatalf("not every packet arrived within %v", wait)
			}
			r.idle("after the run")
			if r.conn.overlaps.Load() != 0 {
				t.Fatalf("%d writes overlapped", r.conn.overlaps.Load())
			}
			if heartbeats.Load() == 0 {
				t.Fatal("no heartbeat arrived")
			}
			t.Logf("%d writes, %d direct writes, %d heartbeats", r.conn.writes.Load(), r.conn.rawWrites.Load(), heartbeats.Load())
		})
	}
}

// A control frame for an idle queue is written by the caller, without a
// writer goroutine, unless the socket takes only part of it or none: the
// writer then sends what is left, before anything queued after it.
func TestControlFrameOfAnIdleQueue(t *testing.T) {
	for _, tc := range []struct {
		name       string
		sysWrite   func(fd int, b []byte) (int, error)
		before     func(c net.Conn) error
		wantWriter bool
		attempts   int64 // direct writes tried, the data batch's included when no writer held the queue
	}{
		{name: "written directly", attempts: 2},
		{name: "after an expired write deadline", attempts: 3, before: func(c net.Conn) error {
			return c.SetWriteDeadline(time.Now().Add(-time.Second))
		}},
		{name: "short write", attempts: 1, wantWriter: true, sysWrite: func(fd int, b []byte) (int, error) {
			return syscall.Write(fd, b[:2])
		}},
		{name: "socket full", attempts: 1, wantWriter: true, sysWrite: func(int, []byte) (int, error) {
			return -1, syscall.EAGAIN
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newWriterRig(t, "tcp", 1024)
			r.q.w.sysWrite = tc.sysWrite
			if tc.before != nil {
				if err := tc.before(r.conn.Conn); err != nil {
					t.Fatal(err)
				}
			}
			r.q.controlNow(controlHeartbeat, heartbeatFrame)
			if !tc.wantWriter && r.q.running.Load() {
				t.Fatal("the queue is still held after a direct write")
			}
			r.q.offer(seqBatch(7, 1))
			dec := wire.NewDecoder(r.cli)
			defer dec.Release()
			if f, err := dec.Next(); err != nil || f.Type != wire.TypeHeartbeat || f.Length != wire.HeaderLen {
				t.Fatalf("first frame: type %d, length %d, err %v; want a heartbeat", f.Type, f.Length, err)
			}
			expectData(t, dec, 7, 1)
			r.idle(tc.name)
			if got := r.conn.rawWrites.Load(); got != tc.attempts {
				t.Errorf("%d direct writes, want %d", got, tc.attempts)
			}
			// Behind a writer that finishes the heartbeat, the data batch
			// is queued for it (one coalesced write); without one it is
			// written directly too. The frame order above proves that the
			// writer's writes came after the direct one.
			if got := r.conn.writes.Load(); tc.wantWriter && got < 1 || !tc.wantWriter && got != 0 {
				t.Errorf("%d writes by a writer, want one or more: %v", got, tc.wantWriter)
			}
		})
	}
}

// Data for an idle queue is written by the caller, without a writer
// goroutine, unless the socket takes only part of it or none: a writer then
// sends the rest before anything queued after it, and every packet is
// counted out once.
func TestDataOfAnIdleQueue(t *testing.T) {
	for _, tc := range []struct {
		name       string
		sysWrite   func(fd int, b []byte) (int, error)
		wantWriter bool
	}{
		{name: "written directly"},
		{name: "short write", wantWriter: true, sysWrite: func(fd int, b []byte) (int, error) {
			return syscall.Write(fd, b[:wire.HeaderLen+3])
		}},
		{name: "socket full", wantWriter: true, sysWrite: func(int, []byte) (int, error) {
			return -1, syscall.EAGAIN
		}},
		{name: "write failed", wantWriter: true, sysWrite: func(int, []byte) (int, error) {
			return -1, syscall.ENOBUFS
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newWriterRig(t, "tcp", 1024)
			r.q.w.sysWrite = tc.sysWrite
			if !r.q.offer(seqBatch(0, 3)) {
				t.Fatal("first batch refused")
			}
			if got := r.q.running.Load(); got != tc.wantWriter {
				t.Fatalf("queue held after the direct write: %v, want %v", got, tc.wantWriter)
			}
			if !r.q.offer(seqBatch(3, 2)) {
				t.Fatal("second batch refused")
			}
			dec := wire.NewDecoder(r.cli)
			defer dec.Release()
			expectData(t, dec, 0, 5)
			r.idle(tc.name)
			wantRaw, wantWrites := int64(2), int64(0) // both batches direct
			if tc.wantWriter {
				wantRaw, wantWrites = 1, 1 // the second queued behind the writer, one coalesced write
			}
			if got := r.conn.rawWrites.Load(); got != wantRaw {
				t.Errorf("%d direct writes, want %d", got, wantRaw)
			}
			if got := r.conn.writes.Load(); got < wantWrites || !tc.wantWriter && got != 0 {
				t.Errorf("%d writes by a writer, want %d", got, wantWrites)
			}
			if got := r.q.w.m.PacketsOut.Load(); got != 5 {
				t.Errorf("%d packets counted out, want 5", got)
			}
			if q := r.queued.Load(); q != 0 {
				t.Errorf("%d packets still counted as queued", q)
			}
		})
	}
}

// Closing stops the writer and releases what was queued, whether the
// writer was idle, or blocked on a client that stopped reading.
func TestCloseEndsTheWriter(t *testing.T) {
	for _, kind := range []string{"tcp", "pipe"} {
		t.Run(kind+"/idle", func(t *testing.T) {
			r := newWriterRig(t, kind, 1024)
			dec := wire.NewDecoder(r.cli)
			defer dec.Release()
			r.q.offer(seqBatch(0, 5))
			expectData(t, dec, 0, 5)
			r.idle("before close")
			writes := r.conn.writes.Load()
			_ = r.conn.Close()
			r.q.close()
			if b := seqBatch(5, 1); r.q.offer(b) {
				t.Error("a closed queue took a batch")
			} else {
				b.Release()
			}
			r.writersDone("after close")
			if got := r.conn.writes.Load(); got != writes {
				t.Errorf("%d writes after close", got-writes)
			}
		})
		t.Run(kind+"/writing", func(t *testing.T) {
			r := newWriterRig(t, kind, 64*wire.BatchCap)
			if tcp, ok := r.conn.Conn.(*net.TCPConn); ok {
				// Small buffers: the client, which never reads, stops the writer soon.
				_ = tcp.SetWriteBuffer(4096)
				_ = r.cli.(*net.TCPConn).SetReadBuffer(4096)
			}
			total := 0
			for range 64 {
				b := messages.NewToClient()
				for range wire.BatchCap {
					b.AppendCopy(make([]byte, 1400))
				}
				if !r.q.offer(b) {
					b.Release()
					break
				}
				total += wire.BatchCap
			}
			eventually(t, wait, "the writer took a batch", func() bool {
				q := r.queued.Load()
				return q > 0 && q < int64(total) && r.q.running.Load()
			})
			_ = r.conn.Close()
			r.q.close()
			r.writersDone("after close")
			if q := r.queued.Load(); q != 0 {
				t.Fatalf("%d packets still counted as queued after close", q)
			}
			select {
			case m := <-r.closed:
				if m.reason != CloseWriteError {
					t.Errorf("writer reported %v, want %v", m.reason, CloseWriteError)
				}
			case <-time.After(wait):
				t.Error("the writer did not report its failed write")
			}
		})
	}
}

// goroutinesIn counts the goroutines whose stack contains fn.
func goroutinesIn(fn string) int {
	buf := allStacks()
	count := 0
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, fn) {
			count++
		}
	}
	return count
}

// Idle sessions, heartbeats and all, keep one goroutine each (the reader);
// data through them starts a writer that is gone again once it is sent.
func TestIdleSessionsHoldNoWriter(t *testing.T) {
	const sessions = 8
	// Heartbeats more often than writerLinger would keep a writer that
	// data started waiting for them.
	h := newHarness(t, func(c *Config) { c.Heartbeat = writerLinger + 150*time.Millisecond })
	clients := make([]*client, sessions)
	for i := range clients {
		clients[i] = h.connect()
	}
	for _, c := range clients {
		for range 2 { // heartbeats keep coming while no writer runs
			for c.next(wait).Type != wire.TypeHeartbeat {
			}
		}
	}
	eventually(t, wait, "no writer goroutine left", func() bool { return goroutinesIn("actors.(*outQueue).write") == 0 })
	if got := goroutinesIn("actors.readClient"); got != sessions {
		t.Fatalf("%d reader goroutines, want %d", got, sessions)
	}
	h.dev.Inject(ping(inetHost, clients[0].addr, 1))
	clients[0].nextData(wait)
	eventually(t, wait, "the writer gone after the data", func() bool { return goroutinesIn("actors.(*outQueue).write") == 0 })
}

// BenchmarkSessionWriter is the session's way to its client over TCP: a
// batch of 32 full-size packets per op while the queue stays busy
// ("stream"), and one packet per op that the client has read before the
// next is queued ("pingpong": the writer parks and starts again every op).
func BenchmarkSessionWriter(b *testing.B) {
	b.Run("stream", func(b *testing.B) { benchWriter(b, benchBatch, false) })
	b.Run("pingpong", func(b *testing.B) { benchWriter(b, 1, true) })
}

func benchWriter(b *testing.B, perBatch int, lockstep bool) {
	ln, err := net.Listen("tcp6", "[::1]:0")
	if err != nil {
		b.Skipf("no IPv6 loopback: %v", err)
	}
	defer ln.Close()
	cli, err := net.Dial("tcp6", ln.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	defer cli.Close()
	srv, err := ln.Accept()
	if err != nil {
		b.Fatal(err)
	}
	defer srv.Close()
	frame := wire.HeaderLen + len(benchPacket)
	got := make(chan struct{}, 1)
	read := make(chan struct{})
	go func() {
		defer close(read)
		buf := make([]byte, 256<<10)
		have := 0
		for {
			n, err := cli.Read(buf)
			if err != nil {
				return
			}
			for have += n; have >= perBatch*frame; have -= perBatch * frame {
				select {
				case got <- struct{}{}:
				default:
				}
			}
		}
	}()
	sys := quietSystem()
	defer sys.Shutdown()
	owner := sys.Root.Spawn(actor.PropsFromFunc(func(actor.Context) {}))
	var queued atomic.Int64
	var wg sync.WaitGroup
	q := newOutQueue(1024, &queued)
	q.attach(&clientWriter{conn: srv, stall: wait, m: &Metrics{}, sys: sys, self: owner, wg: &wg})
	b.SetBytes(int64(perBatch * len(benchPacket)))
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		batch := messages.NewToClient()
		for range perBatch {
			batch.AppendCopy(benchPacket)
		}
		for !q.offer(batch) {
			runtime.Gosched()
		}
		if lockstep {
			<-got
		}
	}
	b.StopTimer()
	_ = srv.Close()
	q.close()
	wg.Wait()
	_ = cli.Close()
	<-read
}
