package actors

import (
	"errors"
	"io"
	"log/slog"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// fakeClock is the Supervisor's clock in ban tests: it moves only when the
// test says, so a ban's expiry needs no waiting.
type fakeClock struct{ ns atomic.Int64 }

func newFakeClock() *fakeClock {
	c := &fakeClock{}
	c.ns.Store(t0.UnixNano())
	return c
}

func (c *fakeClock) now() time.Time          { return time.Unix(0, c.ns.Load()) }
func (c *fakeClock) advance(d time.Duration) { c.ns.Add(int64(d)) }

// expectRefused checks that the server closed c before any frame (no
// 101, no heartbeat): the connection never became a session.
func (c *client) expectRefused() {
	c.t.Helper()
	f, err := c.tryNext(wait)
	switch {
	case errors.Is(err, errNoFrame):
		c.t.Fatal("connection not closed by the server in time")
	case err == nil:
		c.t.Fatalf("refused connection got a frame of type %d", f.Type)
	case !errors.Is(err, io.EOF):
		c.t.Fatalf("unexpected read result %v", err)
	}
}

// A kick closes exactly the session holding the address, counted as
// kicked, and answers once it has ended: the address is free again (in a
// full pool the next client gets it), the others are untouched, and a
// second kick finds nobody.
func TestKickClosesThatSessionOnly(t *testing.T) {
	h := newHarness(t, func(c *Config) {
		c.Pool = netip.MustParsePrefix("192.0.2.0/29") // 5 client addresses
		c.Grace = time.Nanosecond
	})
	clients := make([]*client, 5)
	for i := range clients {
		clients[i] = h.connect()
	}
	victim := clients[2]
	res, err := h.srv.Kick(victim.addr, 0)
	if err != nil {
		t.Fatalf("Kick(%v): %v", victim.addr, err)
	}
	if res.Client.String() != victim.conn.LocalAddr().String() || !res.BannedUntil.IsZero() {
		t.Fatalf("Kick = %+v, want client %v and no ban", res, victim.conn.LocalAddr())
	}
	// Kick answers after the session ended: its end is counted and it
	// is gone from the list.
	if n := h.srv.Metrics().ClosedBy(CloseKicked); n != 1 {
		t.Fatalf("sessions closed as kicked when Kick returned = %d, want 1", n)
	}
	sessions, err := h.srv.Sessions()
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range sessions {
		if s.Addr == victim.addr {
			t.Fatalf("kicked session still listed: %+v", s)
		}
	}
	victim.expectClosed(wait)
	if n := h.srv.Metrics().ClosedBy(CloseKicked); n != 1 {
		t.Fatalf("sessions closed as kicked = %d, want 1", n)
	}
	eventually(t, wait, "the kicked lease to be released", func() bool { return h.leaseCount() == 4 })
	if got := h.connect().addr; got != victim.addr {
		t.Fatalf("next client got %v, want the kicked %v", got, victim.addr)
	}
	for i, c := range clients {
		if c != victim {
			h.awaitUplink(c, uint16(i))
		}
	}
	if n := h.srv.Metrics().SessionsClosed.Load(); n != 1 {
		t.Fatalf("sessions closed = %d, want only the kicked one", n)
	}
	for _, addr := range []string{"192.0.2.250", "192.0.2.1", "2001:db8::1"} {
		if _, err := h.srv.Kick(netip.MustParseAddr(addr), 0); !errors.Is(err, ErrNoSession) {
			t.Errorf("Kick(%s) = %v, want ErrNoSession", addr, err)
		}
	}
	if _, err := h.srv.Kick(victim.addr, -time.Second); err == nil || errors.Is(err, ErrNoSession) {
		t.Errorf("Kick with a negative ban = %v, want a plain error", err)
	}
	if n := h.srv.Metrics().ClosedBy(CloseKicked); n != 1 {
		t.Fatalf("failed kicks closed sessions: kicked = %d", n)
	}
}

// Kick returns only once the session has ended, so a caller that lists
// the sessions next (the console) never sees the kicked one. Repeated for
// several sessions: an answer sent before the end would lose the race to
// the check at least once.
func TestKickAnswersAfterTheSessionEnded(t *testing.T) {
	h := newHarness(t)
	const n = 8
	clients := make([]*client, n)
	for i := range clients {
		clients[i] = h.connect()
	}
	for i, c := range clients {
		if _, err := h.srv.Kick(c.addr, 0); err != nil {
			t.Fatal(err)
		}
		if got := h.srv.Metrics().ClosedBy(CloseKicked); got != uint64(i+1) {
			t.Fatalf("kick %d returned with %d sessions counted as kicked", i+1, got)
		}
		sessions, err := h.srv.Sessions()
		if err != nil {
			t.Fatal(err)
		}
		if len(sessions) != n-i-1 {
			t.Fatalf("kick %d returned with %d sessions listed, want %d", i+1, len(sessions), n-i-1)
		}
	}
}

// Two kicks of one session at once: one closes it, the other finds
// nobody; neither is left without an answer.
func TestConcurrentKicksOfOneSession(t *testing.T) {
	h := newHarness(t)
	c := h.connect()
	errs := make(chan error, 2)
	for range 2 {
		go func() {
			_, err := h.srv.Kick(c.addr, 0)
			errs <- err
		}()
	}
	var ok, none int
	for range 2 {
		switch err := <-errs; {
		case err == nil:
			ok++
		case errors.Is(err, ErrNoSession):
			none++
		default:
			t.Fatalf("Kick: %v", err)
		}
	}
	if ok != 1 || none != 1 {
		t.Fatalf("%d kicks succeeded and %d found nobody, want 1 and 1", ok, none)
	}
	if n := h.srv.Metrics().ClosedBy(CloseKicked); n != 1 {
		t.Fatalf("sessions closed as kicked = %d, want 1", n)
	}
}

// A kick with a ban refuses new connections from the client's source
// (here ::1, the only one a loopback harness has) until the ban ends;
// sessions that exist stay. The clock is the test's.
func TestKickWithBanRefusesSourceUntilItEnds(t *testing.T) {
	clock := newFakeClock()
	h := newHarness(t, func(c *Config) { c.now = clock.now })
	victim, other := h.connect(), h.connect()
	res, err := h.srv.Kick(victim.addr, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if want := clock.now().Add(time.Minute); !res.BannedUntil.Equal(want) {
		t.Fatalf("banned until %v, want %v", res.BannedUntil, want)
	}
	victim.expectClosed(wait)
	h.dial().expectRefused()
	if n := h.srv.Metrics().Refused(RefuseBanned); n != 1 {
		t.Fatalf("refused as banned = %d, want 1", n)
	}
	h.awaitUplink(other, 1) // a ban is for new connections only
	clock.advance(59 * time.Second)
	h.dial().expectRefused()
	// A second kick with a shorter ban does not shorten the first.
	if res, err := h.srv.Kick(other.addr, 100*time.Millisecond); err != nil || !res.BannedUntil.Equal(t0.Add(time.Minute)) {
		t.Fatalf("second kick = %+v, %v; want the ban kept until %v", res, err, t0.Add(time.Minute))
	}
	clock.advance(time.Second)
	h.connect() // the ban has ended
	if n := h.srv.Metrics().Refused(RefuseBanned); n != 2 {
		t.Fatalf("refused as banned = %d, want 2", n)
	}
}

// -allow decides before any session exists: ::1 is outside 2001:db8::/32
// and refused; with ::1 in the list it is served.
func TestAllowOnLoopback(t *testing.T) {
	tests := []struct {
		name    string
		allow   []string
		allowed bool
	}{
		{"everyone by default", nil, true},
		{"outside the list", []string{"2001:db8::/32"}, false},
		{"one of the list", []string{"2001:db8::/32", "::1/128"}, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, func(c *Config) {
				for _, p := range tc.allow {
					c.Allow = append(c.Allow, netip.MustParsePrefix(p))
				}
			})
			c := h.dial()
			if !tc.allowed {
				c.expectRefused()
				if n := h.srv.Metrics().Refused(RefuseNotAllowed); n != 1 {
					t.Fatalf("refused as not allowed = %d, want 1", n)
				}
				if n := h.srv.Metrics().SessionsOpened.Load(); n != 0 {
					t.Fatalf("%d sessions opened for a refused client", n)
				}
				return
			}
			c.handshake()
			if n := h.srv.Metrics().Refused(RefuseNotAllowed); n != 0 {
				t.Fatalf("refused as not allowed = %d, want 0", n)
			}
		})
	}
}

// Refusals are logged at most once per dropLogEvery and reason: the
// bound is 1 line plus one per full period the refusals took, as for the
// drop logs, so a slow machine cannot make a correct limiter fail.
func TestRefusalLogsAreRateLimited(t *testing.T) {
	logs := &lockedBuffer{}
	h := newHarness(t, func(c *Config) {
		c.Allow = []netip.Prefix{netip.MustParsePrefix("2001:db8::/32")}
		c.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	})
	const n = 20
	start := time.Now()
	for range n {
		h.dial().expectRefused()
	}
	took := time.Since(start)
	if got := h.srv.Metrics().Refused(RefuseNotAllowed); got != n {
		t.Fatalf("refused = %d, want %d", got, n)
	}
	most := 1 + int(took/dropLogEvery)
	if lines := strings.Count(logs.String(), "refusing connection"); lines < 1 || lines > most {
		t.Fatalf("%d refusal lines for %d refusals within %v, want 1 to %d", lines, n, took, most)
	}
	if !strings.Contains(logs.String(), "reason=not_allowed") {
		t.Fatalf("refusal line does not name the reason:\n%s", logs.String())
	}
}
