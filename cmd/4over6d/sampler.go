package main

// The sampler turns the engine's byte counters into rates: once a second
// it takes Sessions() and keeps, per session, the rate over the last
// interval and a history of 5-second means (the last five minutes), for
// the API and the dashboard's sparklines.
//
// It samples only while someone looks: for watchFor after the last query
// (in the server, ten minutes: twice the history a dashboard shows). A
// server nobody watches then spends nothing on it; with 100,000 sessions
// the list it takes every second was most of an idle server's CPU and
// garbage. After a pause the first query finds no rates, and the next
// ones rates from the moment it came.
//
// Its data belongs to its one goroutine and is asked for by message (a
// request with a reply channel), like the engine's actors: no lock, and a
// handler never sees a half-updated sample. The price is that a handler
// may wait for the sample in progress, which is bounded by the engine's
// own query timeout, and never longer than the request lives.

import (
	"context"
	"log/slog"
	"net/netip"
	"time"

	"github.com/4over6d/4over6d/actors"
)

const (
	// sampleEvery is how often the sampler reads the counters.
	sampleEvery = time.Second
	// historyWindow is the span each history value is the mean rate over.
	historyWindow = 5 * time.Second
	// historyLen values of historyWindow are the last five minutes.
	historyLen = 60
	// samplerWatch is how long the server's sampler keeps sampling after
	// the last query.
	samplerWatch = 10 * time.Minute
)

// sessionKey tells sessions apart across samples: a reconnecting client
// may come back from the same address and port, but not at the same
// instant.
type sessionKey struct {
	client netip.AddrPort
	since  int64 // Since in Unix nanoseconds
}

func keyOf(s actors.SessionStatus) sessionKey {
	return sessionKey{client: s.Client, since: s.Since.UnixNano()}
}

// sessionRates is what the handlers get for one session, in bit/s: "in"
// from the client, "out" to it.
type sessionRates struct {
	in, out         uint64
	histIn, histOut []uint64 // oldest first
}

// track is the sampler's state for one session.
type track struct {
	gen             uint64 // the sample that last saw the session
	lastAt          time.Time
	lastIn, lastOut uint64
	winAt           time.Time // start of the history window being filled
	winIn, winOut   uint64    // the counters then
	rates           sessionRates
}

// ratesQuery asks the sampler for a copy of its rates.
type ratesQuery struct {
	reply chan map[sessionKey]sessionRates
}

// sampler owns the rates; run is its goroutine.
type sampler struct {
	sessions func() ([]actors.SessionStatus, error)
	now      func() time.Time
	tick     <-chan time.Time
	log      *slog.Logger
	queries  chan ratesQuery
	done     chan struct{}
	tracks   map[sessionKey]*track // only run touches it
	gen      uint64                // counts samples: a track not seen in this one is gone
	// watchFor is how long it samples after a query (0: always).
	watchFor  time.Duration
	lastQuery time.Time
}

// newSampler makes a sampler that reads sessions on every tick, timing
// the intervals with now (a fake clock in tests).
func newSampler(sessions func() ([]actors.SessionStatus, error), now func() time.Time, tick <-chan time.Time, log *slog.Logger) *sampler {
	return &sampler{sessions: sessions, now: now, tick: tick, log: log,
		queries: make(chan ratesQuery), done: make(chan struct{}), tracks: map[sessionKey]*track{}}
}

// run samples on every tick and answers queries until ctx ends.
func (s *sampler) run(ctx context.Context) {
	defer close(s.done)
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.tick:
			if s.watched() {
				s.sample()
			} else if len(s.tracks) > 0 {
				s.tracks = map[sessionKey]*track{}
			}
		case q := <-s.queries:
			s.lastQuery = s.now()
			q.reply <- s.snapshot()
		}
	}
}

// watched reports whether someone asked for rates within watchFor.
func (s *sampler) watched() bool {
	return s.watchFor == 0 || (!s.lastQuery.IsZero() && s.now().Sub(s.lastQuery) < s.watchFor)
}

// rates returns a copy of the current rates by session. It is empty when
// the sampler has stopped or ctx ends first: the sessions are then shown
// without rates rather than not at all.
func (s *sampler) rates(ctx context.Context) map[sessionKey]sessionRates {
	q := ratesQuery{reply: make(chan map[sessionKey]sessionRates, 1)}
	select {
	case s.queries <- q:
	case <-s.done:
		return nil
	case <-ctx.Done():
		return nil
	}
	select {
	case m := <-q.reply:
		return m
	case <-ctx.Done():
		return nil
	}
}

// sample reads the counters once and updates every session's rates;
// sessions that are gone are forgotten.
func (s *sampler) sample() {
	list, err := s.sessions()
	if err != nil {
		s.log.Debug("rate sampler: no session snapshot this time", slog.Any("err", err))
		return
	}
	now := s.now()
	s.gen++
	for _, st := range list {
		k := keyOf(st)
		tr := s.tracks[k]
		if tr == nil {
			s.tracks[k] = &track{gen: s.gen, lastAt: now, lastIn: st.BytesIn, lastOut: st.BytesOut,
				winAt: now, winIn: st.BytesIn, winOut: st.BytesOut}
			continue
		}
		tr.gen = s.gen
		tr.update(now, st.BytesIn, st.BytesOut)
	}
	for k, tr := range s.tracks {
		if tr.gen != s.gen {
			delete(s.tracks, k)
		}
	}
}

// update takes one new reading of a session's byte counters.
func (tr *track) update(now time.Time, in, out uint64) {
	if d := now.Sub(tr.lastAt); d > 0 {
		tr.rates.in, tr.rates.out = bitRate(tr.lastIn, in, d), bitRate(tr.lastOut, out, d)
		tr.lastAt, tr.lastIn, tr.lastOut = now, in, out
	}
	if d := now.Sub(tr.winAt); d >= historyWindow {
		tr.rates.histIn = appendHistory(tr.rates.histIn, bitRate(tr.winIn, in, d))
		tr.rates.histOut = appendHistory(tr.rates.histOut, bitRate(tr.winOut, out, d))
		tr.winAt, tr.winIn, tr.winOut = now, in, out
	}
}

// bitRate is the mean rate in bit/s of a byte counter going from before
// to after in d; a counter going backwards counts as no traffic.
func bitRate(before, after uint64, d time.Duration) uint64 {
	if after <= before || d <= 0 {
		return 0
	}
	return uint64(float64(after-before) * 8 / d.Seconds())
}

// zeroHistory backs the history of every session that has carried no
// traffic yet: most sessions of a big server are idle, and they share
// this array instead of a slice each, rebuilt every historyWindow. It is
// never written.
var zeroHistory [historyLen]uint64

// appendHistory adds v, keeping the last historyLen values. It makes a new
// slice, so copies handed out earlier never change; a history of zeros
// stays a slice of zeroHistory, which costs nothing.
func appendHistory(h []uint64, v uint64) []uint64 {
	if v == 0 && (len(h) == 0 || &h[0] == &zeroHistory[0]) {
		return zeroHistory[:min(len(h)+1, historyLen)]
	}
	if len(h) >= historyLen {
		h = h[len(h)-historyLen+1:]
	}
	return append(append(make([]uint64, 0, len(h)+1), h...), v)
}

// snapshot copies the rates for a query. The history slices are shared:
// appendHistory never writes into one it has handed out.
func (s *sampler) snapshot() map[sessionKey]sessionRates {
	m := make(map[sessionKey]sessionRates, len(s.tracks))
	for k, tr := range s.tracks {
		m[k] = tr.rates
	}
	return m
}
