package actors

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sort"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/4over6d/4over6d/messages"
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
	pool, router, tun  *actor.PID
	supervisorRestarts actor.SupervisorStrategy
	reservations       []reservationEntry // from the lease file at start
}

// Supervisor is the server's root actor: it owns the listener's accept
// goroutine, spawns one Session per connection and the three service
// actors, and decides what a failure means (see HandleFailure).
type Supervisor struct {
	cfg        *shared
	sessions   map[string]*sessionEntry
	perSource  map[netip.Addr]int
	reply      messages.ReplySettings // current route and DNS for 101
	acceptDone chan struct{}
	stopping   bool
}

type sessionEntry struct {
	pid   *actor.PID
	stats *SessionStats
}

// accepted hands a new connection from the accept goroutine to the
// Supervisor, which decides whether to serve it.
type accepted struct{ conn net.Conn }

// statusQuery asks for a snapshot of every session.
type statusQuery struct{}

func newSupervisor(cfg *shared) actor.Producer {
	return func() actor.Actor {
		return &Supervisor{cfg: cfg, sessions: make(map[string]*sessionEntry), perSource: make(map[netip.Addr]int),
			reply: messages.ReplySettings{Route: cfg.Route, DNS: cfg.DNS}}
	}
}

// Receive handles one message.
func (s *Supervisor) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *accepted:
		s.admit(ctx, m.conn)
	case *actor.Terminated:
		s.onTerminated(m.Who)
	case *messages.PoolStarted:
		s.answerPool(ctx)
	case *statusQuery:
		ctx.Respond(s.status())
	case *messages.ReplySettings:
		s.reply = *m
		for _, e := range s.sessions {
			ctx.Send(e.pid, m)
		}
		s.cfg.Logger.Info("reply settings reloaded", slog.String("route", m.Route.String()),
			slog.String("dns", fmt.Sprint(m.DNS)), slog.Int("sessions", len(s.sessions)))
	case *actor.Started:
		s.start(ctx)
	case *actor.Stopping:
		s.stopping = true
		s.stopAccepting()
	}
}

func (s *Supervisor) start(ctx actor.Context) {
	for name, p := range map[string]actor.Producer{
		poolName: newAddressPool(s.cfg), routerName: newRouter(s.cfg), tunName: newTUNActor(s.cfg),
	} {
		if _, err := ctx.SpawnNamed(actor.PropsFromProducer(p), name); err != nil {
			panic(fmt.Sprintf("failed to spawn %s: %v", name, err))
		}
	}
	s.acceptDone = make(chan struct{})
	go acceptLoop(s.cfg.Listener, s.cfg.Logger, ctx.ActorSystem(), ctx.Self(), s.acceptDone)
}

// acceptLoop is the Supervisor's accept goroutine. It never stalls on a
// client: it only hands connections over. Temporary errors (such as
// running out of file descriptors) are logged and retried after a pause.
func acceptLoop(l net.Listener, log *slog.Logger, sys *actor.ActorSystem, self *actor.PID, done chan struct{}) {
	defer close(done)
	for {
		conn, err := l.Accept()
		if errors.Is(err, net.ErrClosed) {
			return
		}
		if err != nil {
			log.Error("failed to accept a connection; retrying", slog.Any("err", err))
			time.Sleep(50 * time.Millisecond)
			continue
		}
		sys.Root.Send(self, &accepted{conn: conn})
	}
}

func (s *Supervisor) stopAccepting() {
	if s.acceptDone == nil {
		return
	}
	_ = s.cfg.Listener.Close()
	<-s.acceptDone
	s.acceptDone = nil
}

func (s *Supervisor) admit(ctx actor.Context, conn net.Conn) {
	client := remoteAddrPort(conn)
	if reason, refused := s.refusal(client.Addr()); refused {
		s.cfg.Metrics.Refuse(reason)
		s.cfg.Logger.Warn("refusing connection", slog.String("client", client.String()), slog.String("reason", reason.String()),
			slog.Int("max_sessions", s.cfg.MaxSessions), slog.Int("max_per_source", s.cfg.MaxPerSource))
		_ = conn.Close()
		return
	}
	stats := newSessionStats(client, time.Now())
	pid := ctx.Spawn(actor.PropsFromProducer(newSession(s.cfg, conn, stats, s.reply)))
	s.sessions[pid.Id] = &sessionEntry{pid: pid, stats: stats}
	s.perSource[client.Addr()]++
	s.cfg.Metrics.SessionsOpened.Add(1)
	s.cfg.Metrics.SessionsActive.Add(1)
}

// refusal applies the connection limits before a session is spawned, so a
// flood costs an accept and a close, nothing more.
func (s *Supervisor) refusal(src netip.Addr) (RefuseReason, bool) {
	switch {
	case s.cfg.MaxSessions > 0 && len(s.sessions) >= s.cfg.MaxSessions:
		return RefuseSessionLimit, true
	case s.cfg.MaxPerSource > 0 && s.perSource[src] >= s.cfg.MaxPerSource:
		return RefusePerSource, true
	}
	return 0, false
}

func remoteAddrPort(c net.Conn) netip.AddrPort {
	if a, ok := c.RemoteAddr().(*net.TCPAddr); ok {
		return a.AddrPort()
	}
	return netip.AddrPort{}
}

// onTerminated is idempotent: a parent may hear of a child's end twice.
func (s *Supervisor) onTerminated(who *actor.PID) {
	if e, ok := s.sessions[who.Id]; ok {
		delete(s.sessions, who.Id)
		if src := e.stats.Client.Addr(); s.perSource[src] <= 1 {
			delete(s.perSource, src)
		} else {
			s.perSource[src]--
		}
		s.cfg.Metrics.SessionsClosed.Add(1)
		s.cfg.Metrics.SessionsActive.Add(-1)
		return
	}
	if kind, ok := s.serviceKind(who); ok && !s.stopping {
		s.cfg.Logger.Error("service actor stopped after repeated failures; the server is degraded", slog.String("actor", kind.String()))
	}
}

// answerPool tells a (re)started pool which sessions are alive and asks
// each of them to restate its lease to it.
func (s *Supervisor) answerPool(ctx actor.Context) {
	live := &messages.LiveSessions{Sessions: make([]*actor.PID, 0, len(s.sessions))}
	reclaim := &messages.ReclaimLease{Pool: s.cfg.pool}
	for _, e := range s.sessions {
		live.Sessions = append(live.Sessions, e.pid)
	}
	ctx.Send(s.cfg.pool, live)
	for _, pid := range live.Sessions {
		ctx.Send(pid, reclaim)
	}
}

func (s *Supervisor) status() []SessionStatus {
	out := make([]SessionStatus, 0, len(s.sessions))
	for _, e := range s.sessions {
		out = append(out, e.stats.Snapshot())
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Since.Before(out[j].Since) })
	return out
}

func (s *Supervisor) serviceKind(pid *actor.PID) (ActorKind, bool) {
	switch pid.Id {
	case s.cfg.pool.Id:
		return KindPool, true
	case s.cfg.router.Id:
		return KindRouter, true
	case s.cfg.tun.Id:
		return KindTUN, true
	}
	return KindSession, false
}

// HandleFailure is the Supervisor's failure policy (it is the strategy for
// its own children). A panicking Session is stopped: its connection closes
// and the pool, which watches it, takes its address back; nothing else
// notices. The pool, Router and TUN actor are restarted and recover their
// state; if one keeps failing (more than 10 times in 10 s) it is stopped.
func (s *Supervisor) HandleFailure(sys *actor.ActorSystem, sup actor.Supervisor, child *actor.PID, rs *actor.RestartStatistics, reason any, message any) {
	kind, service := s.serviceKind(child)
	s.cfg.Metrics.Failure(kind)
	if !service {
		s.cfg.Logger.Error("session panicked; stopping it", slog.String("session", child.Id), slog.Any("reason", reason), slog.String("message", fmt.Sprintf("%T", message)))
		sup.StopChildren(child)
		return
	}
	s.cfg.Logger.Error("actor panicked; restarting it", slog.String("actor", kind.String()), slog.Any("reason", reason), slog.String("message", fmt.Sprintf("%T", message)))
	s.cfg.supervisorRestarts.HandleFailure(sys, sup, child, rs, reason, message)
}

func newShared(cfg Config, sys *actor.ActorSystem, root string) *shared {
	pid := func(name string) *actor.PID { return actor.NewPID(sys.Address(), root+"/"+name) }
	return &shared{
		Config:             cfg,
		MTU:                cfg.Device.MTU(),
		pool:               pid(poolName),
		router:             pid(routerName),
		tun:                pid(tunName),
		supervisorRestarts: actor.NewOneForOneStrategy(10, 10*time.Second, actor.DefaultDecider),
	}
}
