package actors

// A Session's clock: one timer per session serves both of its periodic
// duties, the heartbeat it owes its client (every -heartbeat) and the
// silence check it owes the server (-timeout after the client was last
// heard from), and before the lease the handshake timeout.
//
//  1. The timer is armed for the earlier of the next heartbeat and the
//     moment the client would have been silent for -timeout. A client that
//     keeps talking moves that moment on, so an idle session's timer fires
//     once per heartbeat: one actor message per heartbeat period, where a
//     second timer for the silence check cost one more every -timeout.
//  2. Every deadline is rounded up to a grid of absolute times (timerGrid)
//     shared by all sessions, so the timers of many sessions fall due
//     together and the runtime serves them in one wake-up. Spread out,
//     every heartbeat cost the process a wake-up of its own (an idle
//     thread, the netpoller, sysmon) that cost more than the heartbeat's
//     write; bunched, those are paid once per grid step. A deadline is
//     late by less than one step, never early.
//  3. Heartbeats are due at fixed steps of -heartbeat from the lease, not
//     -heartbeat after the last one was sent, so the rounding does not add
//     up; after a stall the next one is -heartbeat after the late one
//     rather than a burst of catch-up beats.

import (
	"log/slog"
	"time"

	"github.com/asynkron/protoactor-go/actor"
)

// sessionTick is the message of a session's timer.
type sessionTick struct{}

func (*sessionTick) IgnoreDeadLetterLogging() {}

var tickSession = &sessionTick{}

// maxTimerGrid bounds the grid step: the heartbeats of one step are
// written in one burst (at 100,000 sessions and 20 s heartbeats, 500 of
// them, a few milliseconds of work), and a silent client is dropped at
// most this much after -timeout.
const maxTimerGrid = 100 * time.Millisecond

// timerGrid is the grid step of the session timers for a heartbeat
// interval: a small fraction of it (the heartbeat's jitter), within
// [1 ms, maxTimerGrid].
func timerGrid(heartbeat time.Duration) time.Duration {
	return min(max(heartbeat/64, time.Millisecond), maxTimerGrid)
}

// onGrid rounds t up to a multiple of grid.
func onGrid(t, grid time.Duration) time.Duration {
	if r := t % grid; r != 0 {
		return t + grid - r
	}
	return t
}

// monoNow is the current time on heardClock's scale (since monoEpoch).
func monoNow() time.Duration { return time.Since(monoEpoch) }

// armTick sets the session's timer for due (on heardClock's scale),
// rounded up to the grid.
func (s *Session) armTick(ctx actor.Context, due time.Duration) {
	d := onGrid(due, timerGrid(s.cfg.Heartbeat)) - monoNow()
	if s.tick == nil {
		s.tick = sendAfter(ctx.ActorSystem(), ctx.Self(), d, tickSession)
		return
	}
	s.tick.Reset(d)
}

// startBeats begins the heartbeats once the session has its lease (the
// 101 just queued is the first frame; the first 104 follows -heartbeat
// later).
func (s *Session) startBeats(ctx actor.Context) {
	s.nextBeat = monoNow() + s.cfg.Heartbeat
	s.armTick(ctx, min(s.nextBeat, s.heard.at()+s.cfg.Timeout))
}

// onTick is the timer's work: the handshake timeout before the lease,
// then the silence check and the heartbeat, and the timer armed again.
func (s *Session) onTick(ctx actor.Context) {
	if s.closed {
		return
	}
	if s.state != stateAssigned {
		msg := "client sent no address request in time; closing"
		if s.state == stateRequesting {
			msg = "no address for the client in time (the pool did not answer its request); closing"
		}
		s.cfg.Logger.Info(msg, slog.String("client", s.client.String()))
		s.stop(ctx, CloseHandshakeTimeout)
		return
	}
	now, heard := monoNow(), s.heard.at()
	p := planTick(now, heard, s.nextBeat, s.cfg.Heartbeat, s.cfg.Timeout)
	if p.silent {
		s.cfg.Logger.Info("client silent; closing", slog.String("client", s.client.String()), slog.Duration("silent", now-heard))
		s.stop(ctx, CloseTimeout)
		return
	}
	if p.beat {
		s.out.controlNow(controlHeartbeat, heartbeatFrame)
	}
	s.nextBeat = p.nextBeat
	s.armTick(ctx, p.due)
}

// tickPlan is what an assigned session's timer has to do at a tick.
type tickPlan struct {
	silent   bool          // the client has been quiet for the timeout: close
	beat     bool          // a heartbeat is due: send it
	nextBeat time.Duration // when the heartbeat after that is due
	due      time.Duration // when the timer must fire next (before rounding)
}

// planTick works out a tick at now for a client last heard at heard, with
// the next heartbeat due at nextBeat (all on heardClock's scale).
func planTick(now, heard, nextBeat, heartbeat, timeout time.Duration) tickPlan {
	if now-heard >= timeout {
		return tickPlan{silent: true}
	}
	p := tickPlan{nextBeat: nextBeat}
	if now >= nextBeat {
		p.beat = true
		if p.nextBeat += heartbeat; p.nextBeat <= now {
			p.nextBeat = now + heartbeat // late by a period or more: no catch-up burst
		}
	}
	p.due = min(p.nextBeat, heard+timeout)
	return p
}
