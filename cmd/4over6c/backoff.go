package main

import (
	"math/rand/v2"
	"time"
)

// Reconnect pacing: quick enough that a restarted server sees its clients
// back within a second or two, slow enough that a dead server is not
// hammered, and jittered so that the clients of a restarted server do not
// all reconnect in the same instant.
const (
	backoffMin    = 250 * time.Millisecond
	backoffMax    = 10 * time.Second
	backoffJitter = 0.2
	// stableSession is how long a session must last for the next failure
	// to start again from backoffMin rather than continue the sequence.
	stableSession = 10 * time.Second
)

// backoff produces capped exponential waits with jitter: min, 2*min, ...
// up to max, each varied by ±jitter and never above max. It is used by the
// reconnect loop only, so it needs no locking.
type backoff struct {
	min, max time.Duration
	jitter   float64
	// random returns a number in [0, 1); a field so tests can pin it.
	random func() float64
	next   time.Duration
}

func newBackoff() *backoff {
	return &backoff{min: backoffMin, max: backoffMax, jitter: backoffJitter, random: rand.Float64}
}

// Next returns how long to wait before the next attempt and doubles the
// base for the one after.
func (b *backoff) Next() time.Duration {
	base := max(b.next, b.min)
	b.next = min(2*base, b.max)
	factor := 1 + b.jitter*(2*b.random()-1)
	return min(time.Duration(float64(base)*factor), b.max)
}

// Reset starts the sequence over, after a session that lasted.
func (b *backoff) Reset() {
	b.next = 0
}
