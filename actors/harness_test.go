package actors

import (
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"go.uber.org/goleak"

	"github.com/4over6d/4over6d/messages/wire"
	"github.com/4over6d/4over6d/tun/tuntest"
)

// TestMain checks that no goroutine outlives the tests. One protoactor
// goroutine is exempt: its dead-letter log throttle sleeps for one second
// after a dead letter and then exits. At shutdown, sessions ending after
// the pool always notify the stopped pool (a system message, so it cannot be
// silenced), which starts one.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("github.com/asynkron/protoactor-go/actor.NewDeadLetter.NewThrottle.func4.1"))
}

var (
	testPool   = netip.MustParsePrefix("192.0.2.0/24")
	serverAddr = netip.MustParseAddr("192.0.2.1")
	inetHost   = netip.MustParseAddr("198.51.100.10")
	testDNS    = [3]netip.Addr{
		netip.MustParseAddr("198.51.100.53"), netip.MustParseAddr("198.51.100.54"), netip.MustParseAddr("203.0.113.53"),
	}
)

// harness is one engine on a real IPv6 loopback listener and a fake TUN.
type harness struct {
	t   *testing.T
	srv *Server
	dev *tuntest.Device
	ln  net.Listener
}

func newHarness(t *testing.T, tweak ...func(*Config)) *harness {
	t.Helper()
	ln, err := net.Listen("tcp6", "[::1]:0")
	if err != nil {
		t.Skipf("no IPv6 loopback on this machine: %v", err)
	}
	dev := tuntest.New("fake0", 1500)
	cfg := Config{
		Listener: ln, Device: dev, Pool: testPool, DNS: testDNS,
		Logger: slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
	for _, f := range tweak {
		f(&cfg)
	}
	if d, ok := cfg.Device.(*tuntest.Device); ok {
		dev = d // a tweak chose another fake (another MTU)
	}
	if cfg.Listener != ln {
		_ = ln.Close() // a tweak listens elsewhere (in a namespace)
		ln = cfg.Listener
	}
	srv, err := Start(cfg)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	h := &harness{t: t, srv: srv, dev: dev, ln: ln}
	t.Cleanup(func() {
		if err := srv.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		_ = dev.Close()
	})
	return h
}

// closeWithin stops the server and fails the test with why when Close
// has not returned within d (a Close that waits on something it should
// not is the bug these checks look for).
func (h *harness) closeWithin(d time.Duration, why string) {
	h.t.Helper()
	closed := make(chan error, 1)
	go func() { closed <- h.srv.Close() }()
	select {
	case err := <-closed:
		if err != nil {
			h.t.Fatalf("Close: %v", err)
		}
	case <-time.After(d):
		h.t.Fatal(why)
	}
}

// testWriter sends engine logs to the test log, shown only on failure.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(string(p[:len(p)-1]))
	return len(p), nil
}

// client speaks the wire protocol by hand, like a lab client. A reader
// goroutine decodes frames into a channel, so waits with a timeout never
// disturb the stream.
type client struct {
	t      *testing.T
	conn   net.Conn
	frames chan wire.Frame
	done   chan error // the reader's final error
	addr   netip.Addr
	paused atomic.Bool // stop consuming frames (a hung client)
}

func (h *harness) dial() *client {
	h.t.Helper()
	conn, err := net.Dial("tcp6", h.ln.Addr().String())
	if err != nil {
		h.t.Fatalf("dial: %v", err)
	}
	return h.adopt(conn)
}

// adopt makes a client of a connection the test dialed.
func (h *harness) adopt(conn net.Conn) *client {
	c := &client{t: h.t, conn: conn, frames: make(chan wire.Frame, 1024), done: make(chan error, 1)}
	stopped := make(chan struct{})
	go c.read(stopped)
	h.t.Cleanup(func() { _ = conn.Close(); <-stopped })
	return c
}

func (c *client) read(stopped chan struct{}) {
	defer close(stopped)
	dec := wire.NewDecoder(c.conn)
	defer dec.Release()
	for {
		for c.paused.Load() {
			time.Sleep(10 * time.Millisecond)
			if c.isClosed() {
				break
			}
		}
		f, err := dec.Next()
		if err != nil {
			c.done <- err
			close(c.frames)
			return
		}
		f.Payload = append([]byte(nil), f.Payload...)
		select {
		case c.frames <- f:
		default: // the test is not reading this client: like a full socket buffer
		}
	}
}

// isClosed reports whether the test closed its end (a paused reader must
// still exit at cleanup).
func (c *client) isClosed() bool {
	return c.conn.SetReadDeadline(time.Time{}) != nil
}

// connect dials and completes the 100/101 exchange.
func (h *harness) connect() *client {
	c := h.dial()
	c.handshake()
	return c
}

func (c *client) send(typ byte, payload []byte) {
	c.t.Helper()
	c.sendRaw(wire.AppendFrame(nil, typ, payload))
}

func (c *client) sendRaw(b []byte) {
	c.t.Helper()
	if _, err := c.conn.Write(b); err != nil {
		c.t.Fatalf("write: %v", err)
	}
}

// next returns the next frame, failing the test after the timeout.
func (c *client) next(timeout time.Duration) wire.Frame {
	c.t.Helper()
	f, err := c.tryNext(timeout)
	if err != nil {
		c.t.Fatalf("waiting for a frame: %v", err)
	}
	return f
}

var errNoFrame = errors.New("no frame in time")

func (c *client) tryNext(timeout time.Duration) (wire.Frame, error) {
	select {
	case f, ok := <-c.frames:
		if !ok {
			return wire.Frame{}, io.EOF
		}
		return f, nil
	case <-time.After(timeout):
		return wire.Frame{}, errNoFrame
	}
}

// nextData returns the next 103 payload, skipping heartbeats.
func (c *client) nextData(timeout time.Duration) []byte {
	c.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		f := c.next(time.Until(deadline))
		switch f.Type {
		case wire.TypeHeartbeat:
			continue
		case wire.TypeDataReply:
			return f.Payload
		default:
			c.t.Fatalf("got frame type %d, want 103", f.Type)
		}
	}
}

// expectClosed waits for the server to close the connection.
func (c *client) expectClosed(timeout time.Duration) {
	c.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		_, err := c.tryNext(time.Until(deadline))
		if errors.Is(err, errNoFrame) {
			c.t.Fatal("connection not closed by the server in time")
		}
		if err != nil {
			return
		}
	}
}

func (c *client) handshake() netip.Addr {
	c.t.Helper()
	return handshakeWithin(c, 5*time.Second)
}

// handshakeWithin is handshake with its own bound on the wait for the 101
// (in a fleet, a takeover waits for a dead node's lease to run out).
func handshakeWithin(c *client, d time.Duration) netip.Addr {
	c.t.Helper()
	c.send(wire.TypeIPRequest, nil)
	f := c.next(d)
	if f.Type != wire.TypeIPReply {
		c.t.Fatalf("first frame has type %d, want 101", f.Type)
	}
	r, err := wire.ParseIPReply(f.Payload)
	if err != nil {
		c.t.Fatalf("parse 101 %q: %v", f.Payload, err)
	}
	c.addr = r.Addr
	return r.Addr
}

// written waits for the next packet the engine wrote to the fake TUN.
func (h *harness) written(timeout time.Duration) []byte {
	h.t.Helper()
	select {
	case p := <-h.dev.Written():
		return p
	case <-time.After(timeout):
		h.t.Fatal("no packet written to the TUN")
		return nil
	}
}

// eventually polls cond until it holds or the timeout passes.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (h *harness) leaseCount() int {
	lt, err := h.srv.Leases()
	if err != nil {
		h.t.Fatalf("leases: %v", err)
	}
	return len(lt.Leases)
}

func ping(src, dst netip.Addr, seq uint16) []byte {
	return tuntest.Ping(src, dst, 7, seq, []byte("4over6 test payload"))
}

// quietSystem is a bare actor system for tests that drive single actors
// without the engine; protoactor's own logging is discarded.
func quietSystem() *actor.ActorSystem {
	return actor.NewActorSystem(actor.WithLoggerFactory(func(*actor.ActorSystem) *slog.Logger {
		return slog.New(slog.DiscardHandler)
	}))
}
