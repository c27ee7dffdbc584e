package main

import (
	"bytes"
	"fmt"
	"net"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/4over6d/4over6d/actors"
)

// TestConsoleCommands runs kick, reserve, unreserve and status against
// the real handlers on a fake engine, behind an HTTP test server that
// needs the token.
func TestConsoleCommands(t *testing.T) {
	token := writeTokenFile(t, testToken+"\n", 0o600)
	wrong := writeTokenFile(t, "another-token-0123456789\n", 0o600)
	noSession := fmt.Errorf("192.0.2.9: %w", actors.ErrNoSession)
	conflict := fmt.Errorf("192.0.2.50 is reserved for 2001:db8::6: %w", actors.ErrReservationConflict)
	tests := []struct {
		name string
		args []string // after -admin ADDR; "TOKEN" and "WRONG" stand for the token files
		err  error    // what the engine answers
		code int
		out  string // the whole stdout line for code 0, a part of stderr otherwise
		call string // the console call it must make, "" for none
	}{
		{"kick", []string{"kick", "-token-file", "TOKEN", "192.0.2.2"}, nil, 0,
			"kicked 192.0.2.2 (client [2001:db8:1::11]:40000)", "kick 192.0.2.2 0s"},
		{"kick with ban", []string{"kick", "-token-file", "TOKEN", "-ban", "1h", "192.0.2.2"}, nil, 0,
			"kicked 192.0.2.2 (client [2001:db8:1::11]:40000), banned until 2026-11-25T13:00:00Z", "kick 192.0.2.2 1h0m0s"},
		{"kick with ban after the address", []string{"kick", "192.0.2.2", "-ban", "90m", "-token-file", "TOKEN"}, nil, 0,
			"kicked 192.0.2.2 (client [2001:db8:1::11]:40000), banned until 2026-11-25T13:00:00Z", "kick 192.0.2.2 1h30m0s"},
		{"kick nobody", []string{"kick", "-token-file", "TOKEN", "192.0.2.9"}, noSession, 1, "kick: 192.0.2.9: no session holds that address (404 Not Found)", "kick 192.0.2.9 0s"},
		{"kick ban out of range", []string{"kick", "-token-file", "TOKEN", "-ban", "1000h", "192.0.2.2"}, nil, 1, "out of range", ""},
		{"kick without token", []string{"kick", "192.0.2.2"}, nil, 1, "needs Authorization: Bearer", ""},
		{"kick wrong token", []string{"kick", "-token-file", "WRONG", "192.0.2.2"}, nil, 1, "wrong token (403 Forbidden)", ""},
		{"kick no address", []string{"kick", "-token-file", "TOKEN"}, nil, 2, "usage: 4over6d kick", ""},
		{"kick two addresses", []string{"kick", "192.0.2.2", "192.0.2.3"}, nil, 2, "want 1 argument", ""},
		{"kick IPv6", []string{"kick", "2001:db8::1"}, nil, 2, "not an IPv4 address", ""},
		{"kick bad ban", []string{"kick", "-ban", "soon", "192.0.2.2"}, nil, 2, "-ban", ""},
		{"kick unknown flag", []string{"kick", "-force", "192.0.2.2"}, nil, 2, "-force", ""},
		{"kick bad token file", []string{"kick", "-token-file", "/nonexistent/token", "192.0.2.2"}, nil, 2, "-token-file", ""},
		{"reserve", []string{"reserve", "-token-file", "TOKEN", "-rate", "20mbit", "2001:db8::5", "192.0.2.50"}, nil, 0,
			"reserved 192.0.2.50 for 2001:db8::5 at 20mbit", "reserve 2001:db8::5 192.0.2.50 20000000"},
		{"reserve without rate", []string{"reserve", "-token-file", "TOKEN", "2001:db8::5", "192.0.2.50"}, nil, 0,
			"reserved 192.0.2.50 for 2001:db8::5", "reserve 2001:db8::5 192.0.2.50 0"},
		{"reserve conflict", []string{"reserve", "-token-file", "TOKEN", "2001:db8::5", "192.0.2.50"}, conflict, 1,
			"192.0.2.50 is reserved for 2001:db8::6: reservation conflict (409 Conflict)", "reserve 2001:db8::5 192.0.2.50 0"},
		{"reserve one argument", []string{"reserve", "2001:db8::5"}, nil, 2, "want 2 arguments", ""},
		{"reserve IPv4 client", []string{"reserve", "192.0.2.5", "192.0.2.50"}, nil, 2, "not a client IPv6 address", ""},
		{"reserve IPv6 address", []string{"reserve", "2001:db8::5", "2001:db8::50"}, nil, 2, "not an IPv4 address", ""},
		{"reserve bad rate", []string{"reserve", "-rate", "fast", "2001:db8::5", "192.0.2.50"}, nil, 2, "-rate", ""},
		{"unreserve", []string{"unreserve", "-token-file", "TOKEN", "2001:db8::5"}, nil, 0, "removed the reservation of 2001:db8::5", "unreserve 2001:db8::5"},
		{"unreserve none", []string{"unreserve", "-token-file", "TOKEN", "2001:db8::5"}, fmt.Errorf("2001:db8::5: %w", actors.ErrNoReservation), 1,
			"no reservation for that client (404 Not Found)", "unreserve 2001:db8::5"},
		{"unreserve IPv4", []string{"unreserve", "192.0.2.50"}, nil, 2, "not a client IPv6 address", ""},
		{"status", []string{"status", "-token-file", "TOKEN", "-json"}, nil, 0, "", ""},
		{"status without token", []string{"status"}, nil, 1, "status: this admin endpoint needs Authorization: Bearer <token> (401 Unauthorized)", ""},
		{"status extra argument", []string{"status", "now"}, nil, 2, "want 0 arguments", ""},
		{"status fleet on a single node", []string{"status", "-token-file", "TOKEN", "-fleet"}, nil, 1,
			"status: not in a fleet (no -etcd) (404 Not Found)", ""},
		{"status fleet without token", []string{"status", "-fleet"}, nil, 1, "(401 Unauthorized)", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			eng := &fakeEngine{kick: actors.KickResult{Client: client1}, err: tc.err}
			if strings.Contains(tc.name, "ban") {
				eng.kick.BannedUntil = t0.Add(time.Hour)
			}
			ta := newTestAdmin(t, eng, []byte(testToken), nil)
			hs := httptest.NewServer(ta.h)
			defer hs.Close()
			args := []string{tc.args[0], "-admin", strings.TrimPrefix(hs.URL, "http://")}
			for _, a := range tc.args[1:] {
				args = append(args, strings.NewReplacer("TOKEN", token, "WRONG", wrong).Replace(a))
			}
			var stdout, stderr bytes.Buffer
			code := run(args, &stdout, &stderr)
			switch {
			case code != tc.code:
				t.Fatalf("exit %d, want %d; stdout %q stderr %q", code, tc.code, stdout.String(), stderr.String())
			case code == 0 && tc.out != "" && stdout.String() != tc.out+"\n":
				t.Fatalf("stdout %q, want the one line %q", stdout.String(), tc.out)
			case code != 0 && (!strings.Contains(stderr.String(), tc.out) || stdout.Len() > 0):
				t.Fatalf("stderr %q, want it to say %q (stdout %q)", stderr.String(), tc.out, stdout.String())
			}
			if calls := eng.recorded(); tc.call == "" && len(calls) > 0 || tc.call != "" && (len(calls) != 1 || calls[0] != tc.call) {
				t.Errorf("console calls %q, want %q", calls, tc.call)
			}
		})
	}
}

// TestConsoleCommandUnreachable checks the answer when nothing listens.
func TestConsoleCommandUnreachable(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	var stderr bytes.Buffer
	if code := run([]string{"kick", "-admin", addr, "192.0.2.2"}, &bytes.Buffer{}, &stderr); code != 1 || !strings.Contains(stderr.String(), "failed to reach") {
		t.Fatalf("exit %d, stderr %q; want 1 and that the endpoint was not reached", code, stderr.String())
	}
}

// TestStatusFleet runs `status -fleet` against the real handlers: the
// table with this node marked, and with -json the API's answer as served.
func TestStatusFleet(t *testing.T) {
	token := writeTokenFile(t, testToken+"\n", 0o600)
	ta := newTestAdmin(t, &fakeEngine{fleet: fleetOfTwo()}, []byte(testToken), nil)
	hs := httptest.NewServer(ta.h)
	defer hs.Close()
	_, _, api := ta.do("GET", "/api/v1/fleet", "", "Authorization", "Bearer "+testToken)
	tests := []struct {
		name string
		args []string
		want []string // lines (or for -json the whole output) stdout must hold
	}{
		{"table", nil, []string{"fleet: 192.0.2.0/24", "  state: ok", "  this node: n1", "  nodes: 2",
			"* n1    2001:db8:1::1", "  n2    2001:db8:1::2"}},
		{"json", []string{"-json"}, []string{api}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			args := append([]string{"status", "-admin", strings.TrimPrefix(hs.URL, "http://"), "-token-file", token, "-fleet"}, tc.args...)
			if code := run(args, &stdout, &stderr); code != 0 {
				t.Fatalf("exit %d, stderr %q", code, stderr.String())
			}
			for _, w := range tc.want {
				if !strings.Contains(stdout.String(), w) {
					t.Errorf("stdout lacks %q:\n%s", w, stdout.String())
				}
			}
		})
	}
}
