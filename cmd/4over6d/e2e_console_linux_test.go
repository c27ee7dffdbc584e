package main

// End-to-end tests of the operator console (issue #15) with the real
// binary: the management API under /api/v1/ and the `4over6d kick`,
// `reserve` and `unreserve` commands, driven from inside the server
// namespace against the admin endpoint on its loopback, while raw clients
// dialled from the client namespace see what the calls do.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/4over6d/4over6d/messages/wire"
	"github.com/4over6d/4over6d/tun/tuntest"
)

// consoleAdmin is the admin endpoint of the tests' servers (the default,
// on the server namespace's loopback, where no token is needed).
const consoleAdmin = "127.0.0.1:9604"

// api sends one HTTP/1.0 request with an optional body to the admin
// endpoint from inside the server namespace and returns the status, the
// Content-Type and the body.
func (tp *topology) api(t *testing.T, method, path, body string) (int, string, string) {
	t.Helper()
	var resp []byte
	err := tp.srv.Do(func() error {
		conn, err := net.DialTimeout("tcp", consoleAdmin, e2eWait)
		if err != nil {
			return err
		}
		defer conn.Close()
		_ = conn.SetDeadline(time.Now().Add(e2eWait))
		req := fmt.Sprintf("%s %s HTTP/1.0\r\nHost: %s\r\n", method, path, consoleAdmin)
		if body != "" {
			req += fmt.Sprintf("Content-Type: application/json\r\nContent-Length: %d\r\n", len(body))
		}
		if _, err := io.WriteString(conn, req+"\r\n"+body); err != nil {
			return err
		}
		resp, err = io.ReadAll(conn)
		return err
	})
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	head, payload, ok := strings.Cut(string(resp), "\r\n\r\n")
	var code int
	if _, err := fmt.Sscanf(head, "HTTP/1.%d %d", new(int), &code); err != nil || !ok {
		t.Fatalf("%s %s: no HTTP response in %q", method, path, resp)
	}
	ctype := ""
	for _, line := range strings.Split(head, "\r\n") {
		if name, value, ok := strings.Cut(line, ":"); ok && strings.EqualFold(name, "Content-Type") {
			ctype = strings.TrimSpace(value)
		}
	}
	return code, ctype, payload
}

// apiJSON calls the API, wants status and decodes the JSON body into out.
func (tp *topology) apiJSON(t *testing.T, method, path, body string, status int, out any) {
	t.Helper()
	code, ctype, payload := tp.api(t, method, path, body)
	if code != status || !strings.HasPrefix(ctype, "application/json") {
		t.Fatalf("%s %s: %d (%s), want %d with JSON:\n%s", method, path, code, ctype, status, payload)
	}
	dec := json.NewDecoder(strings.NewReader(payload))
	dec.DisallowUnknownFields()
	if err := dec.Decode(out); err != nil {
		t.Fatalf("%s %s: body %q: %v", method, path, payload, err)
	}
}

// apiError calls the API and wants status with a body that is exactly
// {"error": "<a message>"}.
func (tp *topology) apiError(t *testing.T, method, path, body string, status int) string {
	t.Helper()
	var e map[string]any
	tp.apiJSON(t, method, path, body, status, &e)
	msg, ok := e["error"].(string)
	if len(e) != 1 || !ok || msg == "" {
		t.Fatalf("%s %s: error body %v, want {\"error\": message}", method, path, e)
	}
	return msg
}

// kickAnswer is the JSON of a kick, as console.md fixes it.
type kickAnswer struct {
	Kicked      string `json:"kicked"`
	Client      string `json:"client"`
	BannedUntil string `json:"banned_until"`
}

// expectClosed reads until the server ends the connection; a deadline
// first means it kept it open.
func (c *rawClient) expectClosed(t *testing.T) {
	t.Helper()
	_ = c.conn.SetReadDeadline(time.Now().Add(e2eWait))
	for {
		_, err := c.dec.Next()
		if errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatal("the server kept the connection open")
		}
		if err != nil {
			return
		}
	}
}

// tryHandshake sends 100 and tells whether a 101 came back (false: the
// server closed the connection first).
func (c *rawClient) tryHandshake(t *testing.T) bool {
	t.Helper()
	_, _ = c.conn.Write(wire.AppendFrame(nil, wire.TypeIPRequest, nil))
	_ = c.conn.SetReadDeadline(time.Now().Add(e2eWait))
	for {
		f, err := c.dec.Next()
		if errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatal("no 101 and no close within the wait")
		}
		if err != nil {
			return false
		}
		if f.Type == wire.TypeIPReply {
			r, err := wire.ParseIPReply(f.Payload)
			if err != nil {
				t.Fatalf("parse 101: %v", err)
			}
			c.addr = r.Addr
			return true
		}
	}
}

const kickedMetric = `fourover6d_sessions_closed_by_reason_total{reason="kicked"} `

// DELETE /api/v1/sessions/{addr} closes that session and no other, is
// counted and logged, and answers 404 / 400 as the contract says without
// touching anyone.
func TestConsoleKick(t *testing.T) {
	tp := newTopology(t)
	s := tp.startServer(t)
	victim, other := tp.dialFrom(t, cliV6), tp.dialFrom(t, cliV6b)
	victim.handshake()
	other.handshake()
	path := "/api/v1/sessions/" + victim.addr.String()

	var got kickAnswer
	tp.apiJSON(t, "DELETE", path, "", 200, &got)
	want := kickAnswer{Kicked: victim.addr.String(), Client: victim.conn.LocalAddr().String()}
	if got != want {
		t.Fatalf("kick answered %+v, want %+v", got, want)
	}
	victim.expectClosed(t)
	other.pingThrough(t, 1)
	tp.awaitMetrics(t, kickedMetric+"1", "fourover6d_sessions 1")
	s.logs.waitLine(t, `msg="admin call"`, "remote=127.0.0.1:", "method=DELETE", "path="+path, "status=200")

	for _, tc := range []struct {
		name, path string
		status     int
	}{
		{"again", path, 404},
		{"nobody holds it", "/api/v1/sessions/192.0.2.77", 404},
		{"not an address", "/api/v1/sessions/nope", 400},
		{"IPv6", "/api/v1/sessions/" + cliV6b.String(), 400},
		{"IPv4-mapped", "/api/v1/sessions/::ffff:" + other.addr.String(), 400},
		{"ban too short", "/api/v1/sessions/" + other.addr.String() + "?ban=1ms", 400},
		{"ban too long", "/api/v1/sessions/" + other.addr.String() + "?ban=721h", 400},
		{"ban not a duration", "/api/v1/sessions/" + other.addr.String() + "?ban=forever", 400},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tp.apiError(t, "DELETE", tc.path, "", tc.status)
			// slog quotes a path with a query.
			s.logs.waitLine(t, `msg="admin call"`, "method=DELETE", "path=", tc.path, fmt.Sprintf("status=%d", tc.status))
		})
	}
	// None of the refused calls closed the other session.
	other.pingThrough(t, 2)
	tp.awaitMetrics(t, kickedMetric+"1", "fourover6d_sessions 1")
}

// A kick with ?ban= refuses the client's source until the ban ends (and
// no other source), then serves it again.
func TestConsoleKickWithBan(t *testing.T) {
	tp := newTopology(t)
	s := tp.startServer(t)
	victim := tp.dialFrom(t, cliV6)
	victim.handshake()
	const ban = 3 * time.Second
	before := time.Now()
	var got kickAnswer
	tp.apiJSON(t, "DELETE", "/api/v1/sessions/"+victim.addr.String()+"?ban="+ban.String(), "", 200, &got)
	until, err := time.Parse(time.RFC3339, got.BannedUntil)
	// RFC3339 has whole seconds: the reported end may be up to 1 s early.
	if err != nil || until.Before(before.Add(ban-time.Second)) || until.After(time.Now().Add(ban+time.Second)) {
		t.Fatalf("banned_until %q (%v), want about %v from now", got.BannedUntil, err, ban)
	}
	victim.expectClosed(t)
	tp.dialFrom(t, cliV6).expectRefused()
	tp.awaitMetrics(t, refusedMetric("banned", 1))
	s.logs.waitLine(t, "refusing connection", "reason=banned")
	// Another source is not banned.
	tp.dialFrom(t, cliV6b).handshake()

	deadline := time.Now().Add(10 * ban)
	for attempt := 1; ; attempt++ {
		c := tp.dialFrom(t, cliV6)
		if c.tryHandshake(t) {
			if now := time.Now(); now.Before(until) {
				t.Fatalf("served at %v, before the ban's end %v", now, until)
			}
			c.pingThrough(t, 1)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("still refused %v after the kick (%d attempts), ban was %v", 10*ban, attempt, ban)
		}
		time.Sleep(100 * time.Millisecond) // pace the attempts; each is counted as refused
	}
}

// reservationList is GET /api/v1/reservations.
type reservationList struct {
	Reservations []apiReservation `json:"reservations"`
}

func (tp *topology) reservations(t *testing.T) []apiReservation {
	t.Helper()
	var l reservationList
	tp.apiJSON(t, "GET", "/api/v1/reservations", "", 200, &l)
	if l.Reservations == nil {
		t.Fatal(`GET /api/v1/reservations: "reservations" is not an array`)
	}
	return l.Reservations
}

func (tp *topology) pool(t *testing.T) apiPool {
	t.Helper()
	var p apiPool
	tp.apiJSON(t, "GET", "/api/v1/pool", "", 200, &p)
	return p
}

// reservationsOnDisk reads the reservations file as the operator would.
func reservationsOnDisk(t *testing.T, path string) []apiReservation {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("reservations file: %v", err)
	}
	var l reservationList
	if err := json.Unmarshal(data, &l); err != nil {
		t.Fatalf("reservations file %q: %v", data, err)
	}
	return l.Reservations
}

// Reservations made over the API are in effect at once, on disk, and
// after a restart; every bad PUT is a JSON error that changes nothing.
func TestConsoleReservations(t *testing.T) {
	tp := newTopology(t)
	resv := filepath.Join(t.TempDir(), "reservations.json")
	args := []string{"-pool", staticPool, "-reservations", resv}
	s := tp.startServer(t, args...)
	owner := cliV6b
	reserved := netip.MustParseAddr("192.0.2.5")
	if p := tp.pool(t); p != (apiPool{Size: 5, Free: 5}) {
		t.Fatalf("pool at start %+v, want 5 free", p)
	}
	first := tp.dialFrom(t, cliV6)
	first.handshake() // .2

	entry := apiReservation{Client: owner.String(), Addr: reserved.String(), Rate: "20mbit"}
	var got apiReservation
	tp.apiJSON(t, "PUT", "/api/v1/reservations/"+owner.String(), `{"addr": "192.0.2.5", "rate": "20mbit"}`, 200, &got)
	if got != entry {
		t.Fatalf("PUT answered %+v, want %+v", got, entry)
	}
	s.logs.waitLine(t, `msg="admin call"`, "remote=127.0.0.1:", "method=PUT", "path=/api/v1/reservations/"+owner.String(), "status=200")
	want := []apiReservation{entry}
	if l := tp.reservations(t); !reflect.DeepEqual(l, want) {
		t.Fatalf("GET lists %+v, want %+v", l, want)
	}
	if l := reservationsOnDisk(t, resv); !reflect.DeepEqual(l, want) {
		t.Fatalf("the file holds %+v, want %+v", l, want)
	}
	wantPool := apiPool{Size: 5, Leased: 1, Reserved: 1, Free: 3}
	if p := tp.pool(t); p != wantPool {
		t.Fatalf("pool %+v, want %+v", p, wantPool)
	}

	fileBefore, err := os.ReadFile(resv)
	if err != nil {
		t.Fatal(err)
	}
	stranger := "/api/v1/reservations/2001:db8:1::99"
	for _, tc := range []struct {
		name, path, body string
		status           int
	}{
		{"outside the pool", stranger, `{"addr": "192.0.2.9"}`, 400},
		{"another network", stranger, `{"addr": "198.51.100.7"}`, 400},
		{"the server's own", stranger, `{"addr": "192.0.2.1"}`, 400},
		{"the pool's network address", stranger, `{"addr": "192.0.2.0"}`, 400},
		{"an IPv6 addr", stranger, `{"addr": "2001:db8:1::5"}`, 400},
		{"reserved for another client", "/api/v1/reservations/" + cliV6.String(), `{"addr": "192.0.2.5"}`, 409},
		{"leased now to another client", stranger, `{"addr": "` + first.addr.String() + `"}`, 409},
		{"malformed JSON", stranger, `{"addr": "192.0.2.4"`, 400},
		{"unknown field", stranger, `{"addr": "192.0.2.4", "ratee": "1mbit"}`, 400},
		{"two objects", stranger, `{"addr": "192.0.2.4"} {"addr": "192.0.2.3"}`, 400},
		{"no addr", stranger, `{"rate": "1mbit"}`, 400},
		{"bad rate", stranger, `{"addr": "192.0.2.4", "rate": "fast"}`, 400},
		{"empty body", stranger, "", 400},
		{"oversize body", stranger, `{"addr": "192.0.2.4", "rate": "` + strings.Repeat("1", maxBody) + `"}`, 413},
		{"client not IPv6", "/api/v1/reservations/192.0.2.7", `{"addr": "192.0.2.4"}`, 400},
		{"client IPv4-mapped", "/api/v1/reservations/::ffff:192.0.2.7", `{"addr": "192.0.2.4"}`, 400},
		{"DELETE of none", stranger, "", 404},
	} {
		t.Run(tc.name, func(t *testing.T) {
			method := "PUT"
			if tc.name == "DELETE of none" {
				method = "DELETE"
			}
			tp.apiError(t, method, tc.path, tc.body, tc.status)
			if l := tp.reservations(t); !reflect.DeepEqual(l, want) {
				t.Errorf("after the refused call GET lists %+v, want %+v", l, want)
			}
			if data, _ := os.ReadFile(resv); !bytes.Equal(data, fileBefore) {
				t.Errorf("the refused call changed the file:\n%s", data)
			}
			if p := tp.pool(t); p != wantPool {
				t.Errorf("after the refused call the pool is %+v, want %+v", p, wantPool)
			}
		})
	}

	// The owner gets its address; the others filling the pool never do.
	checkHolds := func(run string) {
		t.Helper()
		a := tp.dialFrom(t, owner)
		a.handshake()
		if a.addr != reserved {
			t.Fatalf("%s: the owner %v got %v, want %v", run, owner, a.addr, reserved)
		}
		a.pingThrough(t, 1)
		tp.fillFrom(t, cliV6, 5-len(tp.sessionsNow(t)), reserved)
		tp.dialFrom(t, cliV6).expectNoAddress(t)
		if p := tp.pool(t); p != (apiPool{Size: 5, Leased: 5, Reserved: 1, Free: 0}) {
			t.Fatalf("%s: full pool %+v, want 5 leased, 1 reserved, 0 free", run, p)
		}
	}
	checkHolds("first run")

	if err, _ := s.stop(t); err != nil {
		t.Fatalf("stop: %v", err)
	}
	tp.startServer(t, args...)
	if l := tp.reservations(t); !reflect.DeepEqual(l, want) {
		t.Fatalf("after the restart GET lists %+v, want %+v", l, want)
	}
	if p := tp.pool(t); p != (apiPool{Size: 5, Reserved: 1, Free: 4}) {
		t.Fatalf("pool after the restart %+v, want 1 reserved, 4 free", p)
	}
	checkHolds("after the restart")

	code, _, body := tp.api(t, "DELETE", "/api/v1/reservations/"+owner.String(), "")
	if code != 204 || body != "" {
		t.Fatalf("DELETE reservation: %d %q, want 204 and no body", code, body)
	}
	if l := tp.reservations(t); len(l) != 0 {
		t.Fatalf("GET after the DELETE lists %+v", l)
	}
	if l := reservationsOnDisk(t, resv); len(l) != 0 {
		t.Fatalf("the file still holds %+v", l)
	}
	tp.apiError(t, "DELETE", "/api/v1/reservations/"+owner.String(), "", 404)
}

// sessionsNow is GET /api/v1/sessions.
func (tp *topology) sessionsNow(t *testing.T) []apiSessionJSON {
	t.Helper()
	var l struct {
		Sessions []apiSessionJSON `json:"sessions"`
	}
	tp.apiJSON(t, "GET", "/api/v1/sessions", "", 200, &l)
	if l.Sessions == nil {
		t.Fatal(`GET /api/v1/sessions: "sessions" is not an array`)
	}
	return l.Sessions
}

// apiSessionJSON is an entry of /api/v1/sessions with its histories kept
// raw, so a test can tell an array from null.
type apiSessionJSON struct {
	apiSession
	HistoryInBps  json.RawMessage `json:"history_in_bps"`
	HistoryOutBps json.RawMessage `json:"history_out_bps"`
}

// runCLI runs a console command of the built binary in the server
// namespace and returns its exit code, stdout and stderr.
func (tp *topology) runCLI(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 4*e2eWait)
	defer cancel()
	cmd := tp.srv.Command(ctx, binary(t), args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var exit *exec.ExitError
	switch {
	case err == nil:
		return 0, stdout.String(), stderr.String()
	case errors.As(err, &exit) && ctx.Err() == nil:
		return exit.ExitCode(), stdout.String(), stderr.String()
	}
	t.Fatalf("4over6d %q: %v\n%s%s", args, err, &stdout, &stderr)
	return 0, "", ""
}

// The CLI against the running server: exit 0 and one line on stdout when
// done, 1 and one line on stderr naming the server's refusal, 2 for bad
// usage.
func TestConsoleCLI(t *testing.T) {
	tp := newTopology(t)
	resv := filepath.Join(t.TempDir(), "reservations.json")
	tp.startServer(t, "-pool", staticPool, "-reservations", resv)
	c := tp.dialFrom(t, cliV6)
	c.handshake()
	admin := []string{"-admin", consoleAdmin}
	for _, tc := range []struct {
		args []string
		code int
		line string // the one line, on stdout for 0, on stderr else
	}{
		{[]string{"kick", c.addr.String()}, 0, fmt.Sprintf("kicked %v (client %v)", c.addr, c.conn.LocalAddr())},
		{[]string{"kick", c.addr.String()}, 1, "404 Not Found"},
		{[]string{"reserve", "-rate", "20mbit", cliV6b.String(), "192.0.2.5"}, 0, "reserved 192.0.2.5 for " + cliV6b.String() + " at 20mbit"},
		{[]string{"reserve", cliV6.String(), "192.0.2.5"}, 1, "409 Conflict"},
		{[]string{"reserve", cliV6.String(), "192.0.2.1"}, 1, "400 Bad Request"},
		{[]string{"unreserve", cliV6b.String()}, 0, "removed the reservation of " + cliV6b.String()},
		{[]string{"unreserve", cliV6b.String()}, 1, "404 Not Found"},
		{[]string{"reserve", cliV6.String(), "192.0.2.4"}, 0, "reserved 192.0.2.4 for " + cliV6.String()},
		{[]string{"kick", "nope"}, 2, ""},
	} {
		code, stdout, stderr := tp.runCLI(t, append(append([]string{tc.args[0]}, admin...), tc.args[1:]...)...)
		out, other := stdout, stderr
		if tc.code != 0 {
			out, other = stderr, stdout
		}
		lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
		switch {
		case code != tc.code:
			t.Fatalf("4over6d %q: exit %d, want %d\nstdout: %s\nstderr: %s", tc.args, code, tc.code, stdout, stderr)
		case tc.code == 2:
			// usage: any text on stderr
		case len(lines) != 1 || !strings.Contains(lines[0], tc.line) || other != "":
			t.Fatalf("4over6d %q: want one line with %q\nstdout: %q\nstderr: %q", tc.args, tc.line, stdout, stderr)
		}
	}
	c.expectClosed(t)
	want := []apiReservation{{Client: cliV6.String(), Addr: "192.0.2.4"}}
	if l := tp.reservations(t); !reflect.DeepEqual(l, want) {
		t.Fatalf("after the CLI GET lists %+v, want %+v", l, want)
	}
	if l := reservationsOnDisk(t, resv); !reflect.DeepEqual(l, want) {
		t.Fatalf("after the CLI the file holds %+v, want %+v", l, want)
	}
	again := tp.dialFrom(t, cliV6)
	again.handshake()
	if again.addr != netip.MustParseAddr("192.0.2.4") {
		t.Fatalf("after `reserve` %v got %v, want 192.0.2.4", cliV6, again.addr)
	}
}

// flood sends echo requests to the server's TUN address at a steady pace
// (at most max) and throws the answers away, until stop is closed. It
// writes the connection itself, so the test goroutine must not use c.
func (c *rawClient) flood(max int, stop <-chan struct{}) {
	_ = c.conn.SetReadDeadline(time.Time{}) // the handshake's would end the drain
	go func() { _, _ = io.Copy(io.Discard, c.conn) }()
	go func() {
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		payload := bytes.Repeat([]byte("r"), 1000)
		for seq := range max {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			_ = c.conn.SetWriteDeadline(time.Now().Add(e2eWait))
			if _, err := c.conn.Write(wire.AppendFrame(nil, wire.TypeDataRequest, tuntest.Ping(c.addr, tunAddr, 0x7272, uint16(seq), payload))); err != nil {
				return
			}
		}
	}()
}

// /api/v1/sessions measures the rates of a client that sends: above zero
// for it, zero uplink for an idle one, and history arrays for sparklines.
func TestConsoleSessionRates(t *testing.T) {
	tp := newTopology(t)
	tp.startServer(t)
	busy, idle := tp.dialFrom(t, cliV6), tp.dialFrom(t, cliV6b)
	busy.handshake()
	idle.handshake()
	stop := make(chan struct{})
	defer close(stop)
	busy.flood(5000, stop)

	var last []apiSessionJSON
	deadline := time.Now().Add(30 * time.Second) // one history value needs 5 s of samples
	for {
		last = tp.sessionsNow(t)
		if len(last) != 2 {
			t.Fatalf("sessions %+v, want 2", last)
		}
		var b, i apiSessionJSON
		for _, s := range last {
			switch s.Addr {
			case busy.addr.String():
				b = s
			case idle.addr.String():
				i = s
			}
		}
		for _, s := range []apiSessionJSON{b, i} {
			if !bytes.HasPrefix(s.HistoryInBps, []byte("[")) || !bytes.HasPrefix(s.HistoryOutBps, []byte("[")) {
				t.Fatalf("session %s: histories %s and %s, want arrays", s.Addr, s.HistoryInBps, s.HistoryOutBps)
			}
		}
		if i.RateInBps != 0 {
			t.Fatalf("the idle session has rate_in_bps %d", i.RateInBps)
		}
		var hist []uint64
		if err := json.Unmarshal(b.HistoryInBps, &hist); err != nil {
			t.Fatal(err)
		}
		if b.RateInBps > 0 && b.RateOutBps > 0 && len(hist) > 0 && hist[len(hist)-1] > 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the busy session never showed its rates and history: %+v", b)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
