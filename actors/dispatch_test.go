package actors

import (
	"sync"
	"testing"
	"time"
)

// stopOrFail stops d and fails t if a worker is left.
func stopOrFail(t *testing.T, d *workerDispatcher) {
	t.Helper()
	if err := d.stop(10 * time.Second); err != nil {
		t.Fatalf("stop: %v", err)
	}
	if n := d.live.Load(); n != 0 {
		t.Fatalf("%d workers left after stop", n)
	}
}

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
			stopOrFail(t, d)
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
	defer stopOrFail(t, d)
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
	stopOrFail(t, d)
	done := make(chan struct{})
	d.Schedule(func() { close(done) })
	<-done
	for d.live.Load() > 0 { // the late worker exits at once: it sees quit closed
		select {
		case <-d.exited:
		case <-time.After(10 * time.Second):
			t.Fatalf("the late worker did not exit")
		}
	}
}

// A worker stuck in a turn (a wedged actor) makes stop give up at its
// limit with an error instead of hanging Close; once the turn ends the
// worker exits.
func TestWorkerDispatcherStopGivesUpOnAStuckTurn(t *testing.T) {
	d := newWorkerDispatcher()
	release, blocked := make(chan struct{}), make(chan struct{})
	d.Schedule(func() { close(blocked); <-release })
	<-blocked
	if err := d.stop(10 * time.Millisecond); err == nil {
		t.Fatal("stop returned nil with a turn still running")
	}
	close(release)
	for d.live.Load() > 0 {
		select {
		case <-d.exited:
		case <-time.After(10 * time.Second):
			t.Fatalf("the stuck worker did not exit after its turn ended")
		}
	}
}

// Turns scheduled while stop waits (live actors of a server being closed)
// all run, and stop still returns once they are done: no WaitGroup misuse
// for the race detector to find.
func TestWorkerDispatcherScheduleDuringStop(t *testing.T) {
	d := newWorkerDispatcher()
	var wg sync.WaitGroup
	start := make(chan struct{})
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			for range 100 {
				ran := make(chan struct{})
				d.Schedule(func() { close(ran) })
				<-ran
			}
		}()
	}
	close(start)
	err := d.stop(10 * time.Second)
	wg.Wait()
	if err != nil {
		t.Fatalf("stop: %v", err)
	}
}
