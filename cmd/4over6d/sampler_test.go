package main

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/4over6d/4over6d/actors"
)

// fakeClock is a clock the test moves; the sampler reads it on its own
// goroutine.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) get() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// samplerRig runs a sampler on a fake engine, a fake clock and a tick
// channel the test drives.
type samplerRig struct {
	eng   *fakeEngine
	clock *fakeClock
	tick  chan time.Time
	s     *sampler
	stop  context.CancelFunc
}

func newSamplerRig(t *testing.T) *samplerRig { return newWatchingSamplerRig(t, 0) }

// newWatchingSamplerRig is newSamplerRig with the sampler's watchFor.
func newWatchingSamplerRig(t *testing.T, watchFor time.Duration) *samplerRig {
	r := &samplerRig{eng: &fakeEngine{}, clock: &fakeClock{now: t0}, tick: make(chan time.Time)}
	r.s = newSampler(r.eng.Sessions, r.clock.get, r.tick, slog.New(slog.NewTextHandler(io.Discard, nil)))
	r.s.watchFor = watchFor
	ctx, cancel := context.WithCancel(context.Background())
	r.stop = cancel
	go r.s.run(ctx)
	t.Cleanup(func() { cancel(); <-r.s.done })
	return r
}

// step moves the clock by d, lets the sampler read the sessions and
// returns its rates afterwards.
func (r *samplerRig) step(d time.Duration, sessions ...actors.SessionStatus) map[sessionKey]sessionRates {
	r.eng.setSessions(sessions...)
	r.clock.advance(d)
	r.tick <- time.Time{}
	return r.s.rates(context.Background())
}

func counters(c netip.AddrPort, in, out uint64) actors.SessionStatus {
	return actors.SessionStatus{Client: c, Addr: netip.MustParseAddr("192.0.2.2"), Since: t0, BytesIn: in, BytesOut: out}
}

func TestSamplerRateOfTheLastInterval(t *testing.T) {
	r := newSamplerRig(t)
	k := keyOf(counters(client1, 0, 0))
	tests := []struct {
		d               time.Duration
		in, out         uint64 // counters after d
		rateIn, rateOut uint64
	}{
		{0, 500, 0, 0, 0},                          // first sight: no interval yet
		{time.Second, 1500, 125, 8000, 1000},       // 1000 B in, 125 B out in 1 s
		{2 * time.Second, 2500, 125, 4000, 0},      // a late sample: over the 2 s it covers
		{time.Second, 2500, 125, 0, 0},             // idle
		{time.Second, 2000, 125, 0, 0},             // a counter going back is no traffic
		{500 * time.Millisecond, 2500, 0, 8000, 0}, // half a second
	}
	for i, tc := range tests {
		got := r.step(tc.d, counters(client1, tc.in, tc.out))[k]
		if got.in != tc.rateIn || got.out != tc.rateOut {
			t.Errorf("step %d: rate in %d out %d, want %d and %d", i, got.in, got.out, tc.rateIn, tc.rateOut)
		}
	}
}

func TestSamplerHistoryIsFiveSecondMeansOldestFirst(t *testing.T) {
	r := newSamplerRig(t)
	k := keyOf(counters(client1, 0, 0))
	var in uint64
	r.step(0, counters(client1, 0, 0))
	var got sessionRates
	// 70 windows of 5 one-second samples; window w carries w*1000 bytes
	// a second in, half of that out.
	for w := 1; w <= 70; w++ {
		for range 5 {
			in += uint64(w) * 1000
			got = r.step(time.Second, counters(client1, in, in/2))[k]
		}
		if want := min(w, historyLen); len(got.histIn) != want || len(got.histOut) != want {
			t.Fatalf("after %d windows: %d and %d history values, want %d", w, len(got.histIn), len(got.histOut), want)
		}
	}
	for i, v := range got.histIn {
		w := uint64(70 - historyLen + 1 + i)
		if v != w*8000 || got.histOut[i] != w*4000 {
			t.Fatalf("history[%d] = %d in, %d out; want %d and %d (oldest first)", i, v, got.histOut[i], w*8000, w*4000)
		}
	}
	// A copy handed out does not change under the next samples.
	before := slices.Clone(got.histIn)
	for range 5 {
		r.step(time.Second, counters(client1, in, in/2))
	}
	if !slices.Equal(before, got.histIn) {
		t.Fatal("a history handed out changed afterwards")
	}
}

func TestSamplerForgetsEndedSessions(t *testing.T) {
	r := newSamplerRig(t)
	a, b := counters(client1, 0, 0), counters(client2, 0, 0)
	r.step(0, a, b)
	got := r.step(time.Second, counters(client1, 1000, 0))
	if _, ok := got[keyOf(b)]; ok || len(got) != 1 {
		t.Fatalf("rates after %v ended: %v", client2, got)
	}
	// The same client and port back with a new session: a new track, no
	// rate from the old counters.
	again := counters(client1, 10, 0)
	again.Since = t0.Add(time.Minute)
	got = r.step(time.Second, again)
	if len(got) != 1 || got[keyOf(again)].in != 0 {
		t.Fatalf("rates after the reconnect: %v", got)
	}
}

// TestSamplerKeepsRatesWhenTheEngineFails checks that a failed snapshot
// changes nothing: the next good one measures over the whole gap.
func TestSamplerKeepsRatesWhenTheEngineFails(t *testing.T) {
	r := newSamplerRig(t)
	k := keyOf(counters(client1, 0, 0))
	r.step(0, counters(client1, 0, 0))
	r.step(time.Second, counters(client1, 1000, 0))
	r.eng.mu.Lock()
	r.eng.err = errors.New("future: timeout")
	r.eng.mu.Unlock()
	if got := r.step(time.Second)[k]; got.in != 8000 {
		t.Fatalf("rate after a failed snapshot %d, want the last one (8000)", got.in)
	}
	r.eng.mu.Lock()
	r.eng.err = nil
	r.eng.mu.Unlock()
	if got := r.step(time.Second, counters(client1, 3000, 0))[k]; got.in != 8000 {
		t.Fatalf("rate over the gap %d, want 2000 B in 2 s = 8000 bit/s", got.in)
	}
}

// TestSamplerStopsWithItsContext checks that stopping the admin endpoint
// leaves no goroutine behind, and that a handler asking afterwards gets an
// answer (no rates) instead of hanging.
func TestSamplerStopsWithItsContext(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	eng := &fakeEngine{}
	s := newSampler(eng.Sessions, time.Now, time.NewTicker(time.Millisecond).C, slog.New(slog.NewTextHandler(io.Discard, nil)))
	ctx, cancel := context.WithCancel(context.Background())
	go s.run(ctx)
	s.rates(context.Background())
	cancel()
	select {
	case <-s.done:
	case <-time.After(10 * time.Second):
		t.Fatal("sampler still running 10 s after its context ended")
	}
	if m := s.rates(context.Background()); m != nil {
		t.Fatalf("rates from a stopped sampler: %v", m)
	}
}

// TestServeAdminStopsTheSampler checks the real wiring: serveAdmin's wait
// returns only once the HTTP server and the sampler are both gone.
func TestServeAdminStopsTheSampler(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	a := &admin{srv: &fakeEngine{}, pool: netip.MustParsePrefix("192.0.2.0/24")}
	ctx, cancel := context.WithCancel(context.Background())
	wait, err := serveAdmin(ctx, "127.0.0.1:0", a, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	a.rates.rates(context.Background())
	cancel()
	done := make(chan struct{})
	go func() { wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("serveAdmin did not stop within 10 s of its context ending")
	}
	select {
	case <-a.rates.done:
	default:
		t.Fatal("serveAdmin's wait returned while the sampler was still running")
	}
}

// An idle session's history costs no memory and no allocation, and
// traffic later gives it a slice of its own without writing the shared
// zeros.
func TestHistoryOfAnIdleSessionSharesTheZeros(t *testing.T) {
	var h []uint64
	if allocs := testing.AllocsPerRun(100, func() { h = appendHistory(h, 0) }); allocs != 0 {
		t.Fatalf("appending a zero to a zero history allocated %.0f times", allocs)
	}
	if len(h) != historyLen {
		t.Fatalf("history of %d values, want %d", len(h), historyLen)
	}
	busy := appendHistory(h, 42)
	if len(busy) != historyLen || busy[historyLen-1] != 42 || busy[0] != 0 {
		t.Fatalf("history after traffic = %v", busy)
	}
	busy = appendHistory(busy, 0)
	for i, v := range zeroHistory {
		if v != 0 {
			t.Fatalf("zeroHistory[%d] = %d after traffic", i, v)
		}
	}
	if busy[historyLen-2] != 42 || busy[historyLen-1] != 0 {
		t.Fatalf("a zero after traffic: history ends %v", busy[historyLen-2:])
	}
}

// With watchFor, the sampler samples only after a query and stops (and
// forgets) once nobody has asked for that long.
func TestSamplerSamplesOnlyWhileWatched(t *testing.T) {
	const watch = 10 * time.Second
	r := newWatchingSamplerRig(t, watch)
	k := keyOf(counters(client1, 0, 0))
	if got := r.step(time.Second, counters(client1, 0, 0)); len(got) != 0 {
		t.Fatalf("rates before anyone asked: %v", got)
	}
	if _, ok := r.step(time.Second, counters(client1, 0, 0))[k]; !ok {
		t.Fatal("no track after the first query")
	}
	if got := r.step(time.Second, counters(client1, 1000, 0))[k]; got.in != 8000 {
		t.Fatalf("rate in %d, want 8000", got.in)
	}
	r.clock.advance(watch)
	r.tick <- time.Time{} // nobody asked for watch: the sampler stops
	if got := r.s.rates(context.Background()); len(got) != 0 {
		t.Fatalf("rates kept after nobody watched for %v: %v", watch, got)
	}
	if _, ok := r.step(time.Second, counters(client1, 2000, 0))[k]; !ok {
		t.Fatal("no track once watched again")
	}
}
