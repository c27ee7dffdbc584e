package main

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/4over6d/4over6d/actors"
)

// testToken is a token for tests only.
const testToken = "test-token-0123456789abcdef"

// writeTokenFile writes text to a file of mode perm and returns its path.
func writeTokenFile(t *testing.T, text string, perm os.FileMode) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(path, []byte(text), perm); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, perm); err != nil { // not subject to the umask
		t.Fatal(err)
	}
	return path
}

func TestReadTokenFile(t *testing.T) {
	tests := []struct {
		name, text string
		perm       os.FileMode
		want       string // the token, or for a refusal part of the message
		ok         bool
	}{
		{"plain", testToken, 0o600, testToken, true},
		{"trimmed", "\n  " + testToken + " \r\n\n", 0o600, testToken, true},
		{"group-readable is fine", testToken + "\n", 0o640, testToken, true},
		{"exactly 16 bytes", "0123456789abcdef", 0o400, "0123456789abcdef", true},
		{"15 bytes", "0123456789abcde\n", 0o600, "at least 16", false},
		{"empty", "\n\n", 0o600, "at least 16", false},
		{"two tokens", testToken + "\n" + testToken + "\n", 0o600, "more than one", false},
		{"world-readable", testToken, 0o644, "readable by everyone", false},
		{"too large", strings.Repeat("a", maxTokenFile+1), 0o600, "larger than", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := readTokenFile(writeTokenFile(t, tc.text, tc.perm))
			switch {
			case tc.ok && (err != nil || string(got) != tc.want):
				t.Fatalf("readTokenFile = %q, %v; want %q", got, err, tc.want)
			case !tc.ok && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("readTokenFile = %q, %v; want an error saying %q", got, err, tc.want)
			}
		})
	}
	for _, path := range []string{filepath.Join(t.TempDir(), "missing"), t.TempDir()} {
		if got, err := readTokenFile(path); err == nil {
			t.Errorf("readTokenFile(%s) = %q, want an error", path, got)
		}
	}
}

func TestBearerToken(t *testing.T) {
	tests := []struct {
		header, token string
		ok            bool
	}{
		{"Bearer abc", "abc", true},
		{"bearer abc", "abc", true},
		{"BEARER   abc  ", "abc", true},
		{"Basic YWxhZGRpbjpvcGVuc2VzYW1l", "", false},
		{"Bearer", "", false},
		{"Bearer ", "", false},
		{"", "", false},
		{"abc", "", false},
	}
	for _, tc := range tests {
		if got, ok := bearerToken(tc.header); got != tc.token || ok != tc.ok {
			t.Errorf("bearerToken(%q) = %q, %v; want %q, %v", tc.header, got, ok, tc.token, tc.ok)
		}
	}
}

// dummyDashboard stands in for the dashboard until it is mounted at /.
var dummyDashboard = http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
	_, _ = io.WriteString(w, "dashboard")
})

// TestTokenRules checks who gets what with and without a token: the
// dashboard, /status, the API and the debug endpoints need it, /metrics
// and /healthz never do. The dashboard's page is refused with itself as
// the body (a browser cannot send the header when it loads a page) and
// its scripts and styles, which hold no data, are open.
func TestTokenRules(t *testing.T) {
	good := "Bearer " + testToken
	tests := []struct {
		method, path string
		auth         string // Authorization header, "" for none
		status       int
	}{
		{"GET", "/status", "", 401},
		{"GET", "/status", "Bearer wrong-token-0123456789", 403},
		{"GET", "/status", "Bearer " + testToken + "x", 403},
		{"GET", "/status", "Basic dXNlcjpwYXNz", 401},
		{"GET", "/status", good, 200},
		{"GET", "/", "", 401},
		{"GET", "/", "Bearer nope", 403},
		{"GET", "/", good, 200},
		{"GET", "/assets/app.js", "", 200},
		{"GET", "/assets/style.css", "", 200},
		{"POST", "/assets/app.js", "", 401},
		{"GET", "/api/v1/sessions", "", 401},
		{"GET", "/api/v1/sessions", "Bearer nope", 403},
		{"GET", "/api/v1/sessions", good, 200},
		{"GET", "/api/v1/pool", good, 200},
		{"GET", "/api/v1/fleet", "", 401},
		{"GET", "/api/v1/fleet", good, 404}, // a single node
		{"DELETE", "/api/v1/sessions/192.0.2.2", "", 401},
		{"DELETE", "/api/v1/sessions/192.0.2.2", "Bearer nope", 403},
		{"DELETE", "/api/v1/sessions/192.0.2.2", good, 200},
		{"PUT", "/api/v1/reservations/2001:db8::5", "", 401},
		{"PUT", "/api/v1/reservations/2001:db8::5", good, 200},
		{"POST", "/debug/panic?actor=router", "", 401},
		{"POST", "/debug/panic?actor=router", good, 200},
		{"GET", "/no/such/path", "", 401},
		{"GET", "/metrics", "", 200},
		{"GET", "/metrics", "Bearer nope", 200},
		{"GET", "/healthz", "", 200},
	}
	eng := &fakeEngine{kick: actors.KickResult{Client: client1}}
	ta := newTestAdmin(t, eng, []byte(testToken), dashboardHandler())
	for _, tc := range tests {
		var header []string
		if tc.auth != "" {
			header = []string{"Authorization", tc.auth}
		}
		body := ""
		if tc.method == "PUT" {
			body = `{"addr":"192.0.2.50"}`
		}
		status, hdr, resp := ta.do(tc.method, tc.path, body, header...)
		if status != tc.status {
			t.Errorf("%s %s with %q: %d %s, want %d", tc.method, tc.path, tc.auth, status, resp, tc.status)
			continue
		}
		if status == 401 && hdr.Get("WWW-Authenticate") == "" {
			t.Errorf("%s %s: 401 without WWW-Authenticate", tc.method, tc.path)
		}
		page := tc.method == "GET" && tc.path == "/"
		if page && status == 401 && !strings.Contains(resp, "<html") {
			t.Errorf("GET / without a token: body %q, want the page (which asks for the token)", resp)
		}
		if (status == 401 || status == 403) && !(page && status == 401) {
			if !strings.Contains(resp, `"error"`) {
				t.Errorf("%s %s: refusal body %q is not a JSON error", tc.method, tc.path, resp)
			}
		}
	}
	// Refusals are counted and the mutating ones logged; no call reached
	// the engine without the token.
	_, _, m := ta.do("GET", "/metrics", "")
	for _, want := range []string{`fourover6d_admin_refused_total{reason="unauthorized"} 10`, `fourover6d_admin_refused_total{reason="forbidden"} 5`} {
		if !strings.Contains(m, want) {
			t.Errorf("metrics lack %s:\n%s", want, grepLines(m, "admin_refused"))
		}
	}
	if logs := ta.logs.String(); !strings.Contains(logs, "method=DELETE path=/api/v1/sessions/192.0.2.2 status=401") {
		t.Errorf("refused kick not logged:\n%s", logs)
	}
	if calls := eng.recorded(); len(calls) != 3 {
		t.Errorf("engine calls %q, want the three with the token", calls)
	}
}

// TestNoTokenLeavesEverythingOpen is the loopback default: no token file,
// no token needed, as before the console.
func TestNoTokenLeavesEverythingOpen(t *testing.T) {
	ta := newTestAdmin(t, &fakeEngine{}, nil, dummyDashboard)
	for _, path := range []string{"/", "/status", "/api/v1/sessions", "/metrics", "/healthz"} {
		if status, _, body := ta.do("GET", path, ""); status != 200 {
			t.Errorf("GET %s without a token file: %d %s", path, status, body)
		}
	}
}

// TestAdminNeedsTokenOffLoopback checks the start-up rules: a reachable
// admin endpoint needs a token file, a bad token file is refused, and a
// token file on loopback is used too.
func TestAdminNeedsTokenOffLoopback(t *testing.T) {
	good := writeTokenFile(t, testToken+"\n", 0o600)
	tests := []struct {
		args []string
		want string // part of the error; "" for success
	}{
		{[]string{"-admin", "0.0.0.0:9604"}, "-admin-token-file"},
		{[]string{"-admin", "[::]:9604"}, "-admin-token-file"},
		{[]string{"-admin", "198.51.100.1:9604"}, "-admin-token-file"},
		{[]string{"-admin", "[2001:db8::1]:9604"}, "-admin-token-file"},
		{[]string{"-admin", "example.net:9604"}, "-admin-token-file"},
		{[]string{"-admin", "0.0.0.0:9604", "-admin-token-file", good}, ""},
		{[]string{"-admin", "127.0.0.1:9604"}, ""},
		{[]string{"-admin", "[::1]:9604"}, ""},
		{[]string{"-admin", "localhost:9604"}, ""},
		{[]string{"-admin", "off"}, ""},
		{[]string{"-admin-token-file", good}, ""},
		{[]string{"-admin", "0.0.0.0:9604", "-admin-token-file", writeTokenFile(t, testToken, 0o604)}, "readable by everyone"},
		{[]string{"-admin", "0.0.0.0:9604", "-admin-token-file", writeTokenFile(t, "short", 0o600)}, "at least 16"},
		{[]string{"-admin-token-file", writeTokenFile(t, "short", 0o600)}, "at least 16"},
		{[]string{"-admin-token-file", filepath.Join(t.TempDir(), "missing")}, "-admin-token-file"},
	}
	for _, tc := range tests {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			var stderr bytes.Buffer
			o, err := parseOptions(tc.args, &stderr, filepath.Join(t.TempDir(), "missing"))
			if tc.want == "" {
				if err != nil {
					t.Fatalf("parseOptions: %v", err)
				}
				if hasFile := strings.Contains(strings.Join(tc.args, " "), "-admin-token-file"); hasFile != (o.adminToken != nil) ||
					hasFile && string(o.adminToken) != testToken {
					t.Fatalf("token %q, want it read from the file when given", o.adminToken)
				}
				return
			}
			// A usageError is exit 2 (run); run itself is not called, as
			// it would start a server if the check were missing.
			var usage usageError
			if !errors.As(err, &usage) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("parseOptions = %v; want a usage error saying %q", err, tc.want)
			}
		})
	}
}
