package actors

import (
	"math/rand/v2"
	"net/netip"
	"strconv"
	"testing"
	"time"
)

// BenchmarkSupervisorStatus is the session list the dashboard's sampler
// takes every second, at 100,000 sessions admitted in random order.
func BenchmarkSupervisorStatus(b *testing.B) {
	s := &Supervisor{sessions: map[string]*sessionEntry{}}
	t0 := time.Now()
	for i := range 100_000 {
		st := newSessionStats(netip.AddrPort{}, t0.Add(time.Duration(rand.IntN(1<<30))))
		s.sessions[strconv.Itoa(i)] = &sessionEntry{stats: st}
	}
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if got := s.status(); len(got) != len(s.sessions) {
			b.Fatalf("%d sessions listed, want %d", len(got), len(s.sessions))
		}
	}
}
