package main

// The management API under /api/v1/ (see README "Management API"): JSON in
// and out, errors as {"error": "..."}. The handlers only translate between
// HTTP and the engine's console calls; the engine decides.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/4over6d/4over6d/actors"
	"github.com/4over6d/4over6d/messages"
)

// console is what the management API asks of the engine. It is an
// interface so that the handlers are tested against a fake; the real one is
// *actors.Server.
type console interface {
	// Sessions returns a snapshot of every session.
	Sessions() ([]actors.SessionStatus, error)
	// Kick closes the session holding addr (ErrNoSession when none);
	// ban > 0 also refuses the client's source for that long.
	Kick(addr netip.Addr, ban time.Duration) (actors.KickResult, error)
	// Reservations lists the static reservations, sorted by client.
	Reservations() ([]messages.Static, error)
	// Reserve adds or replaces r.Client's reservation
	// (ErrBadReservation, ErrReservationConflict).
	Reserve(r messages.Static) error
	// Unreserve removes client's reservation (ErrNoReservation).
	Unreserve(client netip.Addr) error
	// Pool reports the pool's occupancy.
	Pool() (actors.PoolStats, error)
	// Fleet reports every node of the fleet (ErrNoFleet on a single
	// node).
	Fleet() (actors.FleetStatus, error)
}

var _ console = (*actors.Server)(nil)

// engine is everything the admin endpoint needs of the running server:
// the console calls plus the counters, the health check and the fault
// injection it already served.
type engine interface {
	console
	Metrics() *actors.Metrics
	Health() error
	InjectPanic(ctx context.Context, kind string, addr netip.Addr) error
}

// maxBody bounds a request body: a reservation is a few dozen bytes, and
// the endpoint must not buffer whatever a client cares to send.
const maxBody = 64 << 10

// Bounds of ?ban= on a kick: under a second is no ban worth asking for,
// and over 30 days is a job for -allow.
const (
	minBan = time.Second
	maxBan = 30 * 24 * time.Hour
)

// apiSession is one entry of GET /api/v1/sessions: /status's fields plus
// the rates the sampler measured.
type apiSession struct {
	sessionStatus
	RateInBps     uint64   `json:"rate_in_bps"`
	RateOutBps    uint64   `json:"rate_out_bps"`
	HistoryInBps  []uint64 `json:"history_in_bps"`
	HistoryOutBps []uint64 `json:"history_out_bps"`
}

// apiKick answers a kick; BannedUntil is empty (and left out) without a ban.
type apiKick struct {
	Kicked      string `json:"kicked"`
	Client      string `json:"client"`
	BannedUntil string `json:"banned_until,omitempty"`
}

// apiReservation is one reservation as the API shows it.
type apiReservation struct {
	Client string `json:"client"`
	Addr   string `json:"addr"`
	Rate   string `json:"rate,omitempty"`
}

// reserveBody is the body of PUT /api/v1/reservations/{client}.
type reserveBody struct {
	Addr string `json:"addr"`
	Rate string `json:"rate"`
}

// apiPool answers GET /api/v1/pool.
type apiPool struct {
	Size     int `json:"size"`
	Leased   int `json:"leased"`
	Reserved int `json:"reserved"`
	Free     int `json:"free"`
}

// apiError is an error with the status it answers with.
type apiError struct {
	status int
	msg    string
}

func (e *apiError) Error() string { return e.msg }

func badRequest(format string, args ...any) error {
	return &apiError{http.StatusBadRequest, fmt.Sprintf(format, args...)}
}

// apiRoutes mounts the management API on mux. Every path also has a
// method-less pattern, so a wrong method gets a JSON 405 instead of the
// mux's plain-text one, and anything else under /api/ a JSON 404.
func (a *admin) apiRoutes(mux *http.ServeMux) {
	routes := []struct {
		path    string
		methods map[string]func(*http.Request) (int, any, error)
	}{
		{"/api/v1/sessions", map[string]func(*http.Request) (int, any, error){"GET": a.listSessions}},
		{"/api/v1/sessions/{ipv4}", map[string]func(*http.Request) (int, any, error){"DELETE": a.kick}},
		{"/api/v1/reservations", map[string]func(*http.Request) (int, any, error){"GET": a.listReservations}},
		{"/api/v1/reservations/{client}", map[string]func(*http.Request) (int, any, error){"PUT": a.reserve, "DELETE": a.unreserve}},
		{"/api/v1/pool", map[string]func(*http.Request) (int, any, error){"GET": a.poolStats}},
		{"/api/v1/fleet", map[string]func(*http.Request) (int, any, error){"GET": a.fleet}},
	}
	for _, rt := range routes {
		var allow []string
		for method, h := range rt.methods {
			mux.Handle(method+" "+rt.path, apiHandler(h))
			allow = append(allow, method)
		}
		slices.Sort(allow)
		mux.Handle(rt.path, methodNotAllowed(strings.Join(allow, ", ")))
	}
	mux.Handle("/api/", apiHandler(func(r *http.Request) (int, any, error) {
		return 0, nil, &apiError{http.StatusNotFound, "no such API path: " + r.URL.Path}
	}))
}

// apiHandler writes what h returns: the body as JSON with its status, or
// the error as {"error": ...} with the status it maps to.
func apiHandler(h func(*http.Request) (int, any, error)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		status, body, err := h(r)
		if err != nil {
			writeError(w, err)
			return
		}
		writeJSON(w, status, body)
	})
}

func methodNotAllowed(allow string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Allow", allow)
		writeError(w, &apiError{http.StatusMethodNotAllowed, fmt.Sprintf("%s is not allowed on %s (allowed: %s)", r.Method, r.URL.Path, allow)})
	})
}

func writeJSON(w http.ResponseWriter, status int, body any) {
	if body == nil {
		w.WriteHeader(status)
		return
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(body)
}

// writeError answers {"error": msg} with the status err maps to: its own
// for an apiError, the console's sentinels by meaning, 503 when the engine
// did not answer.
func writeError(w http.ResponseWriter, err error) {
	status := http.StatusServiceUnavailable
	var ae *apiError
	switch {
	case errors.As(err, &ae):
		status = ae.status
	case errors.Is(err, actors.ErrNoSession), errors.Is(err, actors.ErrNoReservation), errors.Is(err, actors.ErrNoFleet):
		status = http.StatusNotFound
	case errors.Is(err, actors.ErrBadReservation):
		status = http.StatusBadRequest
	case errors.Is(err, actors.ErrReservationConflict):
		status = http.StatusConflict
	case errors.Is(err, actors.ErrFleetUnavailable):
		status = http.StatusServiceUnavailable
	}
	writeJSON(w, status, map[string]string{"error": err.Error()})
}

func (a *admin) listSessions(r *http.Request) (int, any, error) {
	sessions, err := a.srv.Sessions()
	if err != nil {
		return 0, nil, err
	}
	rates := a.rates.rates(r.Context())
	slices.SortFunc(sessions, func(x, y actors.SessionStatus) int {
		if c := x.Addr.Compare(y.Addr); c != 0 {
			return c
		}
		return x.Client.Compare(y.Client)
	})
	out := make([]apiSession, 0, len(sessions))
	for _, s := range sessions {
		st := toSessionStatus(s)
		rt := rates[keyOf(s)]
		out = append(out, apiSession{
			sessionStatus: st, RateInBps: rt.in, RateOutBps: rt.out,
			HistoryInBps: orEmpty(rt.histIn), HistoryOutBps: orEmpty(rt.histOut),
		})
	}
	return http.StatusOK, map[string][]apiSession{"sessions": out}, nil
}

// orEmpty makes a missing history an empty JSON array rather than null.
func orEmpty(h []uint64) []uint64 {
	if h == nil {
		return []uint64{}
	}
	return h
}

func (a *admin) kick(r *http.Request) (int, any, error) {
	addr, err := parseIPv4Path(r.PathValue("ipv4"))
	if err != nil {
		return 0, nil, err
	}
	var ban time.Duration
	if s := r.URL.Query().Get("ban"); s != "" {
		if ban, err = time.ParseDuration(s); err != nil {
			return 0, nil, badRequest("ban %q is not a duration like 10m or 24h", s)
		}
		if ban < minBan || ban > maxBan {
			return 0, nil, badRequest("ban %v out of range %v-%v", ban, minBan, maxBan)
		}
	}
	res, err := a.srv.Kick(addr, ban)
	if err != nil {
		return 0, nil, err
	}
	out := apiKick{Kicked: addr.String(), Client: res.Client.String()}
	if !res.BannedUntil.IsZero() {
		out.BannedUntil = res.BannedUntil.UTC().Format(time.RFC3339)
	}
	return http.StatusOK, out, nil
}

func (a *admin) listReservations(*http.Request) (int, any, error) {
	list, err := a.srv.Reservations()
	if err != nil {
		return 0, nil, err
	}
	out := make([]apiReservation, 0, len(list))
	for _, s := range list {
		out = append(out, toAPIReservation(s))
	}
	return http.StatusOK, map[string][]apiReservation{"reservations": out}, nil
}

func toAPIReservation(s messages.Static) apiReservation {
	r := apiReservation{Client: s.Client.String(), Addr: s.Addr.String()}
	if s.Rate != 0 {
		r.Rate = actors.FormatRate(s.Rate)
	}
	return r
}

func (a *admin) reserve(r *http.Request) (int, any, error) {
	client, err := parseIPv6Path(r.PathValue("client"))
	if err != nil {
		return 0, nil, err
	}
	var body reserveBody
	if err := decodeBody(r, &body); err != nil {
		return 0, nil, err
	}
	st := messages.Static{Client: client}
	if body.Addr == "" {
		return 0, nil, badRequest(`"addr" is required: the IPv4 address to reserve`)
	}
	if st.Addr, err = netip.ParseAddr(body.Addr); err != nil || !st.Addr.Is4() {
		return 0, nil, badRequest("addr %q is not an IPv4 address", body.Addr)
	}
	if body.Rate != "" {
		if st.Rate, err = actors.ParseRate(body.Rate); err != nil {
			return 0, nil, badRequest("rate %q: %v", body.Rate, err)
		}
	}
	if err := a.srv.Reserve(st); err != nil {
		return 0, nil, err
	}
	return http.StatusOK, toAPIReservation(st), nil
}

func (a *admin) unreserve(r *http.Request) (int, any, error) {
	client, err := parseIPv6Path(r.PathValue("client"))
	if err != nil {
		return 0, nil, err
	}
	if err := a.srv.Unreserve(client); err != nil {
		return 0, nil, err
	}
	return http.StatusNoContent, nil, nil
}

func (a *admin) poolStats(*http.Request) (int, any, error) {
	p, err := a.srv.Pool()
	if err != nil {
		return 0, nil, err
	}
	return http.StatusOK, apiPool{Size: p.Size, Leased: p.Leased, Reserved: p.Reserved, Free: p.Free}, nil
}

// fleet answers GET /api/v1/fleet: the nodes sorted by name, lists that
// are empty as [] rather than null. A single node answers 404, its error
// naming -etcd.
func (a *admin) fleet(*http.Request) (int, any, error) {
	st, err := a.srv.Fleet()
	if err != nil {
		return 0, nil, err
	}
	nodes := make([]actors.FleetNode, 0, len(st.Nodes))
	for _, n := range st.Nodes {
		if n.Blocks == nil {
			n.Blocks = []netip.Prefix{}
		}
		if n.Claims == nil {
			n.Claims = []netip.Addr{}
		}
		nodes = append(nodes, n)
	}
	slices.SortFunc(nodes, func(x, y actors.FleetNode) int { return strings.Compare(x.Name, y.Name) })
	st.Nodes = nodes
	return http.StatusOK, st, nil
}

// decodeBody reads one JSON object into v: at most maxBody bytes (413),
// no unknown fields and nothing after the object (400), so that a typo
// in a field name is an error rather than a silently ignored setting.
func decodeBody(r *http.Request, v any) error {
	dec := json.NewDecoder(http.MaxBytesReader(nil, r.Body, maxBody))
	dec.DisallowUnknownFields()
	err := dec.Decode(v)
	if err == nil {
		if dec.Decode(&struct{}{}) != io.EOF {
			err = errors.New("more than one JSON value")
		}
	}
	var tooBig *http.MaxBytesError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &tooBig):
		return &apiError{http.StatusRequestEntityTooLarge, fmt.Sprintf("request body larger than %d bytes", maxBody)}
	case errors.Is(err, io.EOF):
		return badRequest("empty request body: want a JSON object")
	}
	return badRequest("bad JSON body: %v", err)
}

// parseIPv4Path takes the IPv4 address of a path; an IPv6 one (also an
// IPv4-mapped one) is the wrong family.
func parseIPv4Path(s string) (netip.Addr, error) {
	a, err := netip.ParseAddr(s)
	if err != nil || !a.Is4() {
		return netip.Addr{}, badRequest("%q is not an IPv4 address", s)
	}
	return a, nil
}

// parseIPv6Path takes a client's IPv6 address of a path: no zone, not an
// IPv4 address in either spelling (clients reach the server over IPv6).
func parseIPv6Path(s string) (netip.Addr, error) {
	a, err := netip.ParseAddr(s)
	if err != nil || !a.Is6() || a.Is4In6() || a.Zone() != "" {
		return netip.Addr{}, badRequest("%q is not a client IPv6 address", s)
	}
	return a, nil
}
