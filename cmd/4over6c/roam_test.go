package main

import (
	"context"
	"fmt"
	"net/netip"
	"testing"
	"time"
)

// fakePath stands in for the netlink watcher: a session's watch reports
// the path lost when the test says so.
type fakePath struct {
	lose    chan error
	watched chan [2]netip.Addr // local and remote of every watch
	ended   chan struct{}      // a watch returned
}

func newFakePath() *fakePath {
	return &fakePath{lose: make(chan error, 1), watched: make(chan [2]netip.Addr, 16), ended: make(chan struct{}, 16)}
}

func (f *fakePath) watch(ctx context.Context, local, remote netip.Addr) error {
	defer func() { f.ended <- struct{}{} }()
	f.watched <- [2]netip.Addr{local, remote}
	select {
	case err := <-f.lose:
		return err
	case <-ctx.Done():
		return nil
	}
}

func (f *fakePath) awaitWatch(t *testing.T) [2]netip.Addr {
	t.Helper()
	select {
	case w := <-f.watched:
		return w
	case <-time.After(waitLong):
		t.Fatal("the session did not watch its path")
		return [2]netip.Addr{}
	}
}

// TestPathLostReconnects: when the watcher says the path is gone, the
// session ends at once, long before the dead-link timeout; after a session
// that lasted the client reconnects without waiting, after a short one it
// takes the backoff step, so a network that keeps failing is not hammered.
func TestPathLostReconnects(t *testing.T) {
	tests := []struct {
		name        string
		stableAfter time.Duration
		retry       string
	}{
		{"after a stable session: at once", time.Nanosecond, "retry_in=0s"},
		{"after a short session: backoff", time.Hour, "retry_in=10ms"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			verifyNoLeaks(t)
			srv, path := newFakeServer(t), newFakePath()
			cfg := shortTimers()
			cfg.timeout = time.Hour // only the watcher may end the session
			rc := startClientOpts(t, cfg, clientOpts{servers: srv.ln.Addr().String(), watchPath: path.watch, stableAfter: tt.stableAfter})
			first := srv.accept(t)
			first.handshake(testReply)
			rc.net.awaitLease(t)
			if got, loop := path.awaitWatch(t), netip.IPv6Loopback(); got != [2]netip.Addr{loop, loop} {
				t.Errorf("watching %v, want the connection's local and remote address", got)
			}
			path.lose <- fmt.Errorf("%w: local address ::1 removed", errPathLost)
			first.awaitClose(waitLong)
			srv.accept(t).handshake(testReply)
			rc.net.awaitLease(t)
			if !rc.logs.hasLine("msg=disconnected", "network path to the server lost: local address ::1 removed", tt.retry) {
				t.Errorf("want the disconnect logged with the reason and %s:\n%s", tt.retry, rc.logs.String())
			}
		})
	}
}

// TestPathLostDuringHandshake: a path lost before the 101 ends the attempt
// with that reason, not with the read error the closed connection gives.
func TestPathLostDuringHandshake(t *testing.T) {
	verifyNoLeaks(t)
	srv, path := newFakeServer(t), newFakePath()
	rc := startClientOpts(t, shortTimers(), clientOpts{servers: srv.ln.Addr().String(), watchPath: path.watch})
	first := srv.accept(t)
	first.next(100)
	path.awaitWatch(t)
	path.lose <- fmt.Errorf("%w: no route to the server", errPathLost)
	first.awaitClose(waitLong)
	srv.accept(t).handshake(testReply)
	rc.net.awaitLease(t)
	if !rc.logs.hasLine(`msg="connect failed"`, "network path to the server lost: no route") {
		t.Errorf("want the failed attempt logged with the lost path:\n%s", rc.logs.String())
	}
}

// TestPathWatchEndsWithSession: every session's watch returns when the
// session ends, whatever ended it.
func TestPathWatchEndsWithSession(t *testing.T) {
	verifyNoLeaks(t)
	srv, path := newFakeServer(t), newFakePath()
	rc := startClientOpts(t, shortTimers(), clientOpts{servers: srv.ln.Addr().String(), watchPath: path.watch})
	for range 3 {
		p := srv.accept(t)
		p.handshake(testReply)
		rc.net.awaitLease(t)
		path.awaitWatch(t)
		_ = p.conn.Close()
		select {
		case <-path.ended:
		case <-time.After(waitLong):
			t.Fatal("the watch outlived its session")
		}
	}
}

// TestPathLostAgainAndAgainBacksOff: a network that loses the path as soon
// as each session starts gets the backoff's growing waits, not a spin.
func TestPathLostAgainAndAgainBacksOff(t *testing.T) {
	verifyNoLeaks(t)
	srv := newFakeServer(t)
	lostAtOnce := func(context.Context, netip.Addr, netip.Addr) error {
		return fmt.Errorf("%w: no route to the server", errPathLost)
	}
	rc := startClientOpts(t, shortTimers(), clientOpts{servers: srv.ln.Addr().String(), watchPath: lostAtOnce})
	for range 4 {
		srv.accept(t).awaitClose(waitLong)
	}
	for _, wait := range []string{"retry_in=10ms", "retry_in=20ms", "retry_in=40ms"} {
		waitFor(t, func() bool { return rc.logs.hasLine("no route to the server", wait) }, "a failed attempt followed by "+wait)
	}
}
