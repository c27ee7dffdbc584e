package main

// Who may use the admin endpoint (docs/security.md, "The admin endpoint"):
// with a token file, every path but /metrics and /healthz needs
// "Authorization: Bearer <token>"; every mutating call is logged with who
// asked and how it ended.

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// minTokenLen is the shortest token accepted: 16 random bytes cannot be
// guessed over a network, and "changeme" should not be possible.
const minTokenLen = 16

// maxTokenFile bounds the token file: a token is one line.
const maxTokenFile = 4 << 10

// openPaths stay open with a token: scrapers and health checks rarely
// carry one, and what they show is counts, not who is connected.
var openPaths = map[string]bool{"/metrics": true, "/healthz": true}

// readTokenFile reads a token file: one token, surrounding whitespace
// trimmed, at least minTokenLen bytes, and a file that others than its
// owner and group cannot read (a token anyone on the host can read
// protects nothing, so that is refused rather than warned about).
func readTokenFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("failed to read the token file: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("failed to read the token file: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("token file %s is not a regular file", path)
	}
	if fi.Mode().Perm()&0o004 != 0 {
		return nil, fmt.Errorf("token file %s is readable by everyone (mode %v): chmod o-r (or 600) it", path, fi.Mode().Perm())
	}
	data, err := io.ReadAll(io.LimitReader(f, maxTokenFile+1))
	if err != nil {
		return nil, fmt.Errorf("failed to read the token file: %w", err)
	}
	if len(data) > maxTokenFile {
		return nil, fmt.Errorf("token file %s is larger than %d bytes: want one token", path, maxTokenFile)
	}
	token := strings.TrimSpace(string(data))
	switch {
	case strings.ContainsAny(token, " \t\r\n\v\f"):
		return nil, fmt.Errorf("token file %s holds more than one word: want one token", path)
	case len(token) < minTokenLen:
		return nil, fmt.Errorf("token in %s is %d bytes, want at least %d (e.g. head -c 24 /dev/urandom | base64)", path, len(token), minTokenLen)
	}
	return []byte(token), nil
}

// Refusal reasons of the admin endpoint, the label of
// fourover6d_admin_refused_total.
const (
	refusedNoToken    = "unauthorized" // 401: no Bearer token
	refusedWrongToken = "forbidden"    // 403: a token that is not ours
	refusedBadRequest = "bad_request"  // 400: malformed JSON, unknown fields, bad address or duration
	refusedTooLarge   = "too_large"    // 413: body over maxBody
)

// adminMetrics counts what the admin endpoint refused.
type adminMetrics struct {
	refused *prometheus.CounterVec
}

func newAdminMetrics(reg prometheus.Registerer) *adminMetrics {
	m := &adminMetrics{refused: prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "fourover6d_admin_refused_total",
		Help: "Admin endpoint requests refused, by reason (unauthorized, forbidden, bad_request, too_large).",
	}, []string{"reason"})}
	for _, r := range []string{refusedNoToken, refusedWrongToken, refusedBadRequest, refusedTooLarge} {
		m.refused.WithLabelValues(r)
	}
	reg.MustRegister(m.refused)
	return m
}

// authLogEvery is the most often a refused token is logged: a scanner must
// not be able to flood the log, and the counter has the total.
const authLogEvery = time.Second

// bearerAuth wraps the admin mux: without a token it passes everything;
// with one, every path but openPaths needs it (401 without, 403 wrong).
type bearerAuth struct {
	sum     [sha256.Size]byte // of the token: compared in constant time, whatever the length
	next    http.Handler
	metrics *adminMetrics
	log     *slog.Logger
	lastLog atomic.Int64 // Unix nanoseconds of the last refusal logged
}

// requireToken protects next with token; a nil token means none needed.
func requireToken(token []byte, next http.Handler, m *adminMetrics, log *slog.Logger) http.Handler {
	if token == nil {
		return next
	}
	return &bearerAuth{sum: sha256.Sum256(token), next: next, metrics: m, log: log}
}

func (b *bearerAuth) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if openPaths[r.URL.Path] || isDashboardAsset(r) {
		b.next.ServeHTTP(w, r)
		return
	}
	token, ok := bearerToken(r.Header.Get("Authorization"))
	if !ok {
		if isDashboardPage(r) {
			b.refuseWithPage(w, r)
			return
		}
		b.refuse(w, r, http.StatusUnauthorized, refusedNoToken, "this admin endpoint needs Authorization: Bearer <token>")
		return
	}
	sum := sha256.Sum256([]byte(token))
	if subtle.ConstantTimeCompare(sum[:], b.sum[:]) != 1 {
		b.refuse(w, r, http.StatusForbidden, refusedWrongToken, "wrong token")
		return
	}
	b.next.ServeHTTP(w, r)
}

// A browser sends no Authorization header when it loads a page, so the
// dashboard's page could never load behind the token and its script could
// never take the token from the URL fragment (#token=..., which no server
// ever sees). The page and its scripts hold no data (every figure comes
// from /api/ with the token), so: the scripts and styles under /assets/
// are open, and the page itself is refused with 401 like any other path,
// but with the page as the body of the refusal, which a browser shows and
// runs. A wrong token is 403 as everywhere.
func isDashboardAsset(r *http.Request) bool {
	return (r.Method == http.MethodGet || r.Method == http.MethodHead) && strings.HasPrefix(r.URL.Path, "/assets/")
}

func isDashboardPage(r *http.Request) bool {
	return (r.Method == http.MethodGet || r.Method == http.MethodHead) && r.URL.Path == "/"
}

// refuseWithPage counts and answers a tokenless GET of the dashboard page:
// 401 with the challenge, and the page (see isDashboardAsset).
func (b *bearerAuth) refuseWithPage(w http.ResponseWriter, r *http.Request) {
	b.metrics.refused.WithLabelValues(refusedNoToken).Inc()
	w.Header().Set("WWW-Authenticate", `Bearer realm="4over6d"`)
	b.next.ServeHTTP(&statusOverride{ResponseWriter: w, status: http.StatusUnauthorized}, r)
}

// statusOverride replaces a 200 with status.
type statusOverride struct {
	http.ResponseWriter
	status  int
	written bool
}

func (s *statusOverride) WriteHeader(code int) {
	if !s.written && code == http.StatusOK {
		code = s.status
	}
	s.written = true
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusOverride) Write(p []byte) (int, error) {
	if !s.written {
		s.WriteHeader(http.StatusOK)
	}
	return s.ResponseWriter.Write(p)
}

// bearerToken takes the token of an "Authorization: Bearer X" header
// (the scheme is case-insensitive, RFC 6750).
func bearerToken(h string) (string, bool) {
	scheme, token, ok := strings.Cut(strings.TrimSpace(h), " ")
	token = strings.TrimSpace(token)
	if !ok || !strings.EqualFold(scheme, "Bearer") || token == "" {
		return "", false
	}
	return token, true
}

func (b *bearerAuth) refuse(w http.ResponseWriter, r *http.Request, status int, reason, msg string) {
	b.metrics.refused.WithLabelValues(reason).Inc()
	now := time.Now().UnixNano()
	if last := b.lastLog.Load(); now-last >= int64(authLogEvery) && b.lastLog.CompareAndSwap(last, now) {
		b.log.Warn("admin endpoint: request refused", slog.String("reason", reason), slog.String("remote", r.RemoteAddr),
			slog.String("method", r.Method), slog.String("path", r.URL.Path))
	}
	w.Header().Set("WWW-Authenticate", `Bearer realm="4over6d"`)
	writeError(w, &apiError{status, msg})
}

// logMutations logs every call that can change something (any method but
// GET, HEAD and OPTIONS) at info when it is done: who asked (the remote
// address), what (method and path) and how it ended (status, and the
// error message of a refusal). Bad requests are also counted.
func logMutations(next http.Handler, m *adminMetrics, log *slog.Logger) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet || r.Method == http.MethodHead || r.Method == http.MethodOptions {
			next.ServeHTTP(w, r)
			return
		}
		rec := &recorder{ResponseWriter: w, status: http.StatusOK}
		next.ServeHTTP(rec, r)
		switch rec.status {
		case http.StatusBadRequest:
			m.refused.WithLabelValues(refusedBadRequest).Inc()
		case http.StatusRequestEntityTooLarge:
			m.refused.WithLabelValues(refusedTooLarge).Inc()
		}
		attrs := []any{slog.String("remote", r.RemoteAddr), slog.String("method", r.Method),
			slog.String("path", r.URL.RequestURI()), slog.Int("status", rec.status)}
		if rec.errMsg != "" {
			attrs = append(attrs, slog.String("error", rec.errMsg))
		}
		log.Info("admin call", attrs...)
	})
}

// recorder keeps the status of a response and the start of an error
// body, for the log line.
type recorder struct {
	http.ResponseWriter
	status      int
	wroteHeader bool
	errMsg      string
}

// Unwrap lets http.ResponseController reach the connection's writer.
func (r *recorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

func (r *recorder) WriteHeader(status int) {
	if !r.wroteHeader {
		r.status, r.wroteHeader = status, true
	}
	r.ResponseWriter.WriteHeader(status)
}

func (r *recorder) Write(p []byte) (int, error) {
	if !r.wroteHeader {
		r.WriteHeader(http.StatusOK)
	}
	if r.status >= 400 && r.errMsg == "" {
		r.errMsg = errorMessage(p)
	}
	return r.ResponseWriter.Write(p)
}

// errorMessage is the message of an {"error": ...} body, or the body's
// first line for the plain-text errors of the older endpoints.
func errorMessage(p []byte) string {
	var e struct {
		Error string `json:"error"`
	}
	if err := json.Unmarshal(p, &e); err == nil && e.Error != "" {
		return e.Error
	}
	line, _, _ := strings.Cut(string(p), "\n")
	return strings.TrimSpace(line)
}

// errNoTokenOffLoopback is why a server with a reachable admin endpoint
// and no token does not start.
var errNoTokenOffLoopback = errors.New("needs -admin-token-file: the admin endpoint can kick clients and change reservations, so off loopback it must not be open")
