package actors

import (
	"math/rand/v2"
	"testing"
	"time"
)

var bucketEpoch = time.Unix(1e9, 0)

// police is what the session does per packet, with the refill per packet.
func police(b *tokenBucket, n int, now time.Time) bool {
	b.refill(now)
	return b.take(n)
}

func TestBucketDepth(t *testing.T) {
	tests := []struct {
		bits uint64
		want float64 // bytes
	}{
		{500_000, bucketMinDepth},          // 3 KiB per 50 ms: the TSO floor
		{8_000_000, bucketMinDepth},        // 50 KB per 50 ms
		{20_000_000, bucketMinDepth},       // 125 KB per 50 ms, just below 128 KiB
		{100_000_000, 625_000},             // 50 ms of the rate
		{1_000_000_000, 6_250_000},         // 50 ms of the rate
		{MaxRate, MaxRate / 8 * 50 / 1000}, // no overflow at the top
	}
	for _, tc := range tests {
		b := newTokenBucket(tc.bits, bucketEpoch)
		if b.depth != tc.want || b.tokens != tc.want {
			t.Errorf("%s: depth %v, tokens %v; want both %v", FormatRate(tc.bits), b.depth, b.tokens, tc.want)
		}
	}
}

// TestBucketPolice drives a 1 Mbit/s bucket (125000 bytes a second,
// depth 131072) through steps on a fake clock.
func TestBucketPolice(t *testing.T) {
	type step struct {
		at      time.Duration // since the bucket was made
		size    int           // bytes per packet
		tries   int
		allowed int
		why     string
	}
	tests := []struct {
		name  string
		steps []step
	}{
		{"a full bucket passes its depth", []step{{0, 1024, 200, 128, "128 KiB of 1 KiB packets"}}},
		{"refill at the rate", []step{
			{0, 131072, 1, 1, "the whole depth at once"},
			{0, 1, 1, 0, "empty"},
			{100 * time.Millisecond, 1250, 11, 10, "12500 bytes back after 100 ms"},
			{time.Second, 125000, 2, 0, "112500 back, short of one 125000-byte packet"},
			{1100 * time.Millisecond, 125000, 2, 1, "one second of the rate"},
		}},
		{"a refused packet costs nothing", []step{
			{0, 131000, 1, 1, "72 bytes left"},
			{0, 1500, 3, 0, "too large"},
			{0, 72, 1, 1, "the small one still fits"},
		}},
		{"no more than the depth saved", []step{
			{0, 1, 1, 1, "first"},
			{time.Hour, 65536, 4, 2, "after an hour, still one depth"},
		}},
		{"a clock going back earns nothing", []step{
			{time.Second, 131072, 1, 1, "drain"},
			{0, 1, 1, 0, "earlier than the last packet"},
			{time.Second, 1, 1, 0, "back at the last time"},
		}},
		{"steady rate passes", func() []step {
			s := []step{{0, 131072, 1, 1, "drain the burst"}}
			for i := range 100 {
				s = append(s, step{time.Duration(i+1) * 13 * time.Millisecond, 1500, 1, 1, "1500 bytes per 13 ms (1625 earned)"})
			}
			return s
		}()},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b := newTokenBucket(1_000_000, bucketEpoch)
			for _, s := range tc.steps {
				got := 0
				for range s.tries {
					if police(&b, s.size, bucketEpoch.Add(s.at)) {
						got++
					}
				}
				if got != s.allowed {
					t.Fatalf("at %v (%s): %d of %d allowed, want %d", s.at, s.why, got, s.tries, s.allowed)
				}
			}
		})
	}
}

func TestBucketPace(t *testing.T) {
	type step struct {
		at   time.Duration
		size int
		wait time.Duration
		why  string
	}
	tests := []struct {
		name  string
		steps []step
	}{
		{"within the depth no wait", []step{{0, 65536, 0, "half"}, {0, 65536, 0, "the other half"}}},
		{"debt is waited off", []step{
			{0, 131072, 0, "the depth"},
			{0, 125000, time.Second, "one second of the rate"},
			{time.Second, 12500, 100 * time.Millisecond, "on time: 100 ms more"},
		}},
		{"a batch larger than the depth", []step{
			{0, 131072 + 250000, 2 * time.Second, "two seconds of debt"},
			{3 * time.Second, 125000, 0, "a second after the debt was paid"},
		}},
		{"late sender earns its wait", []step{
			{0, 131072 + 125000, time.Second, "a second of debt"},
			{500 * time.Millisecond, 0, 500 * time.Millisecond, "half of it waited"},
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b := newTokenBucket(1_000_000, bucketEpoch)
			for _, s := range tc.steps {
				if got := b.pace(s.size, bucketEpoch.Add(s.at)); got != s.wait {
					t.Fatalf("at %v (%s): wait %v, want %v", s.at, s.why, got, s.wait)
				}
			}
		})
	}
}

// A sender that always waits what pace says never has more than depth +
// rate×t bytes sent by time t, whatever its batch sizes: the bound the
// end-to-end tests rely on.
func TestBucketPaceBound(t *testing.T) {
	const bits = 8_000_000
	b := newTokenBucket(bits, bucketEpoch)
	rng := rand.New(rand.NewPCG(1, 2))
	now, sent := bucketEpoch, 0.0
	for range 100_000 {
		n := 1 + rng.IntN(64*1500)
		now = now.Add(b.pace(n, now))
		sent += float64(n)
		if bound := b.depth + now.Sub(bucketEpoch).Seconds()*bits/8; sent > bound+1e-6*bound {
			t.Fatalf("%.0f bytes sent by %v, above the bound %.0f", sent, now.Sub(bucketEpoch), bound)
		}
		now = now.Add(time.Duration(rng.IntN(int(time.Millisecond))))
	}
}

func TestBucketUnlimited(t *testing.T) {
	var zero tokenBucket
	made := newTokenBucket(0, bucketEpoch)
	for _, b := range []*tokenBucket{&zero, &made} {
		if b.limited() || !police(b, 1<<30, bucketEpoch) || b.pace(1<<30, bucketEpoch) != 0 {
			t.Fatalf("an unlimited bucket limited: %+v", b)
		}
		b.refund(100)
		if b.limited() {
			t.Fatal("a refund made an unlimited bucket limited")
		}
	}
}

func TestBucketRefund(t *testing.T) {
	b := newTokenBucket(1_000_000, bucketEpoch)
	if !police(&b, 131072, bucketEpoch) || police(&b, 1500, bucketEpoch) {
		t.Fatal("the depth should pass and nothing more")
	}
	b.refund(1500)
	if !police(&b, 1500, bucketEpoch) {
		t.Fatal("refunded tokens were not there")
	}
	b.refund(1 << 30)
	if b.tokens != b.depth {
		t.Fatalf("a refund filled the bucket to %v, beyond its depth %v", b.tokens, b.depth)
	}
}

// BenchmarkBucketPolice is the downlink policer's cost as the session
// pays it: per batch of 32 packets, one clock reading and refill, then a
// take per packet. It reports ns per packet: the clock reading dominates
// (~100 ns on this project's VMs), which comes to a few ns per packet,
// against the microseconds a packet costs on the rest of the path.
func BenchmarkBucketPolice(b *testing.B) {
	bucket := newTokenBucket(MaxRate, time.Now())
	b.ReportAllocs()
	for b.Loop() {
		bucket.refill(time.Now())
		for range benchBatch {
			bucket.take(1400)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*benchBatch), "ns/packet")
}

// BenchmarkBucketPace is the uplink pacer's cost per batch of 32 packets
// when no wait is due (a wait is the point of pacing), with its clock
// reading; it also reports ns per packet.
func BenchmarkBucketPace(b *testing.B) {
	bucket := newTokenBucket(MaxRate, time.Now())
	b.ReportAllocs()
	for b.Loop() {
		bucket.pace(benchBatch*1400, time.Now())
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*benchBatch), "ns/packet")
}
