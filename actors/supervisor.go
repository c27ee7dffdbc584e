package actors

import (
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/4over6d/4over6d/messages"
	"github.com/4over6d/4over6d/tun"
)

// Child names under the Supervisor. The PIDs are known before the children
// exist, so the pool, Router and TUN actor can be given each other's
// addresses without a wiring round.
const (
	poolName   = "pool"
	routerName = "router"
	tunName    = "tun"
)

// shared is the configuration every actor of one server reads. It is built
// once, before any actor starts, and never written again.
type shared struct {
	Config
	MTU                int
	serverAddr         netip.Addr // the TUN's own address, source of the ICMP errors sessions send
	pool, router, tun  *actor.PID
	tuns               []*actor.PID // one TUN actor per queue; tun is tuns[0]
	supervisorRestarts actor.SupervisorStrategy
	reservations       []messages.Reservation // from the lease file at start
	statics            []messages.Static      // from the reservations file at start
	recoveryWait       time.Duration          // see defaultRecoveryWait
	// failed carries the reason the server gave up to its owner (Server);
	// it has room for one, and only the first failure is sent.
	failed chan error
	// stopped is closed when the Supervisor and all its children are gone.
	stopped chan struct{}
	// dispatch runs the mailbox turns of the actors on the packet path
	// (dispatch.go).
	dispatch *workerDispatcher
}

// GaveUpError is why a server stopped by itself: a service actor failed
// more often than its restart intensity allows (or the Supervisor itself
// failed). The process should exit non-zero so that its service manager
// starts a clean one.
type GaveUpError struct {
	Actor  string
	Reason string
}

func (e *GaveUpError) Error() string {
	return fmt.Sprintf("%s failed repeatedly (last: %s); the server gave up", e.Actor, e.Reason)
}

// reportFailure hands err to the owner unless a failure was reported
// already.
func (c *shared) reportFailure(err error) {
	select {
	case c.failed <- err:
	default:
	}
}

// Supervisor is the server's root actor: it owns the listener's accept
// goroutine, spawns one Session per connection and the three service
// actors, and decides what a failure means (see HandleFailure).
type Supervisor struct {
	cfg      *shared
	sessions map[string]*sessionEntry
	// order is the sessions in admission order, which is the order of
	// their Since: the session list needs no sort. Ended sessions are
	// marked gone and dropped once they are half of it (or by status).
	order     []*sessionEntry
	gone      int
	perSource map[netip.Prefix]int // by sourceOf
	bans      *banList
	// refuseLog rate-limits the refusal lines per reason: a flood from
	// outside -allow must not flood the log.
	refuseLog [numRefuseReasons]logLimit
	reply     messages.ReplySettings // current route and DNS for 101
	accept    *acceptor              // nil until started and after the stop
	stopping  bool
	// reservations are given to every pool incarnation: the lease file's
	// at first, then the ones a failing pool handed over.
	reservations []messages.Reservation
	// statics are the operator's reservations, passed on the same way:
	// the reservations file's at first, then a failing pool's.
	statics []messages.Static
	// lastFailure is the latest panic of a service actor, for the log
	// line when the Supervisor gives up on it.
	lastFailure map[ActorKind]string
	// fleetReadOnly is the pool's last word on the fleet: while etcd
	// cannot be reached safely, new connections are refused.
	fleetReadOnly bool
}

type sessionEntry struct {
	gone   bool // ended: to be dropped from Supervisor.order
	pid    *actor.PID
	stats  *SessionStats
	source netip.Prefix
	// kicked is the answer owed to a Kick, sent when the session has
	// ended; nil unless it was kicked.
	kicked *kickPending
}

// statusQuery asks for a snapshot of every session.
type statusQuery struct{}

func newSupervisor(cfg *shared) actor.Producer {
	return func() actor.Actor {
		return &Supervisor{cfg: cfg, sessions: make(map[string]*sessionEntry), perSource: make(map[netip.Prefix]int), bans: newBanList(maxBans),
			reply: messages.ReplySettings{Route: cfg.Route, DNS: cfg.DNS}, reservations: cfg.reservations,
			statics: cfg.statics, lastFailure: make(map[ActorKind]string)}
	}
}

// Receive handles one message.
func (s *Supervisor) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *acceptTick:
		if conn, ok := s.accept.take(); ok {
			s.admit(ctx, conn)
		}
	case *actor.Terminated:
		s.onTerminated(ctx, m.Who)
	case *messages.PoolStarted:
		s.answerPool(ctx)
	case *messages.FleetState:
		s.fleetReadOnly = m.ReadOnly
	case *messages.PoolHandover:
		if m.Seeded {
			s.reservations, s.statics = m.Reservations, m.Statics
		}
	case *statusQuery:
		ctx.Respond(s.status())
	case *kickRequest:
		s.kick(ctx, m)
	case *messages.ReplySettings:
		s.reply = *m
		for _, e := range s.sessions {
			ctx.Send(e.pid, m)
		}
		s.cfg.Logger.Info("reply settings reloaded", slog.String("route", m.Route.String()),
			slog.String("dns", fmt.Sprint(m.DNS)), slog.Int("sessions", len(s.sessions)))
	case *messages.InjectPanic:
		panic("injected fault in supervisor: " + m.Reason)
	case *actor.Started:
		s.start(ctx)
	case *actor.Stopping, *actor.Restarting:
		// A restart (which the guardian never orders, but a changed
		// policy might) stops the children too: the next incarnation
		// starts its own accept loop on a fresh listener it cannot have,
		// so this one must not keep running.
		s.stopping = true
		s.stopAccepting()
	case *actor.Stopped:
		close(s.cfg.stopped)
	}
}

// start spawns the service actors in dependency order (the Router asks the
// pool for its table when it starts, and the TUN actor feeds the Router),
// each at the PID the others were given, then starts accepting.
func (s *Supervisor) start(ctx actor.Context) {
	if !s.spawnAt(ctx, poolName, s.cfg.pool, newAddressPool(s.cfg)) || !s.spawnAt(ctx, routerName, s.cfg.router, newRouter(s.cfg)) {
		return
	}
	if !s.spawnTUNActors(ctx) {
		return
	}
	s.accept = startAcceptor(s.cfg.Listener, s.cfg.Logger, ctx.ActorSystem(), ctx.Self())
	if len(s.cfg.Allow) > 0 || s.cfg.SourcePrefix != DefaultSourcePrefix {
		s.cfg.Logger.Info("access policy", slog.String("allow", fmt.Sprint(s.cfg.Allow)), slog.Int("source_prefix", s.cfg.SourcePrefix),
			slog.Int("max_per_source", s.cfg.MaxPerSource))
	}
}

// packetPathProps runs an actor on the packet path (pool, Router, TUN
// actors, sessions) on the worker dispatcher (dispatch.go), so a mailbox
// turn does not start a fresh goroutine with a small stack.
func (s *Supervisor) packetPathProps(p actor.Producer) *actor.Props {
	return actor.PropsFromProducer(p, actor.WithDispatcher(s.cfg.dispatch))
}

// spawnTUNActors spawns one TUN actor per queue, each a supervised child
// of its own, so a panic in one restarts only that one.
func (s *Supervisor) spawnTUNActors(ctx actor.Context) bool {
	for q, want := range s.cfg.tuns {
		if !s.spawnAt(ctx, tunQueueName(q), want, newTUNActor(s.cfg, q)) {
			return false
		}
	}
	return true
}

// spawnAt spawns a service actor under name, where the others were told
// it lives (want); if it cannot, the supervisor gives up and it says false.
func (s *Supervisor) spawnAt(ctx actor.Context, name string, want *actor.PID, p actor.Producer) bool {
	pid, err := ctx.SpawnNamed(s.packetPathProps(p), name)
	if err == nil && !pid.Equal(want) {
		err = fmt.Errorf("spawned at %v, expected at %v", pid, want)
	}
	if err != nil {
		s.giveUp(ctx, &GaveUpError{Actor: name, Reason: fmt.Sprintf("failed to spawn: %v", err)})
		return false
	}
	return true
}

// tunQueueName names the TUN actor of a queue: "tun" for the first, as
// with a single queue, then "tun-1", "tun-2", ...
func tunQueueName(q int) string {
	if q == 0 {
		return tunName
	}
	return fmt.Sprintf("%s-%d", tunName, q)
}

// tunFor is the TUN actor a session with address a writes to: always the
// same one for the session, so its packets are never reordered across
// queues, and the kernel's flow steering (tun_flow_update) then sends the
// replies back on that queue too. Addresses are leased in order, so the
// remainder spreads sessions evenly.
func (c *shared) tunFor(a netip.Addr) *actor.PID {
	if len(c.tuns) == 1 || !a.Is4() {
		return c.tun
	}
	b := a.As4()
	n := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
	return c.tuns[n%uint32(len(c.tuns))]
}

// stopAccepting ends the accept goroutine and closes every connection it
// handed over that no tick has admitted yet.
func (s *Supervisor) stopAccepting() {
	if s.accept != nil {
		s.accept.stop()
		s.accept = nil
	}
}

func (s *Supervisor) admit(ctx actor.Context, conn net.Conn) {
	client := remoteAddrPort(conn)
	src := sourceOf(client.Addr(), s.cfg.SourcePrefix)
	if reason, refused := s.refusal(client.Addr(), src); refused {
		s.refuse(conn, client, src, reason)
		return
	}
	stats := newSessionStats(client, time.Now())
	pid := ctx.Spawn(s.packetPathProps(newSession(s.cfg, conn, stats, s.reply)))
	e := &sessionEntry{pid: pid, stats: stats, source: src}
	s.sessions[pid.Id] = e
	s.order = append(s.order, e)
	s.perSource[src]++
	s.cfg.Metrics.SessionsOpened.Add(1)
	s.cfg.Metrics.SessionsActive.Add(1)
}

// refusal applies the access policy and the connection limits before a
// session is spawned, so a flood costs an accept and a close, nothing
// more: first -allow, then bans, then the limits.
func (s *Supervisor) refusal(client netip.Addr, src netip.Prefix) (RefuseReason, bool) {
	switch {
	case !allowedBy(s.cfg.Allow, client):
		return RefuseNotAllowed, true
	case s.isBanned(src):
		return RefuseBanned, true
	case s.cfg.MaxSessions > 0 && len(s.sessions) >= s.cfg.MaxSessions:
		return RefuseSessionLimit, true
	case s.cfg.MaxPerSource > 0 && s.perSource[src] >= s.cfg.MaxPerSource:
		return RefusePerSource, true
	case s.fleetReadOnly:
		return RefuseFleetUnavailable, true
	}
	return 0, false
}

func (s *Supervisor) isBanned(src netip.Prefix) bool {
	_, banned := s.bans.banned(src, s.cfg.now())
	return banned
}

// refuse closes a connection the policy turned away, counts it and logs
// it, at most once a second per reason (with the count held back).
func (s *Supervisor) refuse(conn net.Conn, client netip.AddrPort, src netip.Prefix, reason RefuseReason) {
	// Counted and logged before the close, so that whoever sees the
	// connection end (the client, a test) also finds it in the metrics
	// and the log.
	defer conn.Close()
	s.cfg.Metrics.Refuse(reason)
	suppressed, ok := s.refuseLog[reason].allow()
	if !ok {
		return
	}
	attrs := []any{slog.String("client", client.String()), slog.String("source", src.String()), slog.String("reason", reason.String()),
		slog.Int("suppressed_before", suppressed)}
	switch reason {
	case RefuseSessionLimit:
		attrs = append(attrs, slog.Int("max_sessions", s.cfg.MaxSessions))
	case RefusePerSource:
		attrs = append(attrs, slog.Int("max_per_source", s.cfg.MaxPerSource), slog.Int("source_prefix", s.cfg.SourcePrefix))
	case RefuseBanned:
		until, _ := s.bans.banned(src, s.cfg.now())
		attrs = append(attrs, slog.Time("banned_until", until))
	}
	s.cfg.Logger.Warn("refusing connection", attrs...)
}

func remoteAddrPort(c net.Conn) netip.AddrPort {
	if a, ok := c.RemoteAddr().(*net.TCPAddr); ok {
		return a.AddrPort()
	}
	return netip.AddrPort{}
}

// onTerminated is idempotent: a parent may hear of a child's end twice.
func (s *Supervisor) onTerminated(ctx actor.Context, who *actor.PID) {
	if e, ok := s.sessions[who.Id]; ok {
		delete(s.sessions, who.Id)
		if e.gone, s.gone = true, s.gone+1; s.gone > len(s.order)/2 {
			s.compact()
		}
		if s.perSource[e.source] <= 1 {
			delete(s.perSource, e.source)
		} else {
			s.perSource[e.source]--
		}
		s.cfg.Metrics.SessionsClosed.Add(1)
		s.cfg.Metrics.SessionsActive.Add(-1)
		if e.kicked != nil && e.kicked.reply != nil {
			ctx.Send(e.kicked.reply, e.kicked.answer)
		}
		return
	}
	if kind, ok := s.serviceKind(who); ok && !s.stopping {
		s.giveUp(ctx, &GaveUpError{Actor: kind.String(), Reason: s.lastFailure[kind]})
	}
}

// giveUp stops the whole server: without one of its service actors it
// would only look alive (every session without a downlink, say). The
// pool saves the lease file as it stops; the owner removes the TUN device
// and the NAT table and exits non-zero.
func (s *Supervisor) giveUp(ctx actor.Context, err *GaveUpError) {
	s.cfg.Logger.Error("giving up: stopping the server", slog.String("actor", err.Actor), slog.String("last_failure", err.Reason),
		slog.Int("sessions", len(s.sessions)))
	s.stopping = true
	s.cfg.reportFailure(err)
	ctx.Stop(ctx.Self())
}

// answerPool tells a (re)started pool which sessions are alive and asks
// each of them to restate its lease to it.
func (s *Supervisor) answerPool(ctx actor.Context) {
	live := &messages.LiveSessions{Sessions: make([]*actor.PID, 0, len(s.sessions)), Reservations: s.reservations, Statics: s.statics}
	reclaim := &messages.ReclaimLease{Pool: s.cfg.pool}
	for _, e := range s.sessions {
		live.Sessions = append(live.Sessions, e.pid)
	}
	ctx.Send(s.cfg.pool, live)
	for _, pid := range live.Sessions {
		ctx.Send(pid, reclaim)
	}
}

// status lists the sessions oldest first. The dashboard's sampler asks
// every second, so it walks the admission order instead of sorting: at
// 100,000 sessions a sort of the snapshots took ~100-300 ms.
func (s *Supervisor) status() []SessionStatus {
	s.compact()
	out := make([]SessionStatus, len(s.order))
	for i, e := range s.order {
		out[i] = e.stats.Snapshot()
	}
	return out
}

// compact drops the ended sessions from the admission order.
func (s *Supervisor) compact() {
	if s.gone == 0 {
		return
	}
	kept := s.order[:0]
	for _, e := range s.order {
		if !e.gone {
			kept = append(kept, e)
		}
	}
	clear(s.order[len(kept):])
	s.order, s.gone = kept, 0
}

func (s *Supervisor) serviceKind(pid *actor.PID) (ActorKind, bool) {
	switch pid.Id {
	case s.cfg.pool.Id:
		return KindPool, true
	case s.cfg.router.Id:
		return KindRouter, true
	}
	for _, t := range s.cfg.tuns {
		if pid.Id == t.Id {
			return KindTUN, true
		}
	}
	return KindSession, false
}

// The restart intensity of the service actors: more failures than
// restartLimit within restartWindow and the server gives up.
const (
	restartLimit  = 10
	restartWindow = 10 * time.Second
)

// HandleFailure is the Supervisor's failure policy (it is the strategy for
// its own children). A panicking Session is stopped: its connection closes
// and the pool, which watches it, takes its address back; nothing else
// notices. The pool, Router and TUN actor are restarted and recover their
// state; if one keeps failing (more than 10 times in 10 s) it is stopped and
// the Supervisor gives up (see giveUp).
func (s *Supervisor) HandleFailure(sys *actor.ActorSystem, sup actor.Supervisor, child *actor.PID, rs *actor.RestartStatistics, reason any, message any) {
	kind, service := s.serviceKind(child)
	s.cfg.Metrics.Failure(kind)
	if !service {
		s.cfg.Logger.Error("session panicked; stopping it", slog.String("session", child.Id), slog.Any("reason", reason), slog.String("message", fmt.Sprintf("%T", message)))
		sup.StopChildren(child)
		return
	}
	s.cfg.Logger.Error("actor panicked; restarting it", slog.String("actor", kind.String()), slog.Any("reason", reason), slog.String("message", fmt.Sprintf("%T", message)))
	s.lastFailure[kind] = fmt.Sprint(reason)
	s.cfg.supervisorRestarts.HandleFailure(sys, sup, child, rs, reason, message)
}

// rootGuardian is the policy for the Supervisor itself: a Supervisor that
// panics has lost track of its sessions, so it is stopped (which stops
// every child, and the pool saves its leases) and the server reports that
// it gave up, like when a service actor keeps failing.
type rootGuardian struct {
	cfg *shared
}

// HandleFailure stops the failed Supervisor and reports the failure.
func (g *rootGuardian) HandleFailure(_ *actor.ActorSystem, sup actor.Supervisor, child *actor.PID, _ *actor.RestartStatistics, reason any, message any) {
	g.cfg.Logger.Error("supervisor panicked; stopping the server", slog.Any("reason", reason), slog.String("message", fmt.Sprintf("%T", message)))
	g.cfg.reportFailure(&GaveUpError{Actor: "supervisor", Reason: fmt.Sprint(reason)})
	sup.StopChildren(child)
}

func newShared(cfg Config, sys *actor.ActorSystem, root string) *shared {
	pid := func(name string) *actor.PID { return actor.NewPID(sys.Address(), root+"/"+name) }
	tuns := make([]*actor.PID, max(len(cfg.Queues), 1))
	for q := range tuns {
		tuns[q] = pid(tunQueueName(q))
	}
	return &shared{
		Config:             cfg,
		MTU:                cfg.Device.MTU(),
		serverAddr:         tun.ServerAddr(cfg.Pool),
		pool:               pid(poolName),
		router:             pid(routerName),
		tun:                tuns[0],
		tuns:               tuns,
		supervisorRestarts: actor.NewOneForOneStrategy(restartLimit, restartWindow, actor.DefaultDecider),
		failed:             make(chan error, 1),
		stopped:            make(chan struct{}),
		recoveryWait:       defaultRecoveryWait,
		dispatch:           newWorkerDispatcher(),
	}
}
