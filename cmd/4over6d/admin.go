package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"net/netip"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/4over6d/4over6d/actors"
)

// defaultAdmin is loopback-only, where the admin endpoint needs no token.
const defaultAdmin = "127.0.0.1:9604"

// statusDoc is the JSON of /status, read back by `4over6d status`.
type statusDoc struct {
	Listen string `json:"listen"`
	TUN    string `json:"tun"`
	// TUNQueues is how many queues the TUN has (-tun-queues).
	TUNQueues int             `json:"tun_queues,omitempty"`
	Pool      string          `json:"pool"`
	Leased    int64           `json:"leased"`
	Size      int64           `json:"size"`
	Sessions  []sessionStatus `json:"sessions"`
}

type sessionStatus struct {
	Client     string    `json:"client"`
	Addr       string    `json:"addr"`
	Since      time.Time `json:"since"`
	LastHeard  time.Time `json:"last_heard"`
	PacketsIn  uint64    `json:"packets_in"`
	BytesIn    uint64    `json:"bytes_in"`
	PacketsOut uint64    `json:"packets_out"`
	BytesOut   uint64    `json:"bytes_out"`
	Drops      uint64    `json:"drops"`
	Queued     int64     `json:"queued"`
}

// admin serves /metrics, /status, /healthz and the management API for one
// running server.
type admin struct {
	srv    engine
	listen string
	tun    string
	// tunQueues is the TUN's queue count, for /status.
	tunQueues int
	pool      netip.Prefix
	faults    bool // serve POST /debug/panic
	pprof     bool // serve /debug/pprof/
	// offload, when set, adds the TUN's offload counters to /metrics.
	offload *offloadCollector
	// token, when set, is required of every request but /metrics and
	// /healthz (auth.go).
	token []byte
	// root, when set, serves / and whatever no other route takes (the
	// dashboard and its assets).
	root http.Handler
	log  *slog.Logger
	// rates are measured by the sampler that serveAdmin runs.
	rates *sampler
}

// handler is the endpoint: its routes behind the token check (when there
// is a token) behind the log of mutating calls, so refused calls are
// logged too.
func (a *admin) handler() http.Handler {
	reg := prometheus.NewRegistry()
	reg.MustRegister(actors.NewCollector(a.srv.Metrics()), collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	if a.offload != nil {
		reg.MustRegister(a.offload)
	}
	m := newAdminMetrics(reg)
	return logMutations(requireToken(a.token, a.routes(reg), m, a.log), m, a.log)
}

// routes maps every path of the endpoint; reg is what /metrics serves.
func (a *admin) routes(reg *prometheus.Registry) *http.ServeMux {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /status", a.status)
	mux.HandleFunc("GET /healthz", a.healthz)
	if a.faults {
		mux.HandleFunc("POST /debug/panic", a.panic)
	}
	if a.pprof {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	a.apiRoutes(mux)
	if a.root != nil {
		// "/" with any method: "GET /" would conflict with "/api/".
		mux.Handle("/", a.root)
	}
	return mux
}

func (a *admin) status(w http.ResponseWriter, _ *http.Request) {
	doc, err := a.snapshot()
	if err != nil {
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(doc)
}

// healthz answers 200 only when the pool, the Router and the TUN actor
// each answer within a short deadline, and 503 naming the ones that did
// not, so a container healthcheck notices a wedged or degraded engine, not
// just a live process.
func (a *admin) healthz(w http.ResponseWriter, _ *http.Request) {
	if err := a.srv.Health(); err != nil {
		http.Error(w, "unhealthy: "+err.Error(), http.StatusServiceUnavailable)
		return
	}
	fmt.Fprintln(w, "ok")
}

// panic makes one actor panic: ?actor=router|tun|pool|supervisor|session, and for a
// session &addr=<its leased IPv4 address>.
func (a *admin) panic(w http.ResponseWriter, r *http.Request) {
	var addr netip.Addr
	if s := r.URL.Query().Get("addr"); s != "" {
		var err error
		if addr, err = netip.ParseAddr(s); err != nil {
			http.Error(w, "bad addr: "+err.Error(), http.StatusBadRequest)
			return
		}
	}
	kind := r.URL.Query().Get("actor")
	if err := a.srv.InjectPanic(r.Context(), kind, addr); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	fmt.Fprintf(w, "panic injected into %s\n", kind)
}

func (a *admin) snapshot() (*statusDoc, error) {
	sessions, err := a.srv.Sessions()
	if err != nil {
		return nil, err
	}
	m := a.srv.Metrics()
	doc := &statusDoc{Listen: a.listen, TUN: a.tun, TUNQueues: a.tunQueues, Pool: a.pool.String(),
		Leased: m.PoolLeased.Load(), Size: m.PoolSize.Load(), Sessions: make([]sessionStatus, 0, len(sessions))}
	for _, s := range sessions {
		doc.Sessions = append(doc.Sessions, toSessionStatus(s))
	}
	return doc, nil
}

// toSessionStatus is a session as /status and the API show it; a session
// that has no address yet has an empty one.
func toSessionStatus(s actors.SessionStatus) sessionStatus {
	addr := ""
	if s.Addr.IsValid() {
		addr = s.Addr.String()
	}
	return sessionStatus{
		Client: s.Client.String(), Addr: addr, Since: s.Since.UTC(), LastHeard: s.LastHeard.UTC(),
		PacketsIn: s.PacketsIn, BytesIn: s.BytesIn, PacketsOut: s.PacketsOut, BytesOut: s.BytesOut,
		Drops: s.Drops, Queued: s.Queued,
	}
}

// serveAdmin listens on addr and serves, and runs the rate sampler, until
// ctx ends; wait returns when both have stopped. The listener is opened
// before the function returns, so a bad address fails start-up.
func serveAdmin(ctx context.Context, addr string, a *admin, log *slog.Logger) (wait func(), err error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("failed to listen for the admin endpoint on %s: %w", addr, err)
	}
	a.log = log
	ticker := time.NewTicker(sampleEvery)
	a.rates = newSampler(a.srv.Sessions, time.Now, ticker.C, log)
	a.rates.watchFor = samplerWatch
	go func() {
		defer ticker.Stop()
		a.rates.run(ctx)
	}()
	hs := &http.Server{Handler: a.handler(), ReadHeaderTimeout: 5 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := hs.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("admin endpoint failed", slog.Any("err", err))
		}
	}()
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = hs.Shutdown(sctx)
	}()
	log.Info("admin endpoint listening", slog.String("addr", ln.Addr().String()), slog.Bool("token_required", a.token != nil))
	return func() { <-done; <-a.rates.done }, nil
}
