package actors

// The operator's kick: Server.Kick asks the Supervisor, which knows every
// session and its leased address, to close the one holding an address
// and, with a ban, to refuse that client's source for a while (policy.go).
// The answer waits until the session has ended, so a caller that lists
// the sessions next no longer sees it.
//
// A kicked client keeps its grace stickiness, with or without a ban: the
// pool's grace reservation costs nobody an address (it is lent to another
// client when nothing else is free), and a client that returns after its
// ban gets its old address back like after any other end.

import (
	"fmt"
	"log/slog"
	"net/netip"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/4over6d/4over6d/messages"
)

// kickRequest asks the Supervisor to close the session holding addr and,
// if ban > 0, to ban its source for ban.
type kickRequest struct {
	addr netip.Addr
	ban  time.Duration
}

// kickReply answers a kickRequest.
type kickReply struct {
	res KickResult
	err error
}

// kickPending is the answer a kicked session's end releases.
type kickPending struct {
	reply  *actor.PID
	answer *kickReply
}

// Kick closes the session holding addr now (close reason kicked; its
// address goes back to the pool) and returns once it has ended. ban > 0
// also refuses new connections from that client's source (-source-prefix)
// for ban; a longer ban already in place stays. errors.Is(err,
// ErrNoSession) when nobody holds addr, errors.Is(err, ErrTooManyBans)
// when the ban table is full (then nothing was kicked).
func (s *Server) Kick(addr netip.Addr, ban time.Duration) (KickResult, error) {
	if ban < 0 {
		return KickResult{}, fmt.Errorf("failed to kick %v: negative ban %v", addr, ban)
	}
	if !addr.Is4() {
		return KickResult{}, fmt.Errorf("failed to kick %v: not an IPv4 address: %w", addr, ErrNoSession)
	}
	res, err := s.ask(s.root, &kickRequest{addr: addr, ban: ban})
	if err != nil {
		return KickResult{}, fmt.Errorf("failed to kick %v: %w", addr, err)
	}
	r, ok := res.(*kickReply)
	if !ok {
		return KickResult{}, fmt.Errorf("failed to kick %v: unexpected answer %T", addr, res)
	}
	return r.res, r.err
}

// kick handles a kickRequest; the answer is sent from onTerminated.
func (s *Supervisor) kick(ctx actor.Context, m *kickRequest) {
	e := s.holder(m.addr)
	if e == nil {
		ctx.Respond(&kickReply{err: fmt.Errorf("failed to kick %v: %w", m.addr, ErrNoSession)})
		return
	}
	res := KickResult{Client: e.stats.Client}
	if m.ban > 0 {
		now := s.cfg.now()
		until, err := s.bans.add(e.source, now.Add(m.ban), now)
		if err != nil {
			s.cfg.Logger.Warn("refusing to kick: the ban table is full", slog.String("addr", m.addr.String()),
				slog.String("client", res.Client.String()), slog.Any("err", err))
			ctx.Respond(&kickReply{err: fmt.Errorf("failed to kick %v: %w", m.addr, err)})
			return
		}
		res.BannedUntil = until
	}
	e.kicked = &kickPending{reply: ctx.Sender(), answer: &kickReply{res: res}}
	ctx.Send(e.pid, &messages.Kick{})
	attrs := []any{slog.String("addr", m.addr.String()), slog.String("client", res.Client.String())}
	if m.ban > 0 {
		attrs = append(attrs, slog.String("source", e.source.String()), slog.Time("banned_until", res.BannedUntil),
			slog.Int("bans", s.bans.len()))
	}
	s.cfg.Logger.Info("kicking session", attrs...)
}

// holder is the session holding addr that is not already being kicked.
func (s *Supervisor) holder(addr netip.Addr) *sessionEntry {
	for _, e := range s.sessions {
		if e.kicked == nil && e.stats.Addr() == addr {
			return e
		}
	}
	return nil
}
