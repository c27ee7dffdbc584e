package actors

import (
	"net/netip"
	"strconv"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
)

// supervisorWith is a Supervisor that has admitted n sessions, a second
// apart, without actors: enough for its session list.
func supervisorWith(n int) *Supervisor {
	s := &Supervisor{cfg: &shared{Config: Config{Metrics: &Metrics{}}}, sessions: map[string]*sessionEntry{}, perSource: map[netip.Prefix]int{}}
	t0 := time.Now()
	for i := range n {
		e := &sessionEntry{pid: &actor.PID{Id: strconv.Itoa(i)}, stats: newSessionStats(netip.AddrPort{}, t0.Add(time.Duration(i)*time.Second))}
		s.sessions[e.pid.Id] = e
		s.order = append(s.order, e)
	}
	return s
}

// The session list is oldest first and forgets ended sessions, however
// many end between two lists.
func TestSessionListIsOldestFirst(t *testing.T) {
	for _, tc := range []struct {
		name  string
		n     int
		ended []int
	}{
		{"none ended", 5, nil},
		{"one ended", 5, []int{2}},
		{"most ended (compacted on the way)", 10, []int{0, 1, 2, 3, 4, 5, 7, 9}},
		{"all ended", 3, []int{0, 1, 2}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := supervisorWith(tc.n)
			for _, i := range tc.ended {
				s.onTerminated(nil, &actor.PID{Id: strconv.Itoa(i)})
			}
			got := s.status()
			if want := tc.n - len(tc.ended); len(got) != want {
				t.Fatalf("%d sessions listed, want %d", len(got), want)
			}
			for i := 1; i < len(got); i++ {
				if !got[i-1].Since.Before(got[i].Since) {
					t.Fatalf("session %d (since %v) listed before %d (since %v)", i-1, got[i-1].Since, i, got[i].Since)
				}
			}
			if len(s.order) != len(got) || s.gone != 0 {
				t.Fatalf("order keeps %d entries (%d gone) for %d sessions", len(s.order), s.gone, len(got))
			}
		})
	}
}

// BenchmarkSupervisorStatus is the session list the dashboard's sampler
// takes every second, at 100,000 sessions.
func BenchmarkSupervisorStatus(b *testing.B) {
	s := supervisorWith(100_000)
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if got := s.status(); len(got) != len(s.sessions) {
			b.Fatalf("%d sessions listed, want %d", len(got), len(s.sessions))
		}
	}
}
