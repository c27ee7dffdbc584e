package main

// End-to-end tests of the real 4over6c binary with the real 4over6d
// against the real kernel. The topology: an "internet" namespace (IPv4
// only), a server namespace (IPv4 towards the internet with a default
// route, IPv6 towards the clients) and client namespaces, each linked to
// the server by its own veth and IPv6 /64, with no IPv4 except through the
// tunnel.

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/4over6d/4over6d/tun/netnstest"
	"github.com/vishvananda/netlink"
)

var (
	srvV4      = netip.MustParseAddr("198.51.100.1")
	inetV4     = netip.MustParseAddr("198.51.100.2")
	e2eTUN     = "4over6c"
	e2eStart   = 10 * time.Second
	buildOnce  sync.Once
	binDir     string
	buildError error
)

// TestMain removes the binaries built for the end-to-end tests.
func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		_ = os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// binaries builds 4over6d and 4over6c with the race detector, once per
// test binary, and returns their paths.
func binaries(t *testing.T) (server, client string) {
	t.Helper()
	buildOnce.Do(func() {
		if binDir, buildError = os.MkdirTemp("", "4over6c-e2e"); buildError != nil {
			return
		}
		out, err := exec.Command("go", "build", "-race", "-o", binDir+"/", "../4over6d", ".").CombinedOutput()
		if err != nil {
			buildError = fmt.Errorf("go build: %w\n%s", err, out)
		}
	})
	if buildError != nil {
		t.Fatal(buildError)
	}
	return filepath.Join(binDir, "4over6d"), filepath.Join(binDir, "4over6c")
}

// topology is an internet, a server and n client namespaces.
type topology struct {
	inet, srv *netnstest.NS
	clients   []*netnstest.NS
}

func newTopology(t *testing.T, n int) *topology {
	netnstest.RequireRoot(t)
	tp := &topology{inet: netnstest.New(t, "4o6c-net"), srv: netnstest.New(t, "4o6c-srv")}
	netnstest.Link(t, tp.srv, []netip.Prefix{netip.PrefixFrom(srvV4, 24)}, tp.inet, []netip.Prefix{netip.PrefixFrom(inetV4, 24)})
	tp.srv.AddRoute(t, netip.MustParsePrefix("0.0.0.0/0"), inetV4)
	for i := range n {
		cli := netnstest.New(t, fmt.Sprintf("4o6c-cli%d", i+1))
		netnstest.Link(t, tp.srv, []netip.Prefix{netip.PrefixFrom(serverV6(i), 64)},
			cli, []netip.Prefix{netip.MustParsePrefix(fmt.Sprintf("2001:db8:%d::2/64", i+1))})
		tp.clients = append(tp.clients, cli)
	}
	return tp
}

// serverV6 is the server's address on the link to client i.
func serverV6(i int) netip.Addr {
	return netip.MustParseAddr(fmt.Sprintf("2001:db8:%d::1", i+1))
}

// process is a binary running inside a namespace, killed at cleanup.
type process struct {
	name   string
	cmd    *exec.Cmd
	logs   *logBuffer
	exited chan struct{}
	err    error // exit status, set before exited is closed
}

func startProcess(t *testing.T, ns *netnstest.NS, bin string, args ...string) *process {
	t.Helper()
	p := &process{name: filepath.Base(bin), cmd: ns.Command(context.Background(), bin, args...), logs: &logBuffer{}, exited: make(chan struct{})}
	p.cmd.Stdout, p.cmd.Stderr = p.logs, p.logs
	// The race detector sleeps a second at exit by default, which would
	// hide how fast the binaries shut down.
	p.cmd.Env = append(os.Environ(), "GORACE=atexit_sleep_ms=0")
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", p.name, err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() {
		if p.running() {
			_ = p.cmd.Process.Kill()
			<-p.exited
		}
		if t.Failed() {
			t.Logf("%s %s logs:\n%s", p.name, strings.Join(args, " "), p.logs.String())
		}
	})
	return p
}

func (p *process) running() bool {
	select {
	case <-p.exited:
		return false
	default:
		return true
	}
}

// stop signals the process and returns how long it took to exit and its
// exit error.
func (p *process) stop(t *testing.T, sig syscall.Signal) (time.Duration, error) {
	t.Helper()
	start := time.Now()
	_ = p.cmd.Process.Signal(sig)
	select {
	case <-p.exited:
		return time.Since(start), p.err
	case <-time.After(e2eStart):
		t.Fatalf("%s ignored signal %v for %v", p.name, sig, e2eStart)
		return 0, nil
	}
}

func (p *process) awaitLog(t *testing.T, s string) {
	t.Helper()
	waitUntil(t, e2eStart, func() bool { return strings.Contains(p.logs.String(), s) }, fmt.Sprintf("%s to log %q", p.name, s))
}

func (tp *topology) runServer(t *testing.T, extra ...string) *process {
	t.Helper()
	bin, _ := binaries(t)
	args := append([]string{"-listen", "[::]:5678", "-pool", "192.0.2.0/24", "-dns", "198.51.100.53",
		"-heartbeat", "1s", "-timeout", "3s", "-log-level", "debug"}, extra...)
	p := startProcess(t, tp.srv, bin, args...)
	p.awaitLog(t, "4over6d serving")
	return p
}

func (tp *topology) runClient(t *testing.T, i int, extra ...string) *process {
	t.Helper()
	_, bin := binaries(t)
	args := append([]string{"-server", netip.AddrPortFrom(serverV6(i), 5678).String(), "-heartbeat", "1s", "-timeout", "3s", "-log-level", "debug"}, extra...)
	return startProcess(t, tp.clients[i], bin, args...)
}

// connectedAddr waits until client p has logged its connection, by which
// time its TUN, routes and DNS are in place, and returns the address of the
// TUN in ns as netlink reports it.
func connectedAddr(t *testing.T, p *process, ns *netnstest.NS) netip.Addr {
	t.Helper()
	p.awaitLog(t, "msg=connected")
	return tunAddr(t, ns)
}

// tunAddr polls netlink in ns until the client TUN has an IPv4 address.
func tunAddr(t *testing.T, ns *netnstest.NS) netip.Addr {
	t.Helper()
	var addr netip.Addr
	waitUntil(t, e2eStart, func() bool {
		addr = currentTUNAddr(ns)
		return addr.IsValid()
	}, "the client TUN to get its address in "+ns.Name)
	return addr
}

func currentTUNAddr(ns *netnstest.NS) netip.Addr {
	link, err := ns.Netlink().LinkByName(e2eTUN)
	if err != nil {
		return netip.Addr{}
	}
	addrs, err := ns.Netlink().AddrList(link, netlink.FAMILY_V4)
	if err != nil || len(addrs) == 0 {
		return netip.Addr{}
	}
	a, _ := netip.AddrFromSlice(addrs[0].IP)
	return a.Unmap()
}

func tunExists(ns *netnstest.NS) bool { return tunIndex(ns) != 0 }

// tunIndex is the interface index of the client TUN in ns, or 0.
func tunIndex(ns *netnstest.NS) int {
	link, err := ns.Netlink().LinkByName(e2eTUN)
	if err != nil {
		return 0
	}
	return link.Attrs().Index
}

// tunnelRoutes lists the IPv4 routes of the namespace that end in /1.
func tunnelRoutes(t *testing.T, ns *netnstest.NS) []string {
	t.Helper()
	var out []string
	for _, r := range ns.IPv4Routes(t, nil) {
		if strings.HasSuffix(r, "/1") {
			out = append(out, r)
		}
	}
	return out
}

// ping reports whether count echo requests to the internet host from ns
// were answered.
func ping(t *testing.T, ns *netnstest.NS, count int) error {
	t.Helper()
	if _, err := exec.LookPath("ping"); err != nil {
		t.Fatalf("ping (iputils-ping) is needed: %v", err)
	}
	out, err := ns.Command(t.Context(), "ping", "-n", "-c", fmt.Sprint(count), "-i", "0.2", "-W", "2", inetV4.String()).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ping from %s: %w\n%s", ns.Name, err, out)
	}
	return nil
}

func waitUntil(t *testing.T, limit time.Duration, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", limit, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestE2ESIGTERMCleansUp(t *testing.T) {
	tp := newTopology(t, 1)
	tp.runServer(t)
	resolv := filepath.Join(t.TempDir(), "resolv.conf")
	const original = "nameserver 203.0.113.53\n"
	if err := os.WriteFile(resolv, []byte(original), 0o644); err != nil {
		t.Fatal(err)
	}
	c := tp.runClient(t, 0, "-dns-apply", resolv, "-dns-state", t.TempDir())
	if addr := connectedAddr(t, c, tp.clients[0]); addr != netip.MustParseAddr("192.0.2.2") {
		t.Errorf("leased %v, want the pool's first client address 192.0.2.2", addr)
	}
	if got := tunnelRoutes(t, tp.clients[0]); len(got) != 2 {
		t.Errorf("routes while connected = %v, want 0.0.0.0/1 and 128.0.0.0/1", got)
	}
	if got := readFile(t, resolv); !strings.Contains(got, "nameserver 198.51.100.53\n") {
		t.Errorf("DNS file while connected = %q, want the server's DNS server", got)
	}
	took, err := c.stop(t, syscall.SIGTERM)
	if err != nil || took > 2*time.Second {
		t.Fatalf("exit after SIGTERM: %v after %v; want status 0 within 2 s", err, took)
	}
	if tunExists(tp.clients[0]) {
		t.Error("TUN still exists after exit")
	}
	if got := tunnelRoutes(t, tp.clients[0]); len(got) != 0 {
		t.Errorf("routes left after exit: %v", got)
	}
	if got := readFile(t, resolv); got != original {
		t.Errorf("DNS file after exit = %q, want the original %q", got, original)
	}
	t.Logf("client exited %v after SIGTERM", took.Round(time.Millisecond))
}

func TestE2EClientReconnectsAfterServerRestart(t *testing.T) {
	tp := newTopology(t, 1)
	srv := tp.runServer(t)
	c := tp.runClient(t, 0)
	connectedAddr(t, c, tp.clients[0])
	index := tunIndex(tp.clients[0])
	if err := ping(t, tp.clients[0], 1); err != nil {
		t.Fatal(err)
	}
	if _, err := srv.stop(t, syscall.SIGTERM); err != nil {
		t.Fatalf("server exit: %v", err)
	}
	tp.runServer(t)
	back := time.Now()
	waitUntil(t, 5*time.Second, func() bool { return ping(t, tp.clients[0], 1) == nil }, "ping through the restarted server")
	t.Logf("traffic flowed again %v after the server was back", time.Since(back).Round(time.Millisecond))
	if n := c.logs.count("msg=connected"); n < 2 || !c.running() {
		t.Errorf("client connected %d times (want a reconnect), running %v", n, c.running())
	}
	if now := tunIndex(tp.clients[0]); now != index {
		t.Errorf("TUN index %d after the reconnect, want the same TUN (%d) kept for the same address", now, index)
	}
}

func TestE2EKilledClientReleasesAddress(t *testing.T) {
	tp := newTopology(t, 1)
	srv := tp.runServer(t)
	first := tp.runClient(t, 0)
	addr := connectedAddr(t, first, tp.clients[0])
	if _, err := first.stop(t, syscall.SIGKILL); err == nil {
		t.Fatal("client killed with SIGKILL exited with status 0")
	}
	waitUntil(t, e2eStart, func() bool { return !tunExists(tp.clients[0]) }, "the killed client's TUN to disappear")
	waitUntil(t, e2eStart, func() bool { return srv.logs.hasLine(`msg="session ended"`, "addr="+addr.String()+" ") },
		"the server to end the session of "+addr.String())
	second := tp.runClient(t, 0)
	if again := connectedAddr(t, second, tp.clients[0]); again != addr {
		t.Fatalf("new client in the same namespace leased %v, want %v back", again, addr)
	}
	if err := ping(t, tp.clients[0], 1); err != nil {
		t.Fatal(err)
	}
}

func TestE2EClientSurvivesMalformedFrame(t *testing.T) {
	tp := newTopology(t, 1)
	var ln net.Listener
	if err := tp.srv.Do(func() (err error) {
		ln, err = net.Listen("tcp6", netip.AddrPortFrom(serverV6(0), 5678).String())
		return err
	}); err != nil {
		t.Fatal(err)
	}
	srv := newMalformedServer(ln)
	t.Cleanup(srv.close)
	c := tp.runClient(t, 0)
	waitUntil(t, e2eStart, func() bool { return srv.accepted() >= 2 }, "the client to reconnect to the fake server")
	c.awaitLog(t, "framing lost")
	if !c.running() {
		t.Fatalf("client exited after a malformed frame: %v", c.err)
	}
}
