package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/4over6d/4over6d/messages/wire"
)

// load runs one bounded load test: a setup phase that dials -n sessions
// (paced by -rate, at most -concurrency in flight, stopped after
// -setup-limit), a hold phase of -duration, then a close of everything.
type load struct {
	o        *options
	progress io.Writer

	mu        sync.Mutex
	sessions  []*session
	latencies []time.Duration
	failures  map[string]int // setup failures by reason
	lostBy    map[string]int // sessions lost while held, by reason
	firstDial time.Time
	lastSetup time.Time

	established, failed atomic.Int64
	lost                atomic.Int64
	closing             atomic.Bool
	hbSent, hbRecv      atomic.Uint64
	pktSent, bytesSent  atomic.Uint64
	dataRecv, dataBytes atomic.Uint64
	readers             sync.WaitGroup
}

// session is one held tunnel. Writes come from the heartbeat timer and the
// packet sender, so they are serialised by mu.
type session struct {
	l    *load
	idx  int
	conn net.Conn
	addr netip.Addr
	dec  *wire.Decoder
	mu   sync.Mutex
	hb   *time.Timer
}

func newLoad(o *options, progress io.Writer) *load {
	return &load{o: o, progress: progress, failures: make(map[string]int), lostBy: make(map[string]int)}
}

func (l *load) run(ctx context.Context) *loadReport {
	l.setupAll(ctx)
	setupEnd := time.Now()
	fmt.Fprintf(l.progress, "setup done: %d established, %d failed; holding for %v\n",
		l.established.Load(), l.failed.Load(), l.o.duration)

	holdEnd := setupEnd.Add(l.o.duration)
	holdCtx, cancelHold := context.WithDeadline(ctx, holdEnd)
	var senders sync.WaitGroup
	if l.o.packets > 0 {
		for _, s := range l.sessions {
			senders.Go(func() { s.sendPackets(holdCtx, holdEnd) })
		}
	}
	<-holdCtx.Done()
	held := time.Since(setupEnd)
	cancelHold()
	senders.Wait()

	// Let echoed packets still in flight arrive before the counts are read.
	if l.o.packets > 0 {
		sleepCtx(ctx, 500*time.Millisecond)
	}
	r := l.report(held)
	l.closeAll()
	return r
}

// setupAll dials the sessions and returns when every started setup has
// finished.
func (l *load) setupAll(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, l.o.setupLimit)
	defer cancel()
	sem := make(chan struct{}, l.o.concurrency)
	var wg sync.WaitGroup
	stopProgress := l.startProgress()
	defer stopProgress()
	start := time.Now()
	l.firstDial = start
	started := 0
	for i := range l.o.n {
		if l.o.rate > 0 {
			at := start.Add(time.Duration(float64(i) / l.o.rate * float64(time.Second)))
			if !sleepUntil(ctx, at) {
				break
			}
		}
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
		started++
		wg.Go(func() {
			defer func() { <-sem }()
			l.setupOne(ctx, i)
		})
	}
	wg.Wait()
	if missing := l.o.n - started; missing > 0 {
		l.fail("not started (setup limit or interrupted)", missing)
	}
}

func (l *load) startProgress() func() {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(time.Second)
		defer t.Stop()
		prev := int64(0)
		for {
			select {
			case <-done:
				return
			case <-t.C:
				e := l.established.Load()
				fmt.Fprintf(l.progress, "setup: %d/%d established (+%d/s), %d failed\n", e, l.o.n, e-prev, l.failed.Load())
				prev = e
			}
		}
	})
	return func() { close(done); wg.Wait() }
}

func (l *load) fail(reason string, n int) {
	l.failed.Add(int64(n))
	l.mu.Lock()
	l.failures[reason] += n
	l.mu.Unlock()
}

// setupOne dials one session, asks for an address and waits for the 101.
func (l *load) setupOne(ctx context.Context, i int) {
	t0 := time.Now()
	d := net.Dialer{Timeout: l.o.setupWait}
	if len(l.o.sources) > 0 {
		d.LocalAddr = &net.TCPAddr{IP: l.o.sources[i%len(l.o.sources)].AsSlice()}
	}
	conn, err := d.DialContext(ctx, "tcp", l.o.servers[i%len(l.o.servers)].String())
	if err != nil {
		l.fail(classify("dial", err), 1)
		return
	}
	s, err := l.handshake(conn, i, t0)
	if err != nil {
		_ = conn.Close()
		l.fail(classify("handshake", err), 1)
		return
	}
	lat := time.Since(t0)
	l.mu.Lock()
	l.sessions = append(l.sessions, s)
	l.latencies = append(l.latencies, lat)
	l.lastSetup = time.Now()
	l.mu.Unlock()
	l.established.Add(1)
	// Spread heartbeats over the interval so they do not all fire at once.
	first := time.Duration(rand.Int64N(int64(l.o.heartbeat))) + time.Millisecond
	s.mu.Lock()
	s.hb = time.AfterFunc(first, s.heartbeat)
	s.mu.Unlock()
	l.readers.Go(s.read)
}

func (l *load) handshake(conn net.Conn, i int, t0 time.Time) (*session, error) {
	if err := conn.SetDeadline(t0.Add(l.o.setupWait)); err != nil {
		return nil, err
	}
	if _, err := conn.Write(wire.AppendFrame(nil, wire.TypeIPRequest, nil)); err != nil {
		return nil, err
	}
	dec := wire.NewDecoder(conn)
	for {
		f, err := dec.Next()
		if err != nil {
			return nil, err
		}
		switch f.Type {
		case wire.TypeHeartbeat:
			l.hbRecv.Add(1)
			continue
		case wire.TypeIPReply:
		default:
			return nil, fmt.Errorf("unexpected frame type %d before 101", f.Type)
		}
		reply, err := wire.ParseIPReply(f.Payload)
		if err != nil {
			return nil, err
		}
		if err := conn.SetDeadline(time.Time{}); err != nil {
			return nil, err
		}
		return &session{l: l, idx: i, conn: conn, addr: reply.Addr, dec: dec}, nil
	}
}

// classify names a failure for the report without the addresses in it, so
// that identical failures add up.
func classify(stage string, err error) string {
	var ne net.Error
	switch {
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, os.ErrDeadlineExceeded),
		errors.As(err, &ne) && ne.Timeout():
		return stage + ": timeout"
	case errors.Is(err, context.Canceled):
		return stage + ": interrupted"
	case errors.Is(err, syscall.ECONNREFUSED):
		return stage + ": connection refused"
	case errors.Is(err, syscall.ECONNRESET):
		return stage + ": connection reset"
	case errors.Is(err, syscall.EADDRNOTAVAIL):
		return stage + ": address not available"
	case errors.Is(err, syscall.EMFILE), errors.Is(err, syscall.ENFILE):
		return stage + ": too many open files"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return stage + ": closed by server"
	case errors.Is(err, wire.ErrMalformedIPReply):
		return stage + ": malformed 101"
	}
	return stage + ": " + err.Error()
}

// controlWriteTimeout bounds a heartbeat write to a server that stopped
// reading.
const controlWriteTimeout = 10 * time.Second

func (s *session) write(b []byte, deadline time.Time) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.conn.SetWriteDeadline(deadline); err != nil {
		return err
	}
	_, err := s.conn.Write(b)
	return err
}

func (s *session) heartbeat() {
	if s.l.closing.Load() {
		return
	}
	if s.write(wire.Heartbeat, time.Now().Add(controlWriteTimeout)) == nil {
		s.l.hbSent.Add(1)
	}
	s.mu.Lock()
	s.hb.Reset(s.l.o.heartbeat)
	s.mu.Unlock()
}

// read counts what the server sends until the connection ends; an end that
// the load generator did not cause is a lost session.
func (s *session) read() {
	for {
		f, err := s.dec.Next()
		if err != nil {
			if !s.l.closing.Load() {
				s.l.lost.Add(1)
				s.l.mu.Lock()
				s.l.lostBy[classify("lost", err)]++
				s.l.mu.Unlock()
			}
			s.dec.Release()
			return
		}
		switch f.Type {
		case wire.TypeHeartbeat:
			s.l.hbRecv.Add(1)
		case wire.TypeDataReply:
			s.l.dataRecv.Add(1)
			s.l.dataBytes.Add(uint64(len(f.Payload)))
		}
	}
}

// sendPackets sends -packets UDP packets per second through the tunnel until
// ctx ends, several frames per write when the rate calls for it. Writes
// block while the server does not read (TCP flow control), so the rate
// achieved is what the server accepts; none blocks past end.
func (s *session) sendPackets(ctx context.Context, end time.Time) {
	sport := uint16(20000 + s.idx%40000)
	f := newUDPFrame(s.addr, sport, s.l.o.target, s.l.o.size)
	const tick = 10 * time.Millisecond
	t := time.NewTicker(tick)
	defer t.Stop()
	var out []byte
	credit := rand.Float64() // desynchronise the sessions
	last := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			credit += s.l.o.packets * now.Sub(last).Seconds()
			last = now
		}
		n := int(credit)
		credit -= float64(n)
		for n > 0 {
			out = out[:0]
			k := min(n, 64)
			for range k {
				out = append(out, f.next()...)
			}
			if err := s.write(out, end); err != nil {
				return
			}
			n -= k
			s.l.pktSent.Add(uint64(k))
			s.l.bytesSent.Add(uint64(k * s.l.o.size))
		}
	}
}

func (l *load) closeAll() {
	l.closing.Store(true)
	l.mu.Lock()
	sessions := slices.Clone(l.sessions)
	l.mu.Unlock()
	for _, s := range sessions {
		s.mu.Lock()
		if s.hb != nil {
			s.hb.Stop()
		}
		s.mu.Unlock()
		_ = s.conn.Close()
	}
	l.readers.Wait()
}

func sleepUntil(ctx context.Context, at time.Time) bool {
	d := time.Until(at)
	if d <= 0 {
		return ctx.Err() == nil
	}
	return sleepCtx(ctx, d)
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
