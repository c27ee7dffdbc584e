package main

// A canned admin API for the browser test of the dashboard: it answers the
// /api/v1 calls of docs' contract with data the test changes as it goes
// (traffic starting, a kicked session reconnecting), and can be stopped
// and started again on the same address to play an unreachable server.

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

var fakePool = netip.MustParsePrefix("192.0.2.0/24")

type fakeSession struct {
	client, addr      string
	since, lastHeard  time.Time
	bytesIn, bytesOut uint64
	inBps, outBps     uint64
	histIn, histOut   []uint64
	drops             uint64
	sending           bool // traffic grows its rates and history per poll
}

type fakeReservation struct {
	Client string `json:"client"`
	Addr   string `json:"addr"`
	Rate   string `json:"rate,omitempty"`
}

// fakeConsole is the API's state. The browser's requests and the test
// touch it from different goroutines, hence the mutex (test code only).
type fakeConsole struct {
	mu           sync.Mutex
	token        string // "" = open
	sessions     map[string]*fakeSession
	reservations map[string]fakeReservation
	kicks        []string // "ADDR ban=DURATION" per DELETE that kicked
	authSeen     []string // Authorization headers of API requests
	failKick     bool     // answer the next kick with 404
	polls        int
}

// newFakeConsole starts with two sessions (one idle, one busy for an hour)
// and one reservation, all in documentation ranges.
func newFakeConsole() *fakeConsole {
	now := time.Now()
	busy := make([]uint64, 60)
	for i := range busy {
		busy[i] = uint64(2_000_000 + 1_500_000*((i*7)%11)/10 + 40_000*i)
	}
	f := &fakeConsole{sessions: map[string]*fakeSession{}, reservations: map[string]fakeReservation{}}
	f.sessions["192.0.2.2"] = &fakeSession{client: "[2001:db8:1::11]:40000", addr: "192.0.2.2",
		since: now.Add(-4*time.Minute - 12*time.Second), lastHeard: now, histIn: make([]uint64, 48), histOut: make([]uint64, 48)}
	f.sessions["192.0.2.3"] = &fakeSession{client: "[2001:db8:2::12]:40001", addr: "192.0.2.3",
		since: now.Add(-63 * time.Minute), lastHeard: now, bytesIn: 412_000_000, bytesOut: 2_930_000_000,
		inBps: 480_000, outBps: 4_400_000, histIn: scale(busy, 1, 9), histOut: busy, drops: 3}
	f.reservations["2001:db8:3::13"] = fakeReservation{Client: "2001:db8:3::13", Addr: "192.0.2.50", Rate: "20mbit"}
	return f
}

func scale(v []uint64, num, den uint64) []uint64 {
	out := make([]uint64, len(v))
	for i, x := range v {
		out[i] = x * num / den
	}
	return out
}

// startTraffic makes 192.0.2.2 send and receive from the next poll on.
func (f *fakeConsole) startTraffic() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.sessions["192.0.2.2"].sending = true
}

// reconnect brings a kicked session back, as its client would, with a
// new port and connection time.
func (f *fakeConsole) reconnect(addr, client string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	now := time.Now()
	f.sessions[addr] = &fakeSession{client: client, addr: addr, since: now, lastHeard: now}
}

func (f *fakeConsole) setToken(token string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.token = token
}

func (f *fakeConsole) failNextKick() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.failKick = true
}

func (f *fakeConsole) kicked() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.kicks)
}

func (f *fakeConsole) authorizations() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.authSeen)
}

// handler serves the dashboard as the admin endpoint mounts it, and the
// fake API beside it.
func (f *fakeConsole) handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/", dashboardHandler())
	api := http.NewServeMux()
	api.HandleFunc("GET /api/v1/sessions", f.getSessions)
	api.HandleFunc("DELETE /api/v1/sessions/{addr}", f.kick)
	api.HandleFunc("GET /api/v1/pool", f.pool)
	api.HandleFunc("GET /api/v1/reservations", f.getReservations)
	api.HandleFunc("PUT /api/v1/reservations/{client}", f.reserve)
	api.HandleFunc("DELETE /api/v1/reservations/{client}", f.unreserve)
	mux.Handle("/api/", f.authorize(api))
	return mux
}

func (f *fakeConsole) authorize(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		want := f.token
		f.authSeen = append(f.authSeen, r.Header.Get("Authorization"))
		f.mu.Unlock()
		got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		switch {
		case want == "":
		case !ok:
			fakeError(w, http.StatusUnauthorized, "admin token required")
			return
		case got != want:
			fakeError(w, http.StatusForbidden, "wrong admin token")
			return
		}
		next.ServeHTTP(w, r)
	})
}

func fakeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func fakeError(w http.ResponseWriter, status int, msg string) {
	fakeJSON(w, status, map[string]string{"error": msg})
}

func (f *fakeConsole) getSessions(w http.ResponseWriter, _ *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.polls++
	now := time.Now()
	out := []map[string]any{}
	for _, addr := range slices.Sorted(maps.Keys(f.sessions)) {
		s := f.sessions[addr]
		if s.sending {
			s.inBps = uint64(1_800_000 + 90_000*(f.polls%7))
			s.outBps = uint64(6_100_000 + 350_000*(f.polls%5))
			s.histIn = fakeAppendHistory(s.histIn, s.inBps)
			s.histOut = fakeAppendHistory(s.histOut, s.outBps)
			s.bytesIn += s.inBps / 8
			s.bytesOut += s.outBps / 8
			s.lastHeard = now
		}
		if s.inBps > 0 || s.outBps > 0 {
			s.lastHeard = now
		}
		out = append(out, map[string]any{
			"client": s.client, "addr": s.addr, "since": s.since.UTC().Format(time.RFC3339),
			"last_heard": s.lastHeard.UTC().Format(time.RFC3339),
			"packets_in": s.bytesIn / 900, "bytes_in": s.bytesIn, "packets_out": s.bytesOut / 1200, "bytes_out": s.bytesOut,
			"rate_in_bps": s.inBps, "rate_out_bps": s.outBps, "drops": s.drops, "queued": 0,
			"history_in_bps": s.histIn, "history_out_bps": s.histOut,
		})
	}
	fakeJSON(w, http.StatusOK, map[string]any{"sessions": out})
}

func fakeAppendHistory(h []uint64, v uint64) []uint64 {
	h = append(h, v)
	if len(h) > 60 {
		h = h[len(h)-60:]
	}
	return h
}

func (f *fakeConsole) kick(w http.ResponseWriter, r *http.Request) {
	addr := r.PathValue("addr")
	if _, err := netip.ParseAddr(addr); err != nil {
		fakeError(w, http.StatusBadRequest, "bad address "+addr)
		return
	}
	var ban time.Duration
	if s := r.URL.Query().Get("ban"); s != "" {
		var err error
		if ban, err = time.ParseDuration(s); err != nil || ban < time.Second || ban > 30*24*time.Hour {
			fakeError(w, http.StatusBadRequest, "bad ban duration "+s)
			return
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	s, ok := f.sessions[addr]
	if !ok || f.failKick {
		f.failKick = false
		fakeError(w, http.StatusNotFound, "no session holds "+addr)
		return
	}
	delete(f.sessions, addr)
	f.kicks = append(f.kicks, fmt.Sprintf("%s ban=%s", addr, r.URL.Query().Get("ban")))
	doc := map[string]string{"kicked": addr, "client": s.client}
	if ban > 0 {
		doc["banned_until"] = time.Now().Add(ban).UTC().Format(time.RFC3339)
	}
	fakeJSON(w, http.StatusOK, doc)
}

func (f *fakeConsole) pool(w http.ResponseWriter, _ *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	reservedIdle := 0
	for _, r := range f.reservations {
		if _, leased := f.sessions[r.Addr]; !leased {
			reservedIdle++
		}
	}
	fakeJSON(w, http.StatusOK, map[string]int{"size": 253, "leased": len(f.sessions),
		"reserved": len(f.reservations), "free": 253 - len(f.sessions) - reservedIdle})
}

func (f *fakeConsole) getReservations(w http.ResponseWriter, _ *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := []fakeReservation{}
	for _, c := range slices.Sorted(maps.Keys(f.reservations)) {
		out = append(out, f.reservations[c])
	}
	fakeJSON(w, http.StatusOK, map[string]any{"reservations": out})
}

func (f *fakeConsole) reserve(w http.ResponseWriter, r *http.Request) {
	client, err := netip.ParseAddr(r.PathValue("client"))
	if err != nil || !client.Is6() || client.Is4In6() {
		fakeError(w, http.StatusBadRequest, "client must be an IPv6 address, not "+r.PathValue("client"))
		return
	}
	var body struct {
		Addr string `json:"addr"`
		Rate string `json:"rate"`
	}
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 64<<10))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&body); err != nil {
		fakeError(w, http.StatusBadRequest, "bad request body: "+err.Error())
		return
	}
	addr, err := netip.ParseAddr(body.Addr)
	if err != nil || !addr.Is4() || !fakePool.Contains(addr) || addr.As4()[3] == 0 || addr.As4()[3] >= 255 {
		fakeError(w, http.StatusBadRequest, fmt.Sprintf("%q is outside the pool %s", body.Addr, fakePool))
		return
	}
	if addr.As4()[3] == 1 {
		fakeError(w, http.StatusBadRequest, addr.String()+" is the server's own address")
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, other := range f.reservations {
		if other.Addr == addr.String() && other.Client != client.String() {
			fakeError(w, http.StatusConflict, addr.String()+" is reserved for "+other.Client)
			return
		}
	}
	res := fakeReservation{Client: client.String(), Addr: addr.String(), Rate: body.Rate}
	f.reservations[res.Client] = res
	fakeJSON(w, http.StatusOK, res)
}

func (f *fakeConsole) unreserve(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.reservations[r.PathValue("client")]; !ok {
		fakeError(w, http.StatusNotFound, "no reservation for "+r.PathValue("client"))
		return
	}
	delete(f.reservations, r.PathValue("client"))
	w.WriteHeader(http.StatusNoContent)
}

// restartableServer serves a handler on one loopback address and can be
// stopped and started again there, so the page sees the server go away and
// come back.
type restartableServer struct {
	t       *testing.T
	addr    string
	handler http.Handler
	srv     *http.Server
	done    chan struct{}
}

func newRestartableServer(t *testing.T, h http.Handler) *restartableServer {
	s := &restartableServer{t: t, addr: "127.0.0.1:0", handler: h}
	s.start()
	t.Cleanup(s.stop)
	return s
}

// URL is the server's base URL.
func (s *restartableServer) URL() string { return "http://" + s.addr + "/" }

func (s *restartableServer) start() {
	s.t.Helper()
	ln, err := net.Listen("tcp4", s.addr)
	if err != nil {
		s.t.Fatalf("listen on %s: %v", s.addr, err)
	}
	s.addr = ln.Addr().String()
	s.srv = &http.Server{Handler: s.handler, ReadHeaderTimeout: 5 * time.Second}
	s.done = make(chan struct{})
	go func(srv *http.Server, done chan struct{}) {
		defer close(done)
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.t.Errorf("fake admin endpoint: %v", err)
		}
	}(s.srv, s.done)
}

// stop closes the listener and every connection (the browser's too).
func (s *restartableServer) stop() {
	if s.srv == nil {
		return
	}
	_ = s.srv.Close()
	<-s.done
	s.srv = nil
}
