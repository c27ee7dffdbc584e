package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
)

func TestParseServers(t *testing.T) {
	tests := []struct {
		in   string
		want []string // entries as they print
	}{
		{"[2001:db8::1]:5678", []string{"[2001:db8::1]:5678"}},
		{"vpn.example.net:5678", []string{"vpn.example.net:5678"}},
		{"[2001:db8::1]:5678,[2001:db8::2]:5678", []string{"[2001:db8::1]:5678", "[2001:db8::2]:5678"}},
		{" [2001:db8::1]:5678 , vpn.example.net:443 ", []string{"[2001:db8::1]:5678", "vpn.example.net:443"}},
		{"[2001:db8::1]:5678,[2001:db8::1]:5679", []string{"[2001:db8::1]:5678", "[2001:db8::1]:5679"}},
		{"[fe80::1%eth0]:5678", []string{"[fe80::1%eth0]:5678"}},
	}
	for _, tt := range tests {
		entries, err := parseServers(tt.in)
		if err != nil {
			t.Errorf("parseServers(%q): %v", tt.in, err)
			continue
		}
		var got []string
		for _, e := range entries {
			got = append(got, e.String())
		}
		if !slices.Equal(got, tt.want) {
			t.Errorf("parseServers(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestParseServersRejects(t *testing.T) {
	tests := []struct {
		in, want string // want: a part of the error, which names -server
	}{
		{"", "required"},
		{"2001:db8::1", "want [IPv6]:port"},
		{"[2001:db8::1]:5678,", "want [IPv6]:port"},
		{"[2001:db8::1]:5678,,[2001:db8::2]:5678", "want [IPv6]:port"},
		{"[2001:db8::1]:5678,[2001:db8::2]:http", `port "http"`},
		{"[2001:db8::1]:5678,198.51.100.1:5678", "want an IPv6 address"},
		{"[::ffff:198.51.100.1]:5678", "want an IPv6 address"},
		{"[2001:db8::1]:5678, [2001:db8::1]:5678", "listed twice"},
	}
	for _, tt := range tests {
		_, err := parseServers(tt.in)
		if err == nil || !strings.Contains(err.Error(), "-server") || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("parseServers(%q) = %v, want an error about -server with %q", tt.in, err, tt.want)
		}
	}
}

// fakeResolver answers each name with the next of its answers (the last
// one again when they run out) and counts the lookups.
type fakeResolver struct {
	answers map[string][][]string
	calls   map[string]int
}

func (r *fakeResolver) lookup(_ context.Context, host string) ([]netip.Addr, error) {
	answers, ok := r.answers[host]
	if !ok {
		return nil, errors.New("no such host")
	}
	n := r.calls[host]
	r.calls[host]++
	var out []netip.Addr
	for _, s := range answers[min(n, len(answers)-1)] {
		out = append(out, netip.MustParseAddr(s))
	}
	return out, nil
}

// Outcomes of an attempt in walk tests.
const (
	fail = "fail" // connecting or leasing failed
	ok   = "ok"   // the session connected (and later ended)
	hup  = "hup"  // SIGHUP during the attempt
)

// TestServerWalkOrder drives the walk through attempts with the given
// outcomes and checks the address of each attempt ("err" for a name that
// did not resolve).
func TestServerWalkOrder(t *testing.T) {
	tests := []struct {
		name     string
		servers  string
		answers  map[string][][]string
		outcomes []string
		want     []string
		lookups  map[string]int
	}{
		{
			name: "single address, as before", servers: "[2001:db8::1]:5678",
			outcomes: []string{fail, fail, ok, fail},
			want:     []string{"[2001:db8::1]:5678", "[2001:db8::1]:5678", "[2001:db8::1]:5678", "[2001:db8::1]:5678"},
		},
		{
			name: "list: next on failure, last good first after a session", servers: "[2001:db8::1]:1,[2001:db8::2]:1",
			outcomes: []string{fail, fail, ok, fail, ok, fail, fail},
			want: []string{"[2001:db8::1]:1", "[2001:db8::2]:1", "[2001:db8::1]:1", "[2001:db8::1]:1",
				"[2001:db8::2]:1", "[2001:db8::2]:1", "[2001:db8::1]:1"},
		},
		{
			name: "name with several AAAA, resolved again when the walk comes back", servers: "vpn.example:1,[2001:db8::9]:1",
			answers:  map[string][][]string{"vpn.example": {{"2001:db8::a", "2001:db8::b", "2001:db8::c"}, {"2001:db8::b", "2001:db8::d"}}},
			outcomes: []string{fail, fail, fail, fail, fail, fail, fail},
			want: []string{"[2001:db8::a]:1", "[2001:db8::b]:1", "[2001:db8::c]:1", "[2001:db8::9]:1",
				"[2001:db8::b]:1", "[2001:db8::d]:1", "[2001:db8::9]:1"},
			lookups: map[string]int{"vpn.example": 2},
		},
		{
			name: "last good address of a name first, though DNS rotated", servers: "vpn.example:1",
			answers:  map[string][][]string{"vpn.example": {{"2001:db8::a", "2001:db8::b", "2001:db8::c"}, {"2001:db8::c", "2001:db8::a", "2001:db8::b"}}},
			outcomes: []string{fail, ok, fail, fail, fail},
			want:     []string{"[2001:db8::a]:1", "[2001:db8::b]:1", "[2001:db8::b]:1", "[2001:db8::c]:1", "[2001:db8::a]:1"},
		},
		{
			name: "last good address gone from DNS", servers: "vpn.example:1",
			answers:  map[string][][]string{"vpn.example": {{"2001:db8::a", "2001:db8::b"}, {"2001:db8::c", "2001:db8::a"}}},
			outcomes: []string{fail, ok, fail, fail},
			want:     []string{"[2001:db8::a]:1", "[2001:db8::b]:1", "[2001:db8::c]:1", "[2001:db8::a]:1"},
		},
		{
			name: "a name that does not resolve is a failed attempt", servers: "gone.example:1,[2001:db8::9]:1",
			outcomes: []string{fail, fail, fail, ok, fail},
			want:     []string{"err", "[2001:db8::9]:1", "err", "[2001:db8::9]:1", "[2001:db8::9]:1"},
		},
		{
			name: "DNS answers that are not IPv6 are skipped", servers: "vpn.example:1",
			answers:  map[string][][]string{"vpn.example": {{"::ffff:198.51.100.1", "2001:db8::a", "2001:db8::a"}, {"::ffff:198.51.100.1"}}},
			outcomes: []string{fail, fail},
			want:     []string{"[2001:db8::a]:1", "err"},
		},
		{
			name: "SIGHUP before any session starts from the first entry", servers: "[2001:db8::1]:1,[2001:db8::2]:1,[2001:db8::3]:1",
			outcomes: []string{fail, hup, fail},
			want:     []string{"[2001:db8::1]:1", "[2001:db8::2]:1", "[2001:db8::1]:1"},
		},
		{
			name: "SIGHUP goes back to the last good server", servers: "[2001:db8::1]:1,[2001:db8::2]:1,[2001:db8::3]:1",
			outcomes: []string{fail, ok, fail, hup, fail},
			want:     []string{"[2001:db8::1]:1", "[2001:db8::2]:1", "[2001:db8::2]:1", "[2001:db8::3]:1", "[2001:db8::2]:1"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			entries, err := parseServers(tt.servers)
			if err != nil {
				t.Fatal(err)
			}
			r := &fakeResolver{answers: tt.answers, calls: map[string]int{}}
			w := newServerWalk(entries, r.lookup)
			var got []string
			for _, outcome := range tt.outcomes {
				tg, err := w.next(context.Background())
				switch {
				case err != nil:
					got = append(got, "err")
				case outcome == ok:
					w.connected(tg)
					fallthrough
				default:
					got = append(got, tg.addr.String())
				}
				if outcome == hup {
					w.restart()
				}
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("attempts went to\n%q\nwant\n%q", got, tt.want)
			}
			for host, n := range tt.lookups {
				if r.calls[host] != n {
					t.Errorf("%s resolved %d times, want %d", host, r.calls[host], n)
				}
			}
		})
	}
}

func TestTargetNamesItsEntry(t *testing.T) {
	entries, err := parseServers("[2001:db8::1]:5678,vpn.example:5678")
	if err != nil {
		t.Fatal(err)
	}
	r := &fakeResolver{answers: map[string][][]string{"vpn.example": {{"2001:db8::a"}}}, calls: map[string]int{}}
	w := newServerWalk(entries, r.lookup)
	var got []string
	for range 2 {
		tg, err := w.next(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, tg.String())
	}
	want := []string{"[2001:db8::1]:5678", "[2001:db8::a]:5678 (vpn.example:5678)"}
	if !slices.Equal(got, want) {
		t.Errorf("targets print as %q, want %q", got, want)
	}
	if _, err := newServerWalk(entries[1:], (&fakeResolver{}).lookup).next(context.Background()); err == nil ||
		!strings.Contains(err.Error(), "failed to resolve vpn.example") {
		t.Errorf("unresolvable name: %v, want a failure to resolve it", err)
	}
}

// deadAddr is a loopback address on which nothing listens: connecting to
// it is refused.
func deadAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp6", "[::1]:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	return addr
}

// TestClientMovesPastDeadServer runs the client against a dead and a live
// server in both orders: it reaches the live one, logs why the dead one
// failed and that it tries the next, and after the session ends it goes
// back to the live one first.
func TestClientMovesPastDeadServer(t *testing.T) {
	for _, deadFirst := range []bool{true, false} {
		t.Run(fmt.Sprintf("dead first %v", deadFirst), func(t *testing.T) {
			verifyNoLeaks(t)
			live, dead := newFakeServer(t), deadAddr(t)
			list := []string{dead, live.ln.Addr().String()}
			if !deadFirst {
				slices.Reverse(list)
			}
			rc := startClientOpts(t, shortTimers(), clientOpts{servers: strings.Join(list, ",")})
			p := live.accept(t)
			p.handshake(testReply)
			rc.net.awaitLease(t)
			failures := rc.logs.count(`msg="connect failed"`)
			if deadFirst && (failures != 1 || !rc.logs.hasLine(`msg="connect failed"`, "server="+dead, "refused") ||
				!rc.logs.hasLine(`msg="trying server"`, "server="+live.ln.Addr().String(), "previous="+dead)) {
				t.Errorf("want the dead server's failure and the move to the next logged:\n%s", rc.logs.String())
			}
			if !deadFirst && failures != 0 {
				t.Errorf("the dead server was tried before the live one:\n%s", rc.logs.String())
			}
			_ = p.conn.Close() // the session ends; the live server is the last good one
			live.accept(t).handshake(testReply)
			rc.net.awaitLease(t)
			if n := rc.logs.count(`msg="connect failed"`); n != failures {
				t.Errorf("after the session ended the client tried the dead server first:\n%s", rc.logs.String())
			}
		})
	}
}
