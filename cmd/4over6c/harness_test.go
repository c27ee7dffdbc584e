package main

// A fake server on [::1] and a fake network around tuntest.Device, so the
// whole client (handshake, pumps, timers, reconnects) runs in go test
// without root.

import (
	"bytes"
	"context"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/4over6d/4over6d/messages/wire"
	"github.com/4over6d/4over6d/tun"
	"github.com/4over6d/4over6d/tun/tuntest"
	"go.uber.org/goleak"
)

const (
	testMTU  = 1500
	waitLong = 5 * time.Second
)

var (
	leasedAddr = netip.MustParseAddr("192.0.2.2")
	remoteAddr = netip.MustParseAddr("198.51.100.2")
	testReply  = wire.IPReply{
		Addr: leasedAddr, Route: netip.IPv4Unspecified(),
		DNS: [3]netip.Addr{netip.MustParseAddr("198.51.100.53"), netip.MustParseAddr("198.51.100.54"), netip.MustParseAddr("203.0.113.53")},
	}
)

// verifyNoLeaks checks for leaked goroutines after every other cleanup of
// the test has run, since it is registered first.
func verifyNoLeaks(t *testing.T) {
	t.Helper()
	t.Cleanup(func() { goleak.VerifyNone(t) })
}

// fakeServer accepts connections and hands them to the test in order.
type fakeServer struct {
	ln    net.Listener
	conns chan net.Conn
	done  chan struct{}
}

func newFakeServer(t *testing.T) *fakeServer {
	t.Helper()
	ln, err := net.Listen("tcp6", "[::1]:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	s := &fakeServer{ln: ln, conns: make(chan net.Conn, 64), done: make(chan struct{})}
	go s.acceptLoop()
	t.Cleanup(func() {
		_ = ln.Close()
		<-s.done
		close(s.conns)
		for c := range s.conns {
			_ = c.Close()
		}
	})
	return s
}

func (s *fakeServer) acceptLoop() {
	defer close(s.done)
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		select {
		case s.conns <- c:
		default:
			_ = c.Close()
		}
	}
}

// accept returns the next connection from the client, closed at cleanup.
func (s *fakeServer) accept(t *testing.T) *peer {
	t.Helper()
	select {
	case c := <-s.conns:
		p := &peer{t: t, conn: c, dec: wire.NewDecoder(c)}
		t.Cleanup(func() { _ = c.Close(); p.dec.Release() })
		return p
	case <-time.After(waitLong):
		t.Fatal("client did not connect")
		return nil
	}
}

// peer is the server end of one client connection.
type peer struct {
	t    *testing.T
	conn net.Conn
	dec  *wire.Decoder
}

func (p *peer) write(b []byte) {
	p.t.Helper()
	if _, err := p.conn.Write(b); err != nil {
		p.t.Fatalf("server write: %v", err)
	}
}

// next returns the next frame of the given type, skipping heartbeats.
func (p *peer) next(typ byte) wire.Frame {
	p.t.Helper()
	_ = p.conn.SetReadDeadline(time.Now().Add(waitLong))
	for {
		f, err := p.dec.Next()
		if err != nil {
			p.t.Fatalf("waiting for frame %d: %v", typ, err)
		}
		if f.Type == typ {
			return f
		}
		if f.Type != wire.TypeHeartbeat {
			p.t.Fatalf("got frame %d while waiting for %d", f.Type, typ)
		}
	}
}

// handshake answers the client's 100 with reply.
func (p *peer) handshake(reply wire.IPReply) {
	p.t.Helper()
	p.next(wire.TypeIPRequest)
	p.write(reply.AppendFrame(nil))
}

// awaitClose reads until the client closes the connection and returns how
// long that took.
func (p *peer) awaitClose(within time.Duration) time.Duration {
	p.t.Helper()
	start := time.Now()
	_ = p.conn.SetReadDeadline(start.Add(within))
	for {
		if _, err := p.dec.Next(); err != nil {
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				p.t.Fatalf("client kept the connection open for %v", within)
			}
			return time.Since(start)
		}
	}
}

// fakeNetwork hands out tuntest devices and records every lease.
type fakeNetwork struct {
	mu       sync.Mutex
	dev      *tuntest.Device
	leases   chan wire.IPReply
	discards int
}

func newFakeNetwork(t *testing.T) *fakeNetwork {
	n := &fakeNetwork{leases: make(chan wire.IPReply, 64)}
	t.Cleanup(func() {
		n.mu.Lock()
		defer n.mu.Unlock()
		if n.dev != nil {
			_ = n.dev.Close()
		}
	})
	return n
}

func (n *fakeNetwork) Attach(lease wire.IPReply) (tun.Device, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.dev == nil {
		n.dev = tuntest.New("4over6c", testMTU)
	}
	n.leases <- lease
	return n.dev, nil
}

func (n *fakeNetwork) Discard() {
	n.mu.Lock()
	defer n.mu.Unlock()
	_ = n.dev.Close()
	n.dev = nil
	n.discards++
}

func (n *fakeNetwork) device() *tuntest.Device {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.dev
}

func (n *fakeNetwork) discardCount() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.discards
}

func (n *fakeNetwork) awaitLease(t *testing.T) wire.IPReply {
	t.Helper()
	select {
	case l := <-n.leases:
		return l
	case <-time.After(waitLong):
		t.Fatal("client never attached the network")
		return wire.IPReply{}
	}
}

// logBuffer collects log output safely across goroutines.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func (l *logBuffer) count(s string) int { return strings.Count(l.String(), s) }

// hasLine reports whether one line contains all parts.
func (l *logBuffer) hasLine(parts ...string) bool {
	for line := range strings.Lines(l.String()) {
		if !slices.ContainsFunc(parts, func(p string) bool { return !strings.Contains(line, p) }) {
			return true
		}
	}
	return false
}

// runningClient is a client run by a test, stopped at cleanup.
type runningClient struct {
	net    *fakeNetwork
	logs   *logBuffer
	cancel context.CancelFunc
	done   chan struct{}
}

// startClient runs a client against srv with the given session timers.
// leasedSession starts a client with short timers against a fake server and
// completes the handshake, returning once the client has its address.
func leasedSession(t *testing.T) (*fakeServer, *runningClient, *peer) {
	t.Helper()
	srv := newFakeServer(t)
	rc := startClient(t, srv, shortTimers())
	p := srv.accept(t)
	p.handshake(testReply)
	rc.net.awaitLease(t)
	return srv, rc, p
}

func startClient(t *testing.T, srv *fakeServer, cfg sessionConfig) *runningClient {
	t.Helper()
	return startClientWith(t, srv, cfg, nil)
}

// startClientWith is startClient with a reconnect channel (SIGHUP).
func startClientWith(t *testing.T, srv *fakeServer, cfg sessionConfig, reconnect <-chan os.Signal) *runningClient {
	t.Helper()
	return startClientOpts(t, cfg, clientOpts{servers: srv.ln.Addr().String(), reconnect: reconnect})
}

// clientOpts are the parts of a test client that tests vary.
type clientOpts struct {
	servers   string // the -server value
	lookup    lookupFunc
	reconnect <-chan os.Signal
	watchPath func(ctx context.Context, local, remote netip.Addr) error
	// stableAfter is an hour when zero, so no session resets the backoff.
	stableAfter time.Duration
}

func startClientOpts(t *testing.T, cfg sessionConfig, o clientOpts) *runningClient {
	t.Helper()
	entries, err := parseServers(o.servers)
	if err != nil {
		t.Fatal(err)
	}
	if o.stableAfter == 0 {
		o.stableAfter = time.Hour
	}
	rc := &runningClient{net: newFakeNetwork(t), logs: &logBuffer{}, done: make(chan struct{})}
	c := &client{
		servers: newServerWalk(entries, o.lookup),
		dial: func(ctx context.Context, addr netip.AddrPort) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "tcp6", addr.String())
		},
		host:        rc.net,
		cfg:         cfg,
		backoff:     &backoff{min: 10 * time.Millisecond, max: 50 * time.Millisecond, random: func() float64 { return 0.5 }},
		stableAfter: o.stableAfter,
		log:         slog.New(slog.NewTextHandler(rc.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		reconnect:   o.reconnect,
		watchPath:   o.watchPath,
	}
	ctx, cancel := context.WithCancel(context.Background())
	rc.cancel = cancel
	go func() {
		defer close(rc.done)
		c.run(ctx)
	}()
	t.Cleanup(func() {
		if !rc.stop(waitLong) {
			t.Error("client did not stop after cancel")
		}
		if t.Failed() {
			t.Logf("client logs:\n%s", rc.logs.String())
		}
	})
	return rc
}

// stop cancels the client and reports whether it returned within d.
func (rc *runningClient) stop(d time.Duration) bool {
	rc.cancel()
	select {
	case <-rc.done:
		return true
	case <-time.After(d):
		return false
	}
}

func (rc *runningClient) running() bool {
	select {
	case <-rc.done:
		return false
	default:
		return true
	}
}

// shortTimers keeps unit tests fast; each test overrides what it measures.
func shortTimers() sessionConfig {
	return sessionConfig{heartbeat: time.Second, timeout: 3 * time.Second, handshakeTimeout: 2 * time.Second}
}
