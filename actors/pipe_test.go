package actors

import (
	"net"
	"net/netip"
	"sync"
	"testing"

	"github.com/4over6d/4over6d/messages/wire"
)

// pipeListener is a net.Listener whose connections are net.Pipe pairs
// with any peer address the test chooses, so one test can play clients on
// several IPv6 addresses (the real loopback has only ::1).
type pipeListener struct {
	conns     chan net.Conn
	closed    chan struct{}
	closeOnce sync.Once
}

func newPipeListener() *pipeListener {
	return &pipeListener{conns: make(chan net.Conn), closed: make(chan struct{})}
}

// Accept returns the next connection made with dial, or net.ErrClosed.
func (l *pipeListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

// Close unblocks Accept.
func (l *pipeListener) Close() error {
	l.closeOnce.Do(func() { close(l.closed) })
	return nil
}

// Addr is the listener's (made-up) address.
func (l *pipeListener) Addr() net.Addr {
	return &net.TCPAddr{IP: net.ParseIP("2001:db8::1"), Port: 5678}
}

// peerConn is the server's end of a pipe, reporting the chosen peer.
type peerConn struct {
	net.Conn
	peer *net.TCPAddr
}

func (c peerConn) RemoteAddr() net.Addr { return c.peer }

// pair makes a connection from peer; the server's end is returned for the
// test to hand over itself, the client's end is wrapped for the test.
func (l *pipeListener) pair(t *testing.T, peer netip.AddrPort) (server net.Conn, c *client) {
	t.Helper()
	srv, cli := net.Pipe()
	c = &client{t: t, conn: cli, frames: make(chan wire.Frame, 1024), done: make(chan error, 1)}
	stopped := make(chan struct{})
	go c.read(stopped)
	t.Cleanup(func() { _ = cli.Close(); <-stopped })
	return peerConn{Conn: srv, peer: net.TCPAddrFromAddrPort(peer)}, c
}

// dial connects a client from peer through Accept.
func (l *pipeListener) dial(t *testing.T, peer netip.AddrPort) *client {
	t.Helper()
	srv, c := l.pair(t, peer)
	select {
	case l.conns <- srv:
	case <-l.closed:
		t.Fatal("listener closed")
	}
	return c
}

// newPipeHarness is a harness whose clients connect through a pipeListener.
func newPipeHarness(t *testing.T, tweak ...func(*Config)) (*harness, *pipeListener) {
	t.Helper()
	pl := newPipeListener()
	h := newHarness(t, append([]func(*Config){func(c *Config) {
		_ = c.Listener.Close()
		c.Listener = pl
	}}, tweak...)...)
	return h, pl
}
