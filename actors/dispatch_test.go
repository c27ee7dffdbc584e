package actors

import (
	"sync"
	"testing"
)

// Every scheduled turn runs exactly once, whether a worker was waiting or
// not, and stop leaves no worker behind.
func TestWorkerDispatcherRunsEveryTurn(t *testing.T) {
	for _, tc := range []struct {
		name  string
		turns int
	}{
		{"one", 1},
		{"many", 1000},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := newWorkerDispatcher()
			var wg sync.WaitGroup
			ran := make([]int, tc.turns)
			for i := range tc.turns {
				wg.Add(1)
				d.Schedule(func() { ran[i]++; wg.Done() })
			}
			wg.Wait()
			d.stop()
			for i, n := range ran {
				if n != 1 {
					t.Fatalf("turn %d ran %d times, want 1", i, n)
				}
			}
		})
	}
}

// A turn that blocks (an actor waiting in its Stopped for its I/O
// goroutines) must not hold up the turns of other mailboxes.
func TestWorkerDispatcherBusyWorkerDoesNotBlockOthers(t *testing.T) {
	d := newWorkerDispatcher()
	defer d.stop()
	release, blocked := make(chan struct{}), make(chan struct{})
	d.Schedule(func() { close(blocked); <-release })
	<-blocked
	done := make(chan struct{})
	d.Schedule(func() { close(done) })
	<-done
	close(release)
}

// A turn scheduled after stop still runs (a message in flight at
// shutdown), and stop waited for the workers that existed.
func TestWorkerDispatcherAfterStop(t *testing.T) {
	d := newWorkerDispatcher()
	first := make(chan struct{})
	d.Schedule(func() { close(first) })
	<-first
	d.stop()
	done := make(chan struct{})
	d.Schedule(func() { close(done) })
	<-done
	d.wg.Wait() // the late worker exits at once: it sees quit closed
}
