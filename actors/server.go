package actors

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/4over6d/4over6d/messages"
)

// rootName is the Supervisor's name; the service actors live under it.
const rootName = "4over6d"

// stopWait bounds Close; the binary gives up sooner (shutdownDeadline).
const stopWait = 30 * time.Second

// queryTimeout bounds control-plane questions to the actors.
const queryTimeout = 5 * time.Second

// Server is a running engine: an actor system with its Supervisor. It is
// the handle the binary and the tests hold; all state lives in the actors.
type Server struct {
	system    *actor.ActorSystem
	root      *actor.PID
	cfg       *shared
	closeOnce sync.Once
	closeErr  error
}

// Start validates cfg and starts the actors. The listener and device stay
// the caller's: Close closes the listener (to stop accepting) but not the
// device, which the caller closes after Close returns.
func Start(cfg Config) (*Server, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("failed to start server: %w", err)
	}
	// Before anything else: a bad reservations file must stop the start
	// before the lease file is touched.
	statics, err := loadStatics(cfg)
	if err != nil {
		return nil, fmt.Errorf("failed to start server: %w", err)
	}
	sys := actor.NewActorSystem(
		actor.WithLoggerFactory(func(*actor.ActorSystem) *slog.Logger {
			return slog.New(floorHandler{Handler: cfg.Logger.Handler(), floor: slog.LevelWarn}).With("component", "protoactor")
		}),
	)
	sh := newShared(cfg, sys, rootName)
	countDeadBatches(sys, sh)
	sh.reservations = loadReservations(cfg)
	sh.statics = statics
	props := actor.PropsFromProducer(newSupervisor(sh), actor.WithGuardian(&rootGuardian{cfg: sh}))
	root, err := sys.Root.SpawnNamed(props, rootName)
	if err != nil {
		sys.Shutdown()
		_ = sh.dispatch.stop(stopWait) // the error above says what failed
		return nil, fmt.Errorf("failed to spawn supervisor: %w", err)
	}
	srv := &Server{system: sys, root: root, cfg: sh}
	// The Supervisor spawns the service actors in its Started, before it
	// answers anything: once this answer is in they exist, so nothing
	// sent to them from now on is a dead letter.
	if _, err := srv.ask(root, &statusQuery{}); err != nil {
		sys.Shutdown()
		_ = sh.dispatch.stop(stopWait) // the error above says what failed
		return nil, fmt.Errorf("failed to start the actors: %w", err)
	}
	return srv, nil
}

// loadReservations reads the lease file. An unreadable file is reported,
// moved aside (never silently overwritten) and otherwise ignored: losing
// address stickiness must not keep the server from starting.
func loadReservations(cfg Config) []messages.Reservation {
	if cfg.LeaseFile == "" {
		return nil
	}
	now := time.Now()
	recs, err := loadLeaseFile(cfg.LeaseFile, now, cfg.Grace)
	if err == nil {
		cfg.Logger.Info("loaded lease file", slog.String("file", cfg.LeaseFile), slog.Int("reserved", len(recs)))
		return recs
	}
	backup, qerr := quarantineLeaseFile(cfg.LeaseFile, now)
	cfg.Logger.Error("ignoring unreadable lease file", slog.Any("err", err), slog.String("moved_to", backup), slog.Any("move_err", qerr))
	return nil
}

// Failed delivers the reason when the server stopped by itself (a
// *GaveUpError): its sessions are closed and its lease file saved, and the
// owner should Close, release the device and exit non-zero. It never
// delivers after a Close the owner asked for.
func (s *Server) Failed() <-chan error { return s.cfg.failed }

// healthDeadline is how long each service actor has to answer /healthz.
const healthDeadline = time.Second

// Health asks the pool, the Router and every TUN queue's actor to answer within
// healthDeadline each and names every one that did not: a process whose
// actors are wedged or gone must not look healthy to its service manager.
func (s *Server) Health() error {
	type service struct {
		name string
		pid  *actor.PID
	}
	services := []service{{poolName, s.cfg.pool}, {routerName, s.cfg.router}}
	for q, pid := range s.cfg.tuns {
		services = append(services, service{tunQueueName(q), pid})
	}
	// All the questions are out before the first answer is awaited, so
	// the whole check takes at most one deadline.
	futures := make([]*actor.Future, len(services))
	for i, svc := range services {
		futures[i] = s.system.Root.RequestFuture(svc.pid, &messages.HealthCheck{}, healthDeadline)
	}
	var errs []error
	for i, f := range futures {
		res, err := f.Result()
		if _, ok := res.(*messages.Healthy); err == nil && !ok {
			err = errors.New("not running")
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("%s did not answer within %v: %w", services[i].name, healthDeadline, err))
		}
	}
	return errors.Join(errs...)
}

// Close stops accepting, ends every session (their clients see the TCP
// connection close), stops the actors and waits for their goroutines.
// Calling it again returns the first call's result.
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		// Not PoisonFuture: protoactor answers a watch of an actor that
		// is already stopping (one that gave up) at once, before its
		// children (the pool saving the lease file) are done.
		s.system.Root.Poison(s.root)
		select {
		case <-s.cfg.stopped:
		case <-time.After(stopWait):
			s.closeErr = fmt.Errorf("failed to stop the supervisor within %v", stopWait)
		}
		s.system.Shutdown()
		if err := s.cfg.dispatch.stop(stopWait); err != nil && s.closeErr == nil {
			s.closeErr = fmt.Errorf("failed to stop the actors: %w", err)
		}
	})
	return s.closeErr
}

// Reload changes the route and DNS fields of future 101 replies without
// touching any session: clients that connect or ask again get the new ones.
func (s *Server) Reload(route netip.Addr, dns [3]netip.Addr) {
	s.system.Root.Send(s.root, &messages.ReplySettings{Route: route, DNS: dns})
}

// Metrics are the server's counters.
func (s *Server) Metrics() *Metrics { return s.cfg.Metrics }

// Sessions returns a snapshot of every session.
func (s *Server) Sessions() ([]SessionStatus, error) {
	res, err := s.ask(s.root, &statusQuery{})
	if err != nil {
		return nil, err
	}
	return res.([]SessionStatus), nil
}

// Leases returns a copy of the pool's lease table.
func (s *Server) Leases() (*messages.LeaseTable, error) {
	res, err := s.ask(s.cfg.pool, &messages.LeasesQuery{})
	if err != nil {
		return nil, err
	}
	return res.(*messages.LeaseTable), nil
}

// Routes returns a copy of the Router's map.
func (s *Server) Routes() (*messages.Routes, error) {
	res, err := s.ask(s.cfg.router, &messages.RoutesQuery{})
	if err != nil {
		return nil, err
	}
	return res.(*messages.Routes), nil
}

// InjectPanic makes one actor panic inside Receive, to exercise the
// failure policy: actor is "pool", "router", "tun" (the first queue's TUN
// actor), "supervisor" or "session" (with the session chosen by its leased
// address).
func (s *Server) InjectPanic(ctx context.Context, kind string, addr netip.Addr) error {
	var target *actor.PID
	switch kind {
	case "pool":
		target = s.cfg.pool
	case "router":
		target = s.cfg.router
	case "tun":
		target = s.cfg.tun
	case "supervisor":
		target = s.root
	case "session":
		routes, err := s.Routes()
		if err != nil {
			return err
		}
		if target = routes.Routes[addr]; target == nil {
			return fmt.Errorf("no session holds %v", addr)
		}
	default:
		return fmt.Errorf("unknown actor %q (want pool, router, tun, supervisor or session)", kind)
	}
	s.system.Root.Send(target, &messages.InjectPanic{Reason: "requested"})
	return ctx.Err()
}

func (s *Server) ask(pid *actor.PID, msg any) (any, error) {
	res, err := s.system.Root.RequestFuture(pid, msg, queryTimeout).Result()
	if err != nil {
		return nil, fmt.Errorf("failed to query %s: %w", pid.Id, err)
	}
	if _, dead := res.(*actor.DeadLetterResponse); dead {
		return nil, errors.New("failed to query " + pid.Id + ": actor is not running")
	}
	return res, nil
}

// floorHandler raises the minimum level of protoactor's own logs: its
// dead-letter and lifecycle chatter is Info, which would drown ours.
type floorHandler struct {
	slog.Handler
	floor slog.Level
}

// Enabled drops records below the floor.
func (h floorHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= h.floor && h.Handler.Enabled(ctx, l)
}

// WithAttrs keeps the floor on derived handlers.
func (h floorHandler) WithAttrs(a []slog.Attr) slog.Handler {
	return floorHandler{Handler: h.Handler.WithAttrs(a), floor: h.floor}
}

// WithGroup keeps the floor on derived handlers.
func (h floorHandler) WithGroup(name string) slog.Handler {
	return floorHandler{Handler: h.Handler.WithGroup(name), floor: h.floor}
}
