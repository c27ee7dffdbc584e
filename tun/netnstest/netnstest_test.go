package netnstest

import (
	"errors"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestLinkCarriesTCPOverIPv6(t *testing.T) {
	t.Cleanup(func() { goleak.VerifyNone(t) })
	a, b := New(t, "nst-a"), New(t, "nst-b")
	Link(t, a, []netip.Prefix{netip.MustParsePrefix("2001:db8:1::1/64")},
		b, []netip.Prefix{netip.MustParsePrefix("2001:db8:1::2/64")})

	var ln net.Listener
	if err := b.Do(func() (err error) {
		ln, err = net.Listen("tcp6", "[2001:db8:1::2]:0")
		return err
	}); err != nil {
		t.Fatalf("listening in %s: %v", b.Name, err)
	}
	defer ln.Close()
	var client net.Conn
	if err := a.Do(func() (err error) {
		client, err = net.DialTimeout("tcp6", ln.Addr().String(), 5*time.Second)
		return err
	}); err != nil {
		t.Fatalf("dialing from %s: %v", a.Name, err)
	}
	defer client.Close()
	server, err := ln.Accept()
	if err != nil {
		t.Fatalf("Accept: %v", err)
	}
	defer server.Close()

	if _, err := client.Write([]byte("over veth")); err != nil {
		t.Fatalf("Write: %v", err)
	}
	client.Close()
	server.SetReadDeadline(time.Now().Add(5 * time.Second))
	got, err := io.ReadAll(server)
	if err != nil || string(got) != "over veth" {
		t.Errorf("server read %q, %v; want %q", got, err, "over veth")
	}
	if from := server.RemoteAddr().(*net.TCPAddr).AddrPort().Addr(); from != netip.MustParseAddr("2001:db8:1::1") {
		t.Errorf("connection from %v, want 2001:db8:1::1", from)
	}
}

func TestNamespaceRemovedAfterCleanup(t *testing.T) {
	RequireRoot(t)
	var name string
	t.Run("create", func(t *testing.T) {
		ns := New(t, "nst-gone")
		name = ns.Name
		if list := ipNetnsList(t); !strings.Contains(list, name) {
			t.Fatalf("ip netns list = %q, want it to contain %s", list, name)
		}
	})
	if name == "" {
		t.Fatal("subtest did not create a namespace")
	}
	if _, err := os.Stat(filepath.Join(netnsDir, name)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s still exists after cleanup (stat: %v)", name, err)
	}
	if list := ipNetnsList(t); strings.Contains(list, name) {
		t.Errorf("ip netns list = %q still contains %s", list, name)
	}
}

func ipNetnsList(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("ip", "netns", "list").CombinedOutput()
	if err != nil {
		t.Fatalf("ip netns list: %v\n%s", err, out)
	}
	return string(out)
}

func TestDo(t *testing.T) {
	t.Cleanup(func() { goleak.VerifyNone(t) })
	ns := New(t, "nst-do")
	host := currentNetNS(t)
	errFromF := errors.New("returned by f")
	tests := []struct {
		name    string
		f       func() error
		wantErr func(error) bool
	}{
		{"runs inside the namespace", func() error {
			if inode, err := os.Readlink("/proc/thread-self/ns/net"); err != nil || inode == host {
				return errors.New("not switched into the namespace")
			}
			return nil
		}, func(err error) bool { return err == nil }},
		{"returns the error of f", func() error { return errFromF }, func(err error) bool { return errors.Is(err, errFromF) }},
		{"survives runtime.Goexit", func() error {
			runtime.Goexit()
			return nil
		}, func(err error) bool { return err != nil }},
	}
	for _, tt := range tests {
		if err := ns.Do(tt.f); !tt.wantErr(err) {
			t.Errorf("%s: Do = %v", tt.name, err)
		}
		if now := currentNetNS(t); now != host {
			t.Errorf("%s: caller's namespace changed from %s to %s", tt.name, host, now)
		}
	}
}

// currentNetNS identifies the network namespace of the calling goroutine's
// thread by its nsfs link, e.g. "net:[4026531840]".
func currentNetNS(t *testing.T) string {
	t.Helper()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	inode, err := os.Readlink("/proc/thread-self/ns/net")
	if err != nil {
		t.Fatalf("reading own network namespace: %v", err)
	}
	return inode
}

func TestRunAndCommand(t *testing.T) {
	ns := New(t, "nst-run")
	if out := ns.Run(t, "ip", "-o", "link", "show", "lo"); !strings.Contains(out, ",UP") {
		t.Errorf("loopback in a new namespace is not up: %s", out)
	}
	out, err := ns.Command(t.Context(), "ip", "link", "show", "no-such-if").CombinedOutput()
	if err == nil {
		t.Errorf("Command for a missing interface succeeded: %s", out)
	}
}

func TestAddRoute(t *testing.T) {
	tests := []struct {
		name   string
		aAddr  string
		bAddr  string
		dst    string
		via    string
		family string
		want   string
	}{
		{"IPv4 default", "198.51.100.1/24", "198.51.100.2/24", "0.0.0.0/0", "198.51.100.2", "-4", "default"},
		{"IPv6 default", "2001:db8:1::1/64", "2001:db8:1::2/64", "::/0", "2001:db8:1::2", "-6", "default"},
		{"IPv4 subnet", "198.51.100.1/24", "198.51.100.2/24", "203.0.113.0/24", "198.51.100.2", "-4", "203.0.113.0/24"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, b := New(t, "nst-route"), New(t, "nst-gw")
			aIf, _ := Link(t, a, []netip.Prefix{netip.MustParsePrefix(tt.aAddr)}, b, []netip.Prefix{netip.MustParsePrefix(tt.bAddr)})
			a.AddRoute(t, netip.MustParsePrefix(tt.dst), netip.MustParseAddr(tt.via))
			out := a.Run(t, "ip", tt.family, "route", "show", "via", tt.via)
			if !strings.HasPrefix(out, tt.want+" ") || !strings.Contains(out, "dev "+aIf) {
				t.Errorf("routes via %s = %q, want %s on %s", tt.via, out, tt.want, aIf)
			}
		})
	}
}

func TestHTTPAndIPv4Routes(t *testing.T) {
	a, b := New(t, "nst-a"), New(t, "nst-b")
	aIf, _ := Link(t, a, []netip.Prefix{netip.MustParsePrefix("198.51.100.1/24")},
		b, []netip.Prefix{netip.MustParsePrefix("198.51.100.2/24")})
	var ln net.Listener
	if err := b.Do(func() (err error) { ln, err = net.Listen("tcp4", "198.51.100.2:8080"); return err }); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.WriteString(w, r.Method+" "+r.URL.Path)
		}))
	}()
	t.Cleanup(func() { _ = ln.Close(); <-done })
	if got := a.HTTP(t, "POST", "198.51.100.2:8080", "/x", 5*time.Second); !strings.HasPrefix(got, "HTTP/1.0 200 OK") || !strings.HasSuffix(got, "POST /x") {
		t.Fatalf("response %q", got)
	}
	link, err := a.Netlink().LinkByName(aIf)
	if err != nil {
		t.Fatal(err)
	}
	if got := a.IPv4Routes(t, link); len(got) != 1 || got[0] != "198.51.100.0/24" {
		t.Fatalf("routes via %s = %v", aIf, got)
	}
	if got := b.IPv4Routes(t, nil); len(got) != 1 {
		t.Fatalf("all routes in b = %v", got)
	}
}
