package main

// End-to-end tests of the admin endpoint's token rules with the real
// binary: off loopback it does not start without a token file, and with
// one the token guards everything but /metrics and /healthz.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/4over6d/4over6d/tun/netnstest"
)

// publicAdmin is an admin address off loopback: the server's address on
// the internet side.
var publicAdmin = netip.AddrPortFrom(srvV4, 9604).String()

// httpFrom sends one HTTP/1.0 request with headers (name, value pairs)
// from inside ns and returns the status code and the whole response.
func httpFrom(t *testing.T, ns *netnstest.NS, method, addr, path string, header ...string) (int, string) {
	t.Helper()
	var resp []byte
	err := ns.Do(func() error {
		conn, err := net.DialTimeout("tcp", addr, e2eWait)
		if err != nil {
			return err
		}
		defer conn.Close()
		_ = conn.SetDeadline(time.Now().Add(e2eWait))
		req := fmt.Sprintf("%s %s HTTP/1.0\r\nHost: %s\r\n", method, path, addr)
		for i := 0; i+1 < len(header); i += 2 {
			req += header[i] + ": " + header[i+1] + "\r\n"
		}
		if _, err := io.WriteString(conn, req+"\r\n"); err != nil {
			return err
		}
		resp, err = io.ReadAll(conn)
		return err
	})
	if err != nil {
		t.Fatalf("%s http://%s%s in %s: %v", method, addr, path, ns.Name, err)
	}
	var code int
	if _, err := fmt.Sscanf(string(resp), "HTTP/1.%d %d", new(int), &code); err != nil {
		t.Fatalf("%s %s: no status line in %q", method, path, resp)
	}
	return code, string(resp)
}

func TestAdminOffLoopbackNeedsTokenFile(t *testing.T) {
	tp := newTopology(t)
	// Bounded: were the check missing, the server would run.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := tp.srv.Command(ctx, binary(t), "-listen", "["+srvV6.String()+"]:5678", "-pool", e2ePool,
		"-dns", e2eDNS, "-admin", publicAdmin)
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 2 {
		t.Fatalf("exit = %v, want status 2; output %q", err, out)
	}
	if lines := strings.Split(strings.TrimSpace(string(out)), "\n"); len(lines) != 1 || !strings.Contains(lines[0], "-admin-token-file") {
		t.Fatalf("output %q: want one line naming -admin-token-file", out)
	}
	if tables := tp.srv.Run(t, "nft", "list", "tables"); strings.Contains(tables, natTable) {
		t.Fatalf("a refused start left the nftables table: %q", tables)
	}
}

func TestAdminTokenGuardsAllButMetricsAndHealthz(t *testing.T) {
	tp := newTopology(t)
	token := writeTokenFile(t, testToken+"\n", 0o600)
	tp.startServer(t, "-admin", publicAdmin, "-admin-token-file", token)
	c := tp.dial(t)
	c.handshake()
	auth := func(tok string) []string { return []string{"Authorization", "Bearer " + tok} }
	tests := []struct {
		path   string
		header []string
		status int
		want   string // in the response
	}{
		{"/status", nil, 401, "WWW-Authenticate: Bearer"},
		{"/status", auth("wrong-token-0123456789"), 403, `"error"`},
		{"/status", auth(testToken), 200, `"addr": "` + c.addr.String() + `"`},
		{"/api/v1/sessions", nil, 401, "WWW-Authenticate: Bearer"},
		{"/api/v1/sessions", auth(testToken), 200, `"addr":"` + c.addr.String() + `"`},
		{"/", nil, 401, "WWW-Authenticate: Bearer"},
		{"/healthz", nil, 200, "ok"},
		{"/metrics", nil, 200, `fourover6d_admin_refused_total{reason="forbidden"} 1`},
	}
	for _, tc := range tests {
		code, resp := httpFrom(t, tp.inet, "GET", publicAdmin, tc.path, tc.header...)
		if code != tc.status || !strings.Contains(strings.ToLower(resp), strings.ToLower(tc.want)) {
			t.Errorf("GET %s from the internet side with %q: %d, want %d with %s:\n%.600s", tc.path, tc.header, code, tc.status, tc.want, resp)
		}
	}
	// `4over6d status` on the server host: the token file opens it.
	out, err := tp.srv.Command(context.Background(), binary(t), "status", "-admin", publicAdmin, "-token-file", token).CombinedOutput()
	if err != nil || !strings.Contains(string(out), c.addr.String()) {
		t.Errorf("4over6d status -token-file: %v\n%s", err, out)
	}
	out, err = tp.srv.Command(context.Background(), binary(t), "status", "-admin", publicAdmin).CombinedOutput()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 1 || !strings.Contains(string(out), "401") {
		t.Errorf("4over6d status without the token: %v, want exit 1 naming the 401:\n%s", err, out)
	}
}
