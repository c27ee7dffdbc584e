package actors

import (
	"math"
	"time"
)

// The per-session rate limit (-rate-limit, or a reservation's rate): one
// token bucket per direction, counting IPv4 packet bytes (the 102/103
// framing is not counted: it is the same for every packet and the client
// cannot choose it).
//
//   - Uplink (client to server) is paced: the session's reader takes tokens
//     for a batch before handing it on and, when the bucket is short, waits
//     until it is not. Meanwhile it reads nothing, the connection's receive
//     buffer fills and TCP slows the client down; nothing is dropped.
//   - Downlink (to the client) is policed: the session actor cannot wait
//     (the Router must never stall on one client), so packets beyond the
//     bucket are dropped (drops_total{reason="rate_limit"}) and the
//     client's TCP backs off as it would behind any policer.
//
// Over any interval of T seconds a bucket lets through at most
// depth + rate×T bytes, which is the bound the tests check.

// Bucket depth. bucketBurstTime of the rate lets a TCP flow keep the
// rate over paths of up to about that RTT, instead of being cut at every
// window. bucketMinDepth, two 64 KiB TSO bursts, is the floor for low
// rates: with TUN offloads one read from the kernel is a GSO packet of up
// to 64 KiB that the TUN reader splits into some 45 segments arriving in
// one batch, and the bucket must be able to pass such a burst whole (and
// the next one behind it), or a low limit would drop the tail of every
// burst and TCP would never reach even that limit. The floor dominates up
// to about 21 Mbit/s (2×64 KiB per 50 ms).
const (
	bucketBurstTime = 50 * time.Millisecond
	bucketMinDepth  = 2 * 64 << 10
)

// tokenBucket meters bytes at a rate with a burst of depth bytes. It is a
// plain value owned by one goroutine (the reader, or the session actor);
// the caller passes the time, so tests drive it with a fake clock and the
// data path reads the clock once per batch. The zero value is unlimited.
type tokenBucket struct {
	rate   float64 // bytes per second; 0 means unlimited
	depth  float64 // bytes
	tokens float64 // bytes available as of last; below zero after pacing a batch larger than what was there
	last   time.Time
}

// newTokenBucket returns a full bucket for bits per second (0: unlimited).
func newTokenBucket(bits uint64, now time.Time) tokenBucket {
	if bits == 0 {
		return tokenBucket{}
	}
	rate := float64(bits) / 8
	depth := bucketDepth(rate)
	return tokenBucket{rate: rate, depth: depth, tokens: depth, last: now}
}

// bucketDepth is the burst for a rate in bytes per second (see
// bucketBurstTime).
func bucketDepth(rate float64) float64 {
	return math.Max(rate*bucketBurstTime.Seconds(), bucketMinDepth)
}

// limited reports whether the bucket limits at all.
func (b *tokenBucket) limited() bool { return b.rate > 0 }

// refill adds the tokens earned since the last call, up to the depth. A
// clock that went backwards earns nothing.
func (b *tokenBucket) refill(now time.Time) {
	if b.rate == 0 {
		return
	}
	if d := now.Sub(b.last); d > 0 {
		b.tokens = math.Min(b.depth, b.tokens+d.Seconds()*b.rate)
		b.last = now
	}
}

// take takes n bytes' tokens if the bucket has them, as of the last
// refill, and reports whether it did; a packet it refuses costs nothing,
// so smaller ones behind it may still fit. The policer refills once per
// batch and takes per packet: reading the clock costs more than the rest.
func (b *tokenBucket) take(n int) bool {
	if b.rate == 0 {
		return true
	}
	if b.tokens < float64(n) {
		return false
	}
	b.tokens -= float64(n)
	return true
}

// refund gives back the tokens of n bytes that were taken but not sent
// (their batch found the client's queue full).
func (b *tokenBucket) refund(n int) {
	if b.rate > 0 {
		b.tokens = math.Min(b.depth, b.tokens+float64(n))
	}
}

// pace takes n bytes' tokens, going into debt if there are too few, and
// returns how long to wait before sending them: zero when the bucket had
// them, else until the debt is paid. Waiting that long before every send
// keeps what was sent by any time t within depth + rate×t, whatever the
// size of the batches.
func (b *tokenBucket) pace(n int, now time.Time) time.Duration {
	if b.rate == 0 {
		return 0
	}
	b.refill(now)
	b.tokens -= float64(n)
	if b.tokens >= 0 {
		return 0
	}
	return time.Duration(math.Ceil(-b.tokens / b.rate * float64(time.Second)))
}
