package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"time"

	"github.com/4over6d/4over6d/messages/wire"
	"github.com/4over6d/4over6d/tun"
)

// Timeouts of connection setup: a server that does not accept or does not
// answer the address request within these is treated as down.
const (
	dialTimeout      = 10 * time.Second
	handshakeTimeout = 10 * time.Second
)

// network is the host side of the tunnel: the TUN device, its routes and
// DNS. It is an interface so that the reconnect loop can be tested with an
// in-memory device, without root.
type network interface {
	// Attach returns the device for a session with lease, creating it on
	// the first call and reconfiguring it when the lease changed, so that
	// an unchanged lease keeps the same TUN across reconnects.
	Attach(lease wire.IPReply) (tun.Device, error)
	// Discard closes the device after it failed, so that the next Attach
	// starts from a fresh one.
	Discard()
}

// client keeps one session with the server alive: it connects, runs the
// session and reconnects with backoff, forever, until its context ends.
type client struct {
	servers *serverWalk
	dial    func(ctx context.Context, addr netip.AddrPort) (net.Conn, error)
	host    network
	cfg     sessionConfig
	backoff *backoff
	// stableAfter is how long a session must last to reset the backoff.
	stableAfter time.Duration
	log         *slog.Logger
	// reconnect ends the current session (or the wait before the next)
	// and connects again at once: SIGHUP. Nil never fires.
	reconnect <-chan os.Signal
	// watchPath returns an errPathLost error when the network path from
	// local to remote is gone (roam_linux.go), or nil when ctx ends or it
	// cannot tell. Nil watches nothing.
	watchPath func(ctx context.Context, local, remote netip.Addr) error
	// tried names the server of the previous attempt, to log a change.
	tried string
}

// errReconnect is why a session ended when the operator asked for a new
// one (SIGHUP).
var errReconnect = errors.New("reconnect requested (SIGHUP)")

// errPathLost is why a session ended when the local network no longer
// reaches the server: its address or the route to the server went away.
var errPathLost = errors.New("network path to the server lost")

func newClient(o *options, host network, log *slog.Logger) *client {
	d := &net.Dialer{Timeout: dialTimeout}
	return &client{
		servers: newServerWalk(o.servers, lookupIPv6),
		// tcp6 only: over IPv4 the connection could be routed into the
		// tunnel it carries.
		dial: func(ctx context.Context, addr netip.AddrPort) (net.Conn, error) {
			return d.DialContext(ctx, "tcp6", addr.String())
		},
		host:        host,
		cfg:         sessionConfig{heartbeat: o.heartbeat, timeout: o.timeout, handshakeTimeout: handshakeTimeout},
		backoff:     newBackoff(),
		stableAfter: stableSession,
		log:         log,
		watchPath:   newPathWatcher(log).watch,
	}
}

// sessionResult says how far a session got and why it ended.
type sessionResult struct {
	server    string    // the server tried, for the log
	connected time.Time // zero if the handshake never completed
	err       error
	stats     *tunnelStats
}

// run connects and reconnects until ctx ends.
func (c *client) run(ctx context.Context) {
	for {
		sctx, cancel := context.WithCancelCause(ctx)
		watched := c.watchReconnect(sctx, cancel)
		res := c.attempt(sctx)
		cancel(nil)
		<-watched
		if ctx.Err() != nil {
			c.logEnd(res, "shutting down", 0)
			return
		}
		if errors.Is(context.Cause(sctx), errReconnect) {
			c.backoff.Reset()
			c.servers.restart()
			c.logEnd(res, errReconnect.Error(), 0)
			continue
		}
		wait := c.waitAfter(res)
		c.logEnd(res, res.err.Error(), wait)
		if !c.sleep(ctx, wait) {
			return
		}
	}
}

// watchReconnect ends ctx with errReconnect when a reconnect is asked for
// while it runs. The watcher goroutine exits when ctx ends; the returned
// channel is closed then.
func (c *client) watchReconnect(ctx context.Context, cancel context.CancelCauseFunc) <-chan struct{} {
	done := make(chan struct{})
	go func() {
		defer close(done)
		select {
		case <-c.reconnect:
			c.log.Info("SIGHUP: reconnecting")
			cancel(errReconnect)
		case <-ctx.Done():
		}
	}()
	return done
}

// waitAfter is the pause before the next attempt. A session that lasted
// resets the backoff, and one that ended because the local network moved
// is followed at once; a short one, or a failed attempt, takes the next
// backoff step, so a network that keeps failing is not hammered.
func (c *client) waitAfter(res sessionResult) time.Duration {
	stable := !res.connected.IsZero() && time.Since(res.connected) >= c.stableAfter
	if stable {
		c.backoff.Reset()
	}
	if stable && errors.Is(res.err, errPathLost) {
		return 0
	}
	return c.backoff.Next()
}

func (c *client) logEnd(res sessionResult, reason string, wait time.Duration) {
	if res.connected.IsZero() {
		if wait > 0 {
			c.log.Warn("connect failed", slog.String("server", res.server), slog.String("err", reason),
				slog.Duration("retry_in", wait.Round(time.Millisecond)))
		}
		return
	}
	c.log.Info("disconnected", slog.String("server", res.server), slog.String("reason", reason),
		slog.Duration("duration", time.Since(res.connected).Round(time.Millisecond)),
		slog.Uint64("packets_sent", res.stats.sent.Load()), slog.Uint64("packets_received", res.stats.received.Load()),
		slog.Uint64("packets_dropped", res.stats.dropped.Load()), slog.Duration("retry_in", wait.Round(time.Millisecond)))
}

// attempt connects to the next server of the -server list and runs the
// session, moving the walk on after a failure and back to this server
// after a session that connected.
func (c *client) attempt(ctx context.Context) sessionResult {
	t, err := c.servers.next(ctx)
	if err != nil {
		c.tried = t.entry.String()
		return sessionResult{server: c.tried, err: err}
	}
	if name := t.String(); name != c.tried {
		if c.tried != "" {
			c.log.Info("trying server", slog.String("server", name), slog.String("previous", c.tried))
		}
		c.tried = name
	}
	res := c.session(ctx, t.addr)
	res.server = c.tried
	if !res.connected.IsZero() {
		c.servers.connected(t)
	}
	return res
}

// session runs one connection from dial to close.
func (c *client) session(ctx context.Context, server netip.AddrPort) sessionResult {
	conn, err := c.dial(ctx, server)
	if err != nil {
		return sessionResult{err: fmt.Errorf("failed to connect: %w", err)}
	}
	defer conn.Close()
	ctx, stopWatch := c.watchPathOf(ctx, conn)
	defer stopWatch()
	// Closing the connection is what unblocks the handshake on shutdown.
	stop := context.AfterFunc(ctx, func() { _ = conn.Close() })
	defer stop()
	dec := wire.NewDecoder(conn)
	defer dec.Release()
	lease, err := handshake(conn, dec, c.cfg.handshakeTimeout)
	if err != nil {
		return sessionResult{err: pathLostOr(ctx, err)}
	}
	dev, err := c.host.Attach(lease)
	if err != nil {
		return sessionResult{err: err}
	}
	res := sessionResult{connected: time.Now()}
	c.log.Info("connected", slog.String("server", server.String()), slog.String("local", conn.LocalAddr().String()),
		slog.String("addr", lease.Addr.String()), slog.String("route", lease.Route.String()), slog.Any("dns", lease.DNS),
		slog.String("tun", dev.Name()))
	t := newTunnel(c.cfg, conn, dec, dev, c.log)
	// The watch's cancel closes conn through the AfterFunc above, and a
	// pump can fail on that and cancel the tunnel with its I/O error
	// before the lost path reaches the tunnel's context: the path is the
	// reason either way.
	res.err, res.stats = pathLostOr(ctx, t.run(ctx)), &t.stats
	if errors.Is(res.err, errDevice) {
		c.host.Discard()
	}
	return res
}

// watchPathOf returns a context that ends with an errPathLost cause when
// the network path of conn goes away, and the function that stops the
// watch and waits for its goroutine.
func (c *client) watchPathOf(ctx context.Context, conn net.Conn) (context.Context, func()) {
	local, lok := conn.LocalAddr().(*net.TCPAddr)
	remote, rok := conn.RemoteAddr().(*net.TCPAddr)
	if c.watchPath == nil || !lok || !rok {
		return ctx, func() {}
	}
	ctx, cancel := context.WithCancelCause(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := c.watchPath(ctx, local.AddrPort().Addr(), remote.AddrPort().Addr()); err != nil {
			cancel(err)
		}
	}()
	return ctx, func() {
		cancel(nil)
		<-done
	}
}

// pathLostOr returns the errPathLost cause of ctx if the path went away,
// which is the real reason of an I/O error after the connection was
// closed for it, else err.
func pathLostOr(ctx context.Context, err error) error {
	if cause := context.Cause(ctx); errors.Is(cause, errPathLost) {
		return cause
	}
	return err
}

// handshake sends the address request (100) and reads frames until the
// reply (101). Data and heartbeats before it are ignored; anything else,
// or a reply a client cannot use, is a protocol violation.
func handshake(conn net.Conn, dec *wire.Decoder, timeout time.Duration) (wire.IPReply, error) {
	if err := conn.SetDeadline(time.Now().Add(timeout)); err != nil {
		return wire.IPReply{}, fmt.Errorf("failed to set handshake deadline: %w", err)
	}
	if _, err := conn.Write(wire.AppendFrame(nil, wire.TypeIPRequest, nil)); err != nil {
		return wire.IPReply{}, fmt.Errorf("failed to send address request: %w", err)
	}
	for {
		f, err := dec.Next()
		if err != nil {
			return wire.IPReply{}, fmt.Errorf("failed to receive address reply: %w", readError(err))
		}
		switch f.Type {
		case wire.TypeDataReply, wire.TypeHeartbeat:
			continue
		case wire.TypeIPReply:
		default:
			return wire.IPReply{}, fmt.Errorf("%w: frame type %d before the address reply", errProtocol, f.Type)
		}
		lease, err := parseLease(f.Payload)
		if err != nil {
			return wire.IPReply{}, err
		}
		if err := conn.SetDeadline(time.Time{}); err != nil {
			return wire.IPReply{}, fmt.Errorf("failed to clear handshake deadline: %w", err)
		}
		return lease, nil
	}
}

// parseLease parses a 101 payload and rejects addresses no host can use.
func parseLease(payload []byte) (wire.IPReply, error) {
	lease, err := wire.ParseIPReply(payload)
	if err != nil {
		return wire.IPReply{}, fmt.Errorf("%w: %w", errProtocol, err)
	}
	a := lease.Addr
	if a.IsUnspecified() || a.IsMulticast() || a.IsLoopback() || a == netip.AddrFrom4([4]byte{255, 255, 255, 255}) {
		return wire.IPReply{}, fmt.Errorf("%w: leased address %v is not a unicast host address", errProtocol, a)
	}
	return lease, nil
}

// sleep waits for d and reports whether ctx is still alive.
// sleep waits d before the next connect, less if a reconnect is asked
// for; false means ctx ended.
func (c *client) sleep(ctx context.Context, d time.Duration) bool {
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-timer.C:
		return true
	case <-c.reconnect:
		c.log.Info("SIGHUP: connecting now")
		return true
	}
}
