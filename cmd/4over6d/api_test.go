package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/4over6d/4over6d/actors"
	"github.com/4over6d/4over6d/messages"
)

// fakeEngine answers the admin endpoint's calls from fixed data and
// records the console calls it got.
type fakeEngine struct {
	metrics  actors.Metrics
	sessions []actors.SessionStatus
	kick     actors.KickResult
	reserved []messages.Static
	pool     actors.PoolStats
	fleet    *actors.FleetStatus // nil: a single node (ErrNoFleet)
	err      error               // returned by every console call when set

	mu    sync.Mutex
	calls []string
}

func (f *fakeEngine) record(format string, args ...any) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, fmt.Sprintf(format, args...))
}

func (f *fakeEngine) recorded() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.calls...)
}

func (f *fakeEngine) Metrics() *actors.Metrics { return &f.metrics }
func (f *fakeEngine) Health() error            { return nil }
func (f *fakeEngine) InjectPanic(_ context.Context, kind string, addr netip.Addr) error {
	f.record("panic %s %v", kind, addr)
	return nil
}

func (f *fakeEngine) Sessions() ([]actors.SessionStatus, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]actors.SessionStatus(nil), f.sessions...), f.err
}

// setSessions changes what Sessions returns (the sampler reads it on its
// own goroutine).
func (f *fakeEngine) setSessions(s ...actors.SessionStatus) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.sessions = s
}

func (f *fakeEngine) Kick(addr netip.Addr, ban time.Duration) (actors.KickResult, error) {
	f.record("kick %v %v", addr, ban)
	return f.kick, f.err
}

func (f *fakeEngine) Reservations() ([]messages.Static, error) { return f.reserved, f.err }

func (f *fakeEngine) Reserve(r messages.Static) error {
	f.record("reserve %v %v %d", r.Client, r.Addr, r.Rate)
	return f.err
}

func (f *fakeEngine) Unreserve(client netip.Addr) error {
	f.record("unreserve %v", client)
	return f.err
}

func (f *fakeEngine) Pool() (actors.PoolStats, error) { return f.pool, f.err }

func (f *fakeEngine) Fleet() (actors.FleetStatus, error) {
	switch {
	case f.err != nil:
		return actors.FleetStatus{}, f.err
	case f.fleet == nil:
		return actors.FleetStatus{}, actors.ErrNoFleet
	}
	return *f.fleet, nil
}

// testAdmin is an admin endpoint on a fake engine with its sampler
// running on a tick channel the test drives.
type testAdmin struct {
	*admin
	tick  chan time.Time
	clock *fakeClock
	logs  *syncBuffer
	h     http.Handler
}

func newTestAdmin(t *testing.T, eng engine, token []byte, root http.Handler) *testAdmin {
	t.Helper()
	logs := &syncBuffer{}
	log := slog.New(slog.NewTextHandler(logs, nil))
	ta := &testAdmin{tick: make(chan time.Time), clock: &fakeClock{now: t0}, logs: logs}
	ta.admin = &admin{srv: eng, listen: "[::]:5678", tun: "4over6", pool: netip.MustParsePrefix("192.0.2.0/24"),
		token: token, root: root, log: log, faults: true}
	ctx, cancel := context.WithCancel(context.Background())
	ta.rates = newSampler(eng.Sessions, ta.clock.get, ta.tick, log)
	go ta.rates.run(ctx)
	t.Cleanup(func() { cancel(); <-ta.rates.done })
	ta.h = ta.handler()
	return ta
}

// sample makes the sampler take one sample after the clock moved on by d,
// and returns when it is done (the query after the tick waits for it).
func (ta *testAdmin) sample(d time.Duration) {
	ta.clock.advance(d)
	ta.tick <- time.Time{}
	ta.rates.rates(context.Background())
}

// do sends one request through the handler and returns the status, the
// headers and the body.
func (ta *testAdmin) do(method, path, body string, header ...string) (int, http.Header, string) {
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req := httptest.NewRequest(method, path, rd)
	req.RemoteAddr = "[2001:db8:99::1]:51000"
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	rec := httptest.NewRecorder()
	ta.h.ServeHTTP(rec, req)
	return rec.Code, rec.Header(), rec.Body.String()
}

var (
	t0      = time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	client1 = netip.MustParseAddrPort("[2001:db8:1::11]:40000")
	client2 = netip.MustParseAddrPort("[2001:db8:1::12]:40001")
)

func TestAPIHandlers(t *testing.T) {
	eng := &fakeEngine{
		sessions: []actors.SessionStatus{
			{Client: client2, Addr: netip.MustParseAddr("192.0.2.10"), Since: t0, LastHeard: t0.Add(time.Second), PacketsIn: 3, BytesIn: 300},
			{Client: client1, Addr: netip.MustParseAddr("192.0.2.2"), Since: t0, LastHeard: t0, PacketsOut: 4, BytesOut: 400, Drops: 1, Queued: 2},
		},
		kick:     actors.KickResult{Client: client1, BannedUntil: t0.Add(time.Hour)},
		reserved: []messages.Static{{Client: netip.MustParseAddr("2001:db8:1::11"), Addr: netip.MustParseAddr("192.0.2.50"), Rate: 20_000_000}, {Client: netip.MustParseAddr("2001:db8:1::12"), Addr: netip.MustParseAddr("192.0.2.51")}},
		pool:     actors.PoolStats{Size: 253, Leased: 2, Reserved: 1, Free: 250},
	}
	tests := []struct {
		name, method, path, body string
		status                   int
		want                     string // the body, or for errors a part of the message
		call                     string // the console call it must make, "" for none
	}{
		{"sessions sorted by addr", "GET", "/api/v1/sessions", "", 200,
			`{"sessions":[{"client":"[2001:db8:1::11]:40000","addr":"192.0.2.2","since":"2026-11-25T12:00:00Z","last_heard":"2026-11-25T12:00:00Z","packets_in":0,"bytes_in":0,"packets_out":4,"bytes_out":400,"drops":1,"queued":2,"rate_in_bps":0,"rate_out_bps":0,"history_in_bps":[],"history_out_bps":[]},` +
				`{"client":"[2001:db8:1::12]:40001","addr":"192.0.2.10","since":"2026-11-25T12:00:00Z","last_heard":"2026-11-25T12:00:01Z","packets_in":3,"bytes_in":300,"packets_out":0,"bytes_out":0,"drops":0,"queued":0,"rate_in_bps":0,"rate_out_bps":0,"history_in_bps":[],"history_out_bps":[]}]}`, ""},
		{"kick", "DELETE", "/api/v1/sessions/192.0.2.2", "", 200, `{"kicked":"192.0.2.2","client":"[2001:db8:1::11]:40000","banned_until":"2026-11-25T13:00:00Z"}`, "kick 192.0.2.2 0s"},
		{"kick with ban", "DELETE", "/api/v1/sessions/192.0.2.2?ban=10m", "", 200, `"banned_until"`, "kick 192.0.2.2 10m0s"},
		{"kick ban 30d is the most", "DELETE", "/api/v1/sessions/192.0.2.2?ban=720h", "", 200, `"kicked"`, "kick 192.0.2.2 720h0m0s"},
		{"kick ban too long", "DELETE", "/api/v1/sessions/192.0.2.2?ban=721h", "", 400, "out of range", ""},
		{"kick ban too short", "DELETE", "/api/v1/sessions/192.0.2.2?ban=500ms", "", 400, "out of range", ""},
		{"kick ban not a duration", "DELETE", "/api/v1/sessions/192.0.2.2?ban=forever", "", 400, "not a duration", ""},
		{"kick ban negative", "DELETE", "/api/v1/sessions/192.0.2.2?ban=-1h", "", 400, "out of range", ""},
		{"kick IPv6 address", "DELETE", "/api/v1/sessions/2001:db8::1", "", 400, "not an IPv4 address", ""},
		{"kick IPv4-mapped", "DELETE", "/api/v1/sessions/::ffff:192.0.2.2", "", 400, "not an IPv4 address", ""},
		{"kick garbage", "DELETE", "/api/v1/sessions/nope", "", 400, "not an IPv4 address", ""},
		{"kick wrong method", "POST", "/api/v1/sessions/192.0.2.2", "", 405, "not allowed", ""},
		{"sessions wrong method", "PUT", "/api/v1/sessions", "{}", 405, "not allowed", ""},
		{"reservations", "GET", "/api/v1/reservations", "", 200,
			`{"reservations":[{"client":"2001:db8:1::11","addr":"192.0.2.50","rate":"20mbit"},{"client":"2001:db8:1::12","addr":"192.0.2.51"}]}`, ""},
		{"reserve", "PUT", "/api/v1/reservations/2001:db8:1::11", `{"addr":"192.0.2.50","rate":"20mbit"}`, 200,
			`{"client":"2001:db8:1::11","addr":"192.0.2.50","rate":"20mbit"}`, "reserve 2001:db8:1::11 192.0.2.50 20000000"},
		{"reserve without rate", "PUT", "/api/v1/reservations/2001:db8:1::11", `{"addr":"192.0.2.50"}`, 200,
			`{"client":"2001:db8:1::11","addr":"192.0.2.50"}`, "reserve 2001:db8:1::11 192.0.2.50 0"},
		{"reserve rate spelled otherwise", "PUT", "/api/v1/reservations/2001:db8:1::11", `{"addr":"192.0.2.50","rate":"20000kbit"}`, 200,
			`{"client":"2001:db8:1::11","addr":"192.0.2.50","rate":"20mbit"}`, "reserve 2001:db8:1::11 192.0.2.50 20000000"},
		{"reserve unknown field", "PUT", "/api/v1/reservations/2001:db8:1::11", `{"addr":"192.0.2.50","rtae":"1mbit"}`, 400, "unknown field", ""},
		{"reserve malformed JSON", "PUT", "/api/v1/reservations/2001:db8:1::11", `{"addr":`, 400, "bad JSON", ""},
		{"reserve two objects", "PUT", "/api/v1/reservations/2001:db8:1::11", `{"addr":"192.0.2.50"}{}`, 400, "more than one", ""},
		{"reserve empty body", "PUT", "/api/v1/reservations/2001:db8:1::11", ``, 400, "empty request body", ""},
		{"reserve not an object", "PUT", "/api/v1/reservations/2001:db8:1::11", `["192.0.2.50"]`, 400, "bad JSON", ""},
		{"reserve no addr", "PUT", "/api/v1/reservations/2001:db8:1::11", `{"rate":"1mbit"}`, 400, "addr", ""},
		{"reserve IPv6 addr", "PUT", "/api/v1/reservations/2001:db8:1::11", `{"addr":"2001:db8::50"}`, 400, "not an IPv4 address", ""},
		{"reserve bad rate", "PUT", "/api/v1/reservations/2001:db8:1::11", `{"addr":"192.0.2.50","rate":"fast"}`, 400, "rate", ""},
		{"reserve IPv4 client", "PUT", "/api/v1/reservations/192.0.2.9", `{"addr":"192.0.2.50"}`, 400, "not a client IPv6 address", ""},
		{"reserve IPv4-mapped client", "PUT", "/api/v1/reservations/::ffff:192.0.2.9", `{"addr":"192.0.2.50"}`, 400, "not a client IPv6 address", ""},
		{"reserve zoned client", "PUT", "/api/v1/reservations/fe80::1%25eth0", `{"addr":"192.0.2.50"}`, 400, "not a client IPv6 address", ""},
		{"reserve oversize body", "PUT", "/api/v1/reservations/2001:db8:1::11", `{"addr":"192.0.2.50","rate":"` + strings.Repeat("1", maxBody) + `"}`, 413, "larger than", ""},
		{"reservations wrong method", "POST", "/api/v1/reservations", "{}", 405, "not allowed", ""},
		{"unreserve", "DELETE", "/api/v1/reservations/2001:db8:1::11", "", 204, "", "unreserve 2001:db8:1::11"},
		{"unreserve IPv4", "DELETE", "/api/v1/reservations/192.0.2.50", "", 400, "not a client IPv6 address", ""},
		{"pool", "GET", "/api/v1/pool", "", 200, `{"size":253,"leased":2,"reserved":1,"free":250}`, ""},
		{"unknown API path", "GET", "/api/v2/pool", "", 404, "no such API path", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			eng.mu.Lock()
			eng.calls = nil
			eng.mu.Unlock()
			ta := newTestAdmin(t, eng, nil, nil)
			status, hdr, body := ta.do(tc.method, tc.path, tc.body)
			if status != tc.status {
				t.Fatalf("%s %s = %d %s, want %d", tc.method, tc.path, status, body, tc.status)
			}
			switch {
			case status == http.StatusNoContent:
				if body != "" {
					t.Errorf("204 with body %q", body)
				}
			case status >= 400:
				var e map[string]string
				if err := json.Unmarshal([]byte(body), &e); err != nil || len(e) != 1 || !strings.Contains(e["error"], tc.want) {
					t.Errorf("error body %q, want {\"error\": ...%s...}", body, tc.want)
				}
			case strings.HasPrefix(tc.want, "{"):
				if got := strings.TrimSpace(body); got != tc.want {
					t.Errorf("body\n%s\nwant\n%s", got, tc.want)
				}
			default:
				if !strings.Contains(body, tc.want) {
					t.Errorf("body %s lacks %s", body, tc.want)
				}
			}
			if ct := hdr.Get("Content-Type"); status != http.StatusNoContent && !strings.HasPrefix(ct, "application/json") {
				t.Errorf("Content-Type %q, want JSON", ct)
			}
			calls := eng.recorded()
			if tc.call == "" && len(calls) > 0 || tc.call != "" && (len(calls) != 1 || calls[0] != tc.call) {
				t.Errorf("console calls %q, want %q", calls, tc.call)
			}
		})
	}
}

// TestAPIEngineErrors maps the console's errors to statuses, keeping the
// engine's message.
func TestAPIEngineErrors(t *testing.T) {
	tests := []struct {
		err          error
		method, path string
		body         string
		status       int
	}{
		{fmt.Errorf("192.0.2.9: %w", actors.ErrNoSession), "DELETE", "/api/v1/sessions/192.0.2.9", "", 404},
		{fmt.Errorf("192.0.2.1 is the server's: %w", actors.ErrBadReservation), "PUT", "/api/v1/reservations/2001:db8::5", `{"addr":"192.0.2.1"}`, 400},
		{fmt.Errorf("192.0.2.50 is reserved for 2001:db8::6: %w", actors.ErrReservationConflict), "PUT", "/api/v1/reservations/2001:db8::5", `{"addr":"192.0.2.50"}`, 409},
		{fmt.Errorf("2001:db8::5: %w", actors.ErrNoReservation), "DELETE", "/api/v1/reservations/2001:db8::5", "", 404},
		{errors.New("failed to query 4over6d/pool: future: timeout"), "GET", "/api/v1/pool", "", 503},
		{errors.New("failed to query 4over6d: future: timeout"), "GET", "/api/v1/sessions", "", 503},
	}
	for _, tc := range tests {
		t.Run(tc.err.Error(), func(t *testing.T) {
			ta := newTestAdmin(t, &fakeEngine{err: tc.err}, nil, nil)
			status, _, body := ta.do(tc.method, tc.path, tc.body)
			var e map[string]string
			if status != tc.status || json.Unmarshal([]byte(body), &e) != nil || e["error"] != tc.err.Error() {
				t.Fatalf("%s %s = %d %s, want %d {\"error\": %q}", tc.method, tc.path, status, body, tc.status, tc.err)
			}
		})
	}
}

// TestAPISessionsCarryRates checks that the list shows what the sampler
// measured, matched to the right session.
func TestAPISessionsCarryRates(t *testing.T) {
	eng := &fakeEngine{}
	ta := newTestAdmin(t, eng, nil, nil)
	eng.setSessions(actors.SessionStatus{Client: client2, Addr: netip.MustParseAddr("192.0.2.3"), Since: t0},
		actors.SessionStatus{Client: client1, Addr: netip.MustParseAddr("192.0.2.2"), Since: t0})
	ta.sample(0)
	eng.setSessions(actors.SessionStatus{Client: client2, Addr: netip.MustParseAddr("192.0.2.3"), Since: t0},
		actors.SessionStatus{Client: client1, Addr: netip.MustParseAddr("192.0.2.2"), Since: t0, BytesIn: 1000, BytesOut: 250})
	ta.sample(time.Second)
	_, _, body := ta.do("GET", "/api/v1/sessions", "")
	var doc struct{ Sessions []apiSession }
	if err := json.Unmarshal([]byte(body), &doc); err != nil || len(doc.Sessions) != 2 {
		t.Fatalf("sessions %s: %v", body, err)
	}
	if s := doc.Sessions[0]; s.Client != client1.String() || s.RateInBps != 8000 || s.RateOutBps != 2000 {
		t.Errorf("first session %+v, want %v at 8000 bit/s in and 2000 out", s, client1)
	}
	if s := doc.Sessions[1]; s.RateInBps != 0 || s.RateOutBps != 0 {
		t.Errorf("idle session has rates %d/%d", s.RateInBps, s.RateOutBps)
	}
}

// TestMutatingCallsAreLogged checks the audit line: who, what, outcome;
// reads are not logged.
func TestMutatingCallsAreLogged(t *testing.T) {
	eng := &fakeEngine{kick: actors.KickResult{Client: client1}}
	ta := newTestAdmin(t, eng, nil, nil)
	ta.do("GET", "/api/v1/pool", "")
	ta.do("DELETE", "/api/v1/sessions/192.0.2.2", "")
	ta.do("PUT", "/api/v1/reservations/2001:db8::5", `{"addr":"nope"}`)
	logs := ta.logs.String()
	for _, want := range []string{
		`msg="admin call" remote=[2001:db8:99::1]:51000 method=DELETE path=/api/v1/sessions/192.0.2.2 status=200`,
		`method=PUT path=/api/v1/reservations/2001:db8::5 status=400 error="addr \"nope\" is not an IPv4 address"`,
	} {
		if !strings.Contains(logs, want) {
			t.Errorf("log lacks %s:\n%s", want, logs)
		}
	}
	if strings.Contains(logs, "/api/v1/pool") {
		t.Errorf("a read was logged as a call:\n%s", logs)
	}
	_, _, metrics := ta.do("GET", "/metrics", "")
	if !strings.Contains(metrics, `fourover6d_admin_refused_total{reason="bad_request"} 1`) {
		t.Errorf("bad request not counted:\n%s", grepLines(metrics, "admin_refused"))
	}
}

func grepLines(s, sub string) string {
	var out bytes.Buffer
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out.WriteString(l + "\n")
		}
	}
	return out.String()
}

// fleetOfTwo is a fleet as the engine reports it: nodes in no particular
// order, lists it has none of left nil.
func fleetOfTwo() *actors.FleetStatus {
	return &actors.FleetStatus{Self: "n1", State: "ok", Pool: "192.0.2.0/24", Nodes: []actors.FleetNode{
		{Name: "n2", Addr: netip.MustParseAddr("2001:db8:1::2"), UpSince: t0.Add(time.Minute),
			Blocks: []netip.Prefix{netip.MustParsePrefix("192.0.2.64/26")}, Claims: []netip.Addr{netip.MustParseAddr("192.0.2.7")}, Sessions: 2, Leased: 3},
		{Name: "n1", Addr: netip.MustParseAddr("2001:db8:1::1"), UpSince: t0, Self: true},
	}}
}

// TestAPIFleet checks GET /api/v1/fleet: the nodes sorted by name with []
// for empty lists, a 404 naming -etcd on a single node, 503 when the
// engine does not answer.
func TestAPIFleet(t *testing.T) {
	tests := []struct {
		name, method string
		eng          *fakeEngine
		status       int
		want         string // the body, or for errors a part of the message
	}{
		{"two nodes", "GET", &fakeEngine{fleet: fleetOfTwo()}, 200,
			`{"self":"n1","state":"ok","pool":"192.0.2.0/24","nodes":[` +
				`{"name":"n1","addr":"2001:db8:1::1","up_since":"2026-11-25T12:00:00Z","blocks":[],"claims":[],"sessions":0,"leased":0,"self":true},` +
				`{"name":"n2","addr":"2001:db8:1::2","up_since":"2026-11-25T12:01:00Z","blocks":["192.0.2.64/26"],"claims":["192.0.2.7"],"sessions":2,"leased":3,"self":false}]}`},
		{"read-only, no nodes", "GET", &fakeEngine{fleet: &actors.FleetStatus{Self: "n1", State: "read-only", Pool: "192.0.2.0/24"}}, 200,
			`{"self":"n1","state":"read-only","pool":"192.0.2.0/24","nodes":[]}`},
		{"single node", "GET", &fakeEngine{}, 404, "-etcd"},
		{"engine silent", "GET", &fakeEngine{err: errors.New("failed to query 4over6d/pool: future: timeout")}, 503, "timeout"},
		{"wrong method", "DELETE", &fakeEngine{fleet: fleetOfTwo()}, 405, "not allowed"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ta := newTestAdmin(t, tc.eng, nil, nil)
			status, hdr, body := ta.do(tc.method, "/api/v1/fleet", "")
			if status != tc.status {
				t.Fatalf("%s /api/v1/fleet = %d %s, want %d", tc.method, status, body, tc.status)
			}
			if ct := hdr.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
				t.Errorf("Content-Type %q, want JSON", ct)
			}
			if status != http.StatusOK {
				var e map[string]string
				if err := json.Unmarshal([]byte(body), &e); err != nil || len(e) != 1 || !strings.Contains(e["error"], tc.want) {
					t.Errorf("error body %q, want {\"error\": ...%s...}", body, tc.want)
				}
				return
			}
			if got := strings.TrimSpace(body); got != tc.want {
				t.Errorf("body\n%s\nwant\n%s", got, tc.want)
			}
		})
	}
}
