package actors

// A session's rate limit (see bucket.go for the buckets and their depth):
//
//  1. Uplink: before the reader hands a batch on, it takes the batch's
//     tokens and, when the bucket is short, waits on a timer (never a busy
//     loop). Waiting is allowed there: the reader is the session's own
//     blocking I/O goroutine, and while it waits it reads nothing, so TCP
//     flow control slows the client down. The wait ends early when the
//     session closes (done), so shutdown is never delayed by it. While
//     the reader waits, the client's own heartbeats sit unread behind the
//     data, so every aliveEvery it tells the actor that the client is
//     alive: the server's pacing must not look like the client's silence.
//  2. Downlink: the session actor polices each batch from the Router,
//     dropping (and counting) the packets beyond the bucket.
//
// The rate is -rate-limit (Config.RateLimit) from the start, replaced by
// the lease's Rate when the client's reservation has one.

import (
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/4over6d/4over6d/messages"
	"github.com/4over6d/4over6d/messages/wire"
)

// uplinkPacer is the reader's half of the rate limit. The reader owns it;
// rate is the one word it shares with its session actor, which stores the
// rate to pace by (the reader rebuilds its bucket when it changes).
type uplinkPacer struct {
	rate       *atomic.Uint64
	bits       uint64 // the rate bucket was made for
	bucket     tokenBucket
	timer      *time.Timer
	aliveEvery time.Duration
}

// aliveInterval is how often a waiting reader reports the client alive: a
// few times per silence timeout, at most once a second.
func aliveInterval(timeout time.Duration) time.Duration {
	return max(min(time.Second, timeout/4), time.Millisecond)
}

// pace waits until the uplink bucket has the tokens of b's bytes; false
// means the session is going away and b is not to be sent.
func (r *clientReader) pace(b *messages.Batch) bool {
	p := &r.pacer
	if bits := p.rate.Load(); bits != p.bits {
		p.bits, p.bucket = bits, newTokenBucket(bits, time.Now())
	}
	if !p.bucket.limited() {
		return true
	}
	for wait := p.bucket.pace(b.Bytes(), time.Now()); wait > 0; {
		step := min(wait, p.aliveEvery)
		if !r.sleep(step) {
			return false
		}
		if wait -= step; wait > 0 && !r.control(FrameTypeHeartbeat) {
			return false
		}
	}
	return true
}

// sleep waits for d or until the session closes, whichever comes first,
// and reports whether the session is still open.
func (r *clientReader) sleep(d time.Duration) bool {
	p := &r.pacer
	if p.timer == nil {
		p.timer = time.NewTimer(d)
	} else {
		p.timer.Reset(d)
	}
	select {
	case <-p.timer.C:
		return true
	case <-r.done:
		p.timer.Stop()
		return false
	}
}

// setRate limits the session to bits per second each way (0: no limit),
// with full buckets.
func (s *Session) setRate(bits uint64) {
	s.upRate.Store(bits)
	s.down = newTokenBucket(bits, time.Now())
}

// police drops the packets of b beyond the downlink bucket, keeping the
// order of the rest, and returns what is left (packets, bytes).
func (s *Session) police(b *messages.ToClient) (n, bytes int) {
	s.down.refill(time.Now())
	kept, dropped := b.Packets[:0], 0
	for _, pkt := range b.Packets {
		if !s.down.take(len(pkt)) {
			wire.ReleasePacket(pkt)
			dropped++
			continue
		}
		kept = append(kept, pkt)
		bytes += len(pkt)
	}
	clear(b.Packets[len(kept):])
	b.Packets = kept
	if dropped > 0 {
		s.cfg.Metrics.Drop(DropRateLimit, dropped)
		s.stats.Drops.Add(uint64(dropped))
		if suppressed, ok := s.dropLog.allow(); ok {
			s.cfg.Logger.Debug("dropped packets to the client beyond its rate limit", slog.String("client", s.client.String()),
				slog.Int("packets", dropped), slog.String("rate_limit", FormatRate(s.upRate.Load())), slog.Int("suppressed_before", suppressed))
		}
	}
	return len(kept), bytes
}
