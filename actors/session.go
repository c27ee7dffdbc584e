package actors

// A Session's part of the client-to-TUN path:
//
//  1. The reader goroutine decodes frames; 102 payloads that are
//     well-formed IPv4 packets (trimmed to their total length) arrive here
//     as one *messages.FromClient batch per burst.
//  2. Packets before a lease, with a source other than the leased address
//     (anti-spoofing) or to other clients while they are isolated are
//     dropped and counted. Packets larger than the TUN MTU are answered
//     with ICMP "fragmentation needed" (DF set) or fragmented
//     (session_mtu.go).
//  3. The rest go to the TUN actor in the same batch.
//
// And of the TUN-to-client path: *messages.ToClient batches from the Router
// go into the bounded data lane of the writer goroutine, which frames them
// as 103 and coalesces them into few writes; batches for a session that
// has not been assigned yet are dropped (not_assigned), and packets beyond
// the session's rate limit are dropped (rate_limit; see bucket.go).
//
// State: connected -> (100) requesting -> (lease) assigned. A 101 is the
// first frame a client ever receives; heartbeats (104) start with it. Both
// go through the control lane (session_out.go), which is never dropped.

import (
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/4over6d/4over6d/messages"
	"github.com/4over6d/4over6d/messages/wire"
)

type sessionState int

const (
	stateConnected sessionState = iota
	stateRequesting
	stateAssigned
)

// inflightBatches bounds each session's batches on their way to the TUN
// (at most 64 packets each): enough to keep the device busy, small enough
// that a flood from many clients cannot exhaust the server's memory.
const inflightBatches = 8

// inboxBatches bounds the batches the Router may have waiting in a
// session's mailbox: beyond it the Router drops (queue_full) rather than
// let a session whose actor is not scheduled pile up packets past -queue.
const inboxBatches = 16

// leaseRetry is how long a session waits for the pool before asking again
// (the pool may have crashed while holding the request).
const leaseRetry = 2 * time.Second

// Session owns one client TCP connection and its lease.
type Session struct {
	cfg     *shared
	conn    net.Conn
	client  netip.AddrPort
	stats   *SessionStats
	state   sessionState
	addr    netip.Addr
	reply   []byte // the 101 frame, kept for repeated 100s
	fields  messages.ReplySettings
	started time.Time
	heard   heardClock // when the client was last heard from; the reader notes heartbeats
	out     *outQueue
	ctl     inflight        // control messages from the reader not yet taken
	budget  messages.Budget // batches in flight to the TUN
	inbox   messages.Budget // batches the Router has queued in our mailbox
	done    chan struct{}   // closed at shutdown: unblocks a reader waiting for budget
	io      sync.WaitGroup
	closed  bool
	// Per-packet drop logs and the logs of unknown frame types are
	// rate-limited, so a flood cannot flood the log.
	dropLog, frameLog logLimit
	icmp              icmpBucket         // ICMP errors to the client (session_mtu.go)
	icmpOut           *messages.ToClient // errors built for the batch at hand
	reason            CloseReason
	ended             bool        // reason is set
	releasing         bool        // closed, waiting for the Router to drop the route (session_release.go)
	releaseWait       *time.Timer // bounds that wait

	// upRate is the uplink rate limit in bit/s (0: none), which the
	// reader paces by; down polices the downlink. Both are set from
	// -rate-limit at start and from the lease's override when granted
	// (session_rate.go).
	upRate atomic.Uint64
	down   tokenBucket

	// tick is the handshake timeout, then the heartbeat and silence
	// timer (session_timer.go); nextBeat is when the next heartbeat is
	// due, on heardClock's scale.
	tick, leaseWait *time.Timer
	nextBeat        time.Duration
}

type leaseTick struct{}

func (*leaseTick) IgnoreDeadLetterLogging() {}

var (
	tickLease = &leaseTick{}
	// unsupportedFrame answers a type-200 encryption request, which makes
	// that client fall back to plain mode.
	unsupportedFrame = wire.AppendFrame(nil, wire.TypeUnsupported, nil)
	heartbeatFrame   = wire.AppendFrame(nil, wire.TypeHeartbeat, nil)
)

func newSession(cfg *shared, conn net.Conn, stats *SessionStats, fields messages.ReplySettings) actor.Producer {
	return func() actor.Actor {
		return &Session{cfg: cfg, conn: conn, client: stats.Client, stats: stats, fields: fields}
	}
}

// Receive handles one message; see the file comment for the paths. A panic
// is marked as the close reason and passed on to the Supervisor.
func (s *Session) Receive(ctx actor.Context) {
	defer func() {
		if r := recover(); r != nil {
			s.reason, s.ended = ClosePanic, true
			panic(r)
		}
	}()
	switch m := ctx.Message().(type) {
	case *messages.FromClient:
		s.hear()
		s.fromClient(ctx, m)
	case *messages.ToClient:
		s.toClient(m)
	case *clientFrame:
		s.ctl.settle(m.kind)
		s.hear()
		s.onControl(ctx, m.typ)
	case *sessionTick:
		s.onTick(ctx)
	case *leaseTick:
		if s.state == stateRequesting {
			s.requestLease(ctx)
		}
	case *messages.LeaseGranted:
		s.onGranted(ctx, m)
	case *messages.LeaseDenied:
		s.cfg.Logger.Warn("lease denied; closing session", slog.String("client", s.client.String()), slog.String("reason", m.Reason))
		if m.Fleet {
			s.cfg.Metrics.Refuse(RefuseFleetUnavailable)
		}
		s.stop(ctx, CloseLeaseDenied)
	case *messages.Moved:
		s.stop(ctx, CloseMoved)
	case *messages.FleetLost:
		s.stop(ctx, CloseFleetLost)
	case *messages.ReclaimLease:
		s.reclaim(ctx, m.Pool)
	case *messages.ReplySettings:
		s.fields = *m
		if s.state == stateAssigned {
			s.reply = s.replyFrame()
		}
	case *connClosed:
		s.onConnClosed(ctx, m)
	case *actor.Started:
		s.start(ctx)
	case *actor.Stopping:
		s.shutdown()
	case *actor.Stopped:
		s.io.Wait()
		stopTimer(s.releaseWait)
		s.logEnd()
	case *routeReleased, *releaseTimeout, *actor.DeadLetterResponse:
		s.onReleased(ctx)
	case *messages.Kick:
		s.stop(ctx, CloseKicked) // the Supervisor logged the kick; logEnd says the reason
	case *messages.InjectPanic:
		panic("injected fault in session: " + m.Reason)
	}
}

func (s *Session) start(ctx actor.Context) {
	s.started = time.Now()
	s.heard.note(s.stats)
	s.out = newOutQueue(s.cfg.QueuePackets, &s.stats.Queued)
	s.budget, s.done = messages.NewBudget(inflightBatches), make(chan struct{})
	s.inbox = messages.NewBudget(inboxBatches)
	s.setRate(s.cfg.RateLimit)
	s.io.Add(1)
	sys, self := ctx.ActorSystem(), ctx.Self()
	r := &clientReader{budget: s.budget, done: s.done, inflight: &s.ctl, heard: &s.heard, stats: s.stats, m: s.cfg.Metrics, sys: sys, self: self,
		pacer: uplinkPacer{rate: &s.upRate, aliveEvery: aliveInterval(s.cfg.Timeout)}}
	go readClient(s.conn, r, s.cfg, &s.io)
	s.out.attach(&clientWriter{conn: s.conn, stall: s.cfg.Timeout, m: s.cfg.Metrics, sys: sys, self: self, wg: &s.io})
	s.tick = sendAfter(sys, self, s.cfg.HandshakeTimeout, tickSession)
	s.cfg.Logger.Debug("session connected", slog.String("client", s.client.String()))
}

// hear notes that the client is alive. Its heartbeats are noted by the
// reader itself (session_io.go): the silence check reads the clock the
// two share.
func (s *Session) hear() { s.heard.note(s.stats) }

// heardClock is when a client was last heard from, on the monotonic clock
// (a wall clock step must not look like silence). The session actor and
// its reader both move it forward; only the actor decides on it.
type heardClock struct{ mono atomic.Int64 } // since monoEpoch

// monoEpoch is the origin of heardClock: time.Since keeps to the
// monotonic clock.
var monoEpoch = time.Now()

// note sets the clock to now, and the status page's last-heard time.
func (c *heardClock) note(stats *SessionStats) {
	now := time.Now()
	c.mono.Store(int64(now.Sub(monoEpoch)))
	stats.lastHeard.Store(now.UnixNano())
}

// at is when the client was last heard from, since monoEpoch.
func (c *heardClock) at() time.Duration { return time.Duration(c.mono.Load()) }

func sendAfter(sys *actor.ActorSystem, pid *actor.PID, d time.Duration, msg any) *time.Timer {
	return time.AfterFunc(d, func() { sys.Root.Send(pid, msg) })
}

func (s *Session) onControl(ctx actor.Context, typ byte) {
	switch typ {
	case wire.TypeIPRequest:
		switch s.state {
		case stateAssigned:
			s.out.controlNow(controlReply, s.reply)
		case stateConnected:
			s.state = stateRequesting
			s.requestLease(ctx)
		}
	case wire.TypeEncryptRequest:
		s.out.controlNow(controlUnsupported, unsupportedFrame)
	default:
		if suppressed, ok := s.frameLog.allow(); ok {
			s.cfg.Logger.Debug("ignoring frames of unknown type (counted in frames_total{type=\"unknown\"})",
				slog.String("client", s.client.String()), slog.Int("suppressed_before", suppressed))
		}
	}
}

func (s *Session) requestLease(ctx actor.Context) {
	ctx.Request(s.cfg.pool, &messages.LeaseRequest{Session: ctx.Self(), Client: s.client, Inbox: s.inbox})
	if s.leaseWait == nil {
		s.leaseWait = sendAfter(ctx.ActorSystem(), ctx.Self(), leaseRetry, tickLease)
	} else {
		s.leaseWait.Reset(leaseRetry)
	}
}

func (s *Session) onGranted(ctx actor.Context, m *messages.LeaseGranted) {
	if s.state == stateAssigned {
		return
	}
	addr := m.Addr
	s.state, s.addr = stateAssigned, addr
	if m.Rate != 0 {
		s.setRate(m.Rate) // the client's reservation overrides -rate-limit
	}
	s.stats.setAddr(addr)
	stopTimer(s.leaseWait)
	s.reply = s.replyFrame()
	setup := time.Since(s.started)
	// Recorded before the 101 is queued: a client that has its 101 must
	// find its setup in the histogram.
	s.cfg.Metrics.Setup(setup)
	s.out.controlNow(controlReply, s.reply)
	s.startBeats(ctx)
	attrs := []any{slog.String("client", s.client.String()), slog.String("addr", addr.String()), slog.Duration("setup", setup)}
	if rate := s.upRate.Load(); rate != 0 {
		attrs = append(attrs, slog.String("rate_limit", FormatRate(rate)))
	}
	s.cfg.Logger.Info("session assigned", attrs...)
}

func (s *Session) replyFrame() []byte {
	return wire.IPReply{Addr: s.addr, Route: s.fields.Route, DNS: s.fields.DNS}.AppendFrame(nil)
}

func (s *Session) reclaim(ctx actor.Context, pool *actor.PID) {
	switch s.state {
	case stateAssigned:
		ctx.Send(pool, &messages.LeaseClaim{Session: ctx.Self(), Client: s.client, Addr: s.addr, Inbox: s.inbox})
	case stateRequesting:
		ctx.Send(pool, &messages.LeaseClaim{Session: ctx.Self(), Client: s.client})
		s.requestLease(ctx)
	default:
		ctx.Send(pool, &messages.LeaseClaim{Session: ctx.Self(), Client: s.client})
	}
}

func (s *Session) fromClient(ctx actor.Context, b *messages.FromClient) {
	if s.state != stateAssigned {
		s.cfg.Metrics.Drop(DropBeforeLease, len(b.Packets))
		b.Release()
		return
	}
	aside := false // fragments went to the TUN in batches ahead of b
	kept := b.Packets[:0]
	for _, pkt := range b.Packets {
		switch {
		case netip.AddrFrom4([4]byte(pkt[12:16])) != s.addr:
			s.drop(DropSpoofed, pkt)
		case s.cfg.IsolateClients && s.cfg.Pool.Contains(netip.AddrFrom4([4]byte(pkt[16:20]))):
			s.drop(DropClientToClient, pkt)
		case len(pkt) <= s.cfg.MTU:
			kept = append(kept, pkt)
		case wire.DontFragment(pkt):
			s.fragNeeded(pkt)
		default:
			kept = s.fragment(ctx, kept, pkt)
			aside = true
		}
	}
	s.flushICMP()
	clear(b.Packets[len(kept):])
	b.Packets = kept
	if len(kept) == 0 && !aside {
		b.Release()
		return
	}
	// Even empty, b goes last after fragments: its budget token must come
	// back only once they are written (session_mtu.go).
	s.forward(ctx, b)
}

// dropLogEvery is the most often a rate-limited log line is written.
const dropLogEvery = time.Second

// logLimit lets one line through per dropLogEvery and counts the ones it
// held back in between, for the next line to report.
type logLimit struct {
	last       time.Time
	suppressed int
}

// allow reports whether a line may be written now and, if so, how many
// were held back since the last one.
func (l *logLimit) allow() (suppressed int, ok bool) {
	now := time.Now()
	if now.Sub(l.last) < dropLogEvery {
		l.suppressed++
		return 0, false
	}
	suppressed, l.last, l.suppressed = l.suppressed, now, 0
	return suppressed, true
}

// drop counts, releases and (rate-limited) logs a client packet, with
// attrs saying more than the reason where there is more to say.
func (s *Session) drop(r DropReason, pkt []byte, attrs ...any) {
	s.cfg.Metrics.Drop(r, 1)
	s.stats.Drops.Add(1)
	wire.ReleasePacket(pkt)
	if suppressed, ok := s.dropLog.allow(); ok {
		s.cfg.Logger.Debug("dropped client packet", append([]any{slog.String("client", s.client.String()), slog.String("reason", r.String()),
			slog.Int("suppressed_before", suppressed)}, attrs...)...)
	}
}

func (s *Session) toClient(b *messages.ToClient) {
	b.Settle() // out of the mailbox: the Router may queue another
	n, bytes := len(b.Packets), b.Bytes()
	if s.state != stateAssigned {
		// The Router learns an address before its session does; the 101
		// must still be the first frame the client sees.
		s.dropBatch(DropNotAssigned, b)
		return
	}
	if s.down.limited() {
		if n, bytes = s.police(b); n == 0 {
			b.Release()
			return
		}
	}
	if !s.offerData(b, n, bytes) {
		s.down.refund(bytes) // not sent: the tokens stay for what comes next
	}
}

// offerData queues a batch (of n packets, bytes long, measured before the
// call since b is the writer's once offered) for the client, or drops it
// as queue_full (session_ended once the session is closing); it reports
// whether it was queued.
func (s *Session) offerData(b *messages.ToClient, n, bytes int) bool {
	if s.closed {
		s.dropBatch(DropSessionEnded, b)
		return false
	}
	if !s.out.offer(b) {
		s.dropBatch(DropQueueFull, b)
		return false
	}
	s.stats.countOut(n, bytes)
	return true
}

// dropBatch counts and releases a batch meant for the client.
func (s *Session) dropBatch(r DropReason, b *messages.ToClient) {
	n := len(b.Packets)
	s.cfg.Metrics.Drop(r, n)
	s.stats.Drops.Add(uint64(n))
	b.Release()
}

func (s *Session) onConnClosed(ctx actor.Context, m *connClosed) {
	if m.err != nil {
		s.cfg.Logger.Info("closing session", slog.String("client", s.client.String()), slog.String("reason", m.reason.String()), slog.Any("err", m.err))
	}
	s.stop(ctx, m.reason)
}

func (s *Session) stop(ctx actor.Context, reason CloseReason) {
	if !s.ended {
		s.reason, s.ended = reason, true
	}
	if s.releaseRoute(ctx) {
		return // it stops once the Router has dropped its route
	}
	ctx.Stop(ctx.Self())
}

// shutdown closes the connection (which ends the reader) and the queue
// (which ends a running writer); Stopped then waits for both.
func (s *Session) shutdown() {
	if s.closed {
		return
	}
	s.closed = true
	stopTimer(s.tick)
	stopTimer(s.leaseWait)
	_ = s.conn.Close()
	close(s.done)
	s.out.close()
}

func stopTimer(t *time.Timer) {
	if t != nil {
		t.Stop()
	}
}

func (s *Session) logEnd() {
	s.cfg.Metrics.Closed(s.reason)
	s.cfg.Logger.Info("session ended",
		slog.String("client", s.client.String()), slog.String("addr", addrString(s.addr)),
		slog.Duration("duration", time.Since(s.started).Round(time.Millisecond)), slog.String("reason", s.reason.String()),
		slog.Uint64("bytes_in", s.stats.BytesIn.Load()), slog.Uint64("bytes_out", s.stats.BytesOut.Load()))
}

func addrString(a netip.Addr) string {
	if !a.IsValid() {
		return "-"
	}
	return a.String()
}
