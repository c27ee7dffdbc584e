package actors

// A Session's answer to a client packet larger than the TUN MTU, which is
// what a router does with a packet larger than its next hop's MTU (a
// client's TUN MTU may be larger than the server's):
//
//  1. DF set: the packet is dropped (too_big) and answered with an ICMP
//     "fragmentation needed" carrying the TUN MTU (RFC 1191), as a 103
//     through the data lane (one batch for all the errors about one batch
//     from the client), so the client's path MTU discovery lowers
//     its packets to fit instead of its TCP stalling. Not when RFC 1812
//     forbids an error (an ICMP error, a later fragment) nor above the
//     session's ICMP rate (icmpBucket): both only count the drop.
//  2. DF clear: the packet is fragmented (RFC 791) into packets that fit,
//     and those are forwarded. The fragments may outnumber the batch slots
//     the packet frees, so they travel in batches of their own, sent ahead
//     of the batch that came from the reader: that one, sent last, holds
//     the session's budget token, which comes back only once everything
//     ahead of it is written, so fragmenting cannot bypass the budget.

import (
	"log/slog"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/4over6d/4over6d/messages"
	"github.com/4over6d/4over6d/messages/wire"
)

// The ICMP rate per session: a burst of icmpBurst errors, refilled at
// icmpPerSecond. One error per destination is all path MTU discovery
// needs (the client caches the MTU for ten minutes), so the burst only
// has to cover a client opening a few connections at once, or one TCP
// sender's initial window (RFC 6928: ten segments) of which the first
// answer already suffices; a flow that lost out is answered when it
// retransmits, at least 200 ms later, by which time two tokens are back.
// Linux does not rate-limit "fragmentation needed" at all (icmp_ratemask
// exempts it, "don't limit PMTU discovery") but caps every ICMP error of a
// host at icmp_msgs_per_sec 1000 with a burst of 50; a session is one
// client, so a tenth of that is plenty, and it keeps a client that sends
// nothing but oversize packets from filling its own queue with errors.
const (
	icmpBurst     = 10
	icmpPerSecond = 10
)

// icmpBucket is a session's token bucket for the ICMP errors it sends. The
// session actor owns it; the zero value is full.
type icmpBucket struct {
	spent float64 // tokens below the burst, as of last
	last  time.Time
}

// allow reports whether an error may be sent at now, and takes its token.
func (b *icmpBucket) allow(now time.Time) bool {
	if !b.last.IsZero() {
		b.spent = max(0, b.spent-now.Sub(b.last).Seconds()*icmpPerSecond)
	}
	b.last = now
	if b.spent > icmpBurst-1 {
		return false
	}
	b.spent++
	return true
}

// fragNeeded drops a DF packet above the MTU and, where RFC 1812 and the
// rate allow, answers it.
func (s *Session) fragNeeded(pkt []byte) {
	var reply []byte
	answer := "frag_needed"
	switch {
	case !wire.ICMPErrorAllowed(pkt):
		answer = "none (RFC 1812)"
	case !s.icmp.allow(time.Now()):
		answer = "none (rate limit)"
		s.cfg.Metrics.ICMPRateLimited(ICMPFragNeeded)
	default:
		reply = wire.AppendFragNeeded(wire.GetPacketBuf(wire.FragNeededMaxLen)[:0], s.cfg.serverAddr, pkt, s.cfg.MTU)
	}
	s.drop(DropTooBig, pkt, slog.Int("size", len(pkt)), slog.Int("mtu", s.cfg.MTU), slog.String("icmp", answer))
	if reply == nil {
		return
	}
	if s.icmpOut == nil {
		s.icmpOut = messages.NewToClient()
	}
	s.icmpOut.Packets = append(s.icmpOut.Packets, reply)
}

// flushICMP queues the errors fragNeeded built for one batch from the
// client, as one batch of the data lane: a slot there each would let a
// burst of errors fill the lane's slots and crowd out the Router's data.
func (s *Session) flushICMP() {
	b := s.icmpOut
	if b == nil {
		return
	}
	s.icmpOut = nil
	n := len(b.Packets)
	if s.offerData(b, n, b.Bytes()) {
		s.cfg.Metrics.ICMPSent(ICMPFragNeeded, n)
	}
}

// fragment forwards a packet above the MTU without DF as fragments that
// fit. kept are the packets of the batch kept before it, in the batch's
// own slots: they go first, in a batch of their own, so that order is
// kept. It returns kept emptied.
func (s *Session) fragment(ctx actor.Context, kept [][]byte, pkt []byte) [][]byte {
	out := messages.NewFromClient()
	out.Packets = append(out.Packets, kept...)
	clear(kept)
	n := 0
	err := wire.Fragment(pkt, s.cfg.MTU, func(frag []byte) {
		if out.Full() {
			s.forward(ctx, out)
			out = messages.NewFromClient()
		}
		out.Packets = append(out.Packets, frag)
		n++
	})
	if err != nil {
		s.drop(DropTooBig, pkt, slog.String("why", "cannot fragment"), slog.Any("err", err))
	} else {
		wire.ReleasePacket(pkt)
		s.cfg.Metrics.Fragmented.Add(1)
		s.cfg.Metrics.FragmentsCreated.Add(uint64(n))
	}
	if len(out.Packets) == 0 {
		out.Release()
	} else {
		s.forward(ctx, out)
	}
	return kept[:0]
}

// forward sends a batch to the TUN actor and counts it.
func (s *Session) forward(ctx actor.Context, b *messages.FromClient) {
	n, bytes := len(b.Packets), b.Bytes()
	s.stats.countIn(n, bytes)
	s.cfg.Metrics.PacketsIn.Add(uint64(n))
	s.cfg.Metrics.BytesIn.Add(uint64(bytes))
	ctx.Send(s.cfg.tunFor(s.addr), b)
}
