package main

// End-to-end tests of the real 4over6d binary against the real kernel:
// each test builds a topology of network namespaces (client: IPv6 only;
// server: IPv6 towards clients, IPv4 towards the "internet"; internet:
// IPv4 only), runs the binary in the server namespace and drives it with a
// raw protocol client dialled from the client namespace.

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/4over6d/4over6d/messages/wire"
	"github.com/4over6d/4over6d/tun/netnstest"
	"github.com/4over6d/4over6d/tun/tuntest"
)

var (
	srvV6   = netip.MustParseAddr("2001:db8:1::1")
	cliV6   = netip.MustParseAddr("2001:db8:1::2")
	cliV6b  = netip.MustParseAddr("2001:db8:1::3") // a second client host on the same link
	srvV4   = netip.MustParseAddr("198.51.100.1")
	inetV4  = netip.MustParseAddr("198.51.100.2")
	tunAddr = netip.MustParseAddr("192.0.2.1")
	e2ePool = "192.0.2.0/24"
	e2eDNS  = "198.51.100.53,198.51.100.54,203.0.113.53"
	e2eWait = 5 * time.Second
)

// builtBinary is one build of a command, made at most once per test run:
// 4over6d (this package) unless pkg and name say otherwise.
type builtBinary struct {
	once  sync.Once
	flags []string
	pkg   string // the package to build; "." when empty
	name  string // the binary's file name; "4over6d" when empty
	path  string
	err   error
}

var (
	raceBinary = &builtBinary{flags: []string{"-race"}}
	plainBuild = &builtBinary{}
	// raceClient is the real client, built as its own end-to-end tests
	// build it, for the fleet tests.
	raceClient = &builtBinary{flags: []string{"-race"}, pkg: "../4over6c", name: "4over6c"}
)

// get builds the binary the first time and returns its path.
func (b *builtBinary) get(t *testing.T) string {
	t.Helper()
	b.once.Do(func() {
		dir, err := os.MkdirTemp("", "4over6d-e2e")
		if err != nil {
			b.err = err
			return
		}
		b.path = filepath.Join(dir, cmp.Or(b.name, "4over6d"))
		args := append(append([]string{"build"}, b.flags...), "-o", b.path, cmp.Or(b.pkg, "."))
		if out, err := exec.Command("go", args...).CombinedOutput(); err != nil {
			b.err = fmt.Errorf("go build: %w\n%s", err, out)
		}
	})
	if b.err != nil {
		t.Fatal(b.err)
	}
	return b.path
}

// TestMain removes the binaries the end-to-end tests built (tens of MiB
// per run in the temporary directory otherwise).
func TestMain(m *testing.M) {
	code := m.Run()
	for _, b := range []*builtBinary{raceBinary, plainBuild, raceClient} {
		if b.path != "" {
			_ = os.RemoveAll(filepath.Dir(b.path))
		}
	}
	os.Exit(code)
}

// binary is 4over6d built with the race detector, as the tests run.
func binary(t *testing.T) string { return raceBinary.get(t) }

// topology is one client, one server and one internet namespace.
type topology struct {
	cli, srv, inet *netnstest.NS
}

func newTopology(t *testing.T) *topology {
	netnstest.RequireRoot(t)
	tp := &topology{cli: netnstest.New(t, "4o6cli"), srv: netnstest.New(t, "4o6srv"), inet: netnstest.New(t, "4o6net")}
	netnstest.Link(t, tp.srv, []netip.Prefix{netip.PrefixFrom(srvV6, 64)}, tp.cli,
		[]netip.Prefix{netip.PrefixFrom(cliV6, 64), netip.PrefixFrom(cliV6b, 64)})
	netnstest.Link(t, tp.srv, []netip.Prefix{netip.PrefixFrom(srvV4, 24)}, tp.inet, []netip.Prefix{netip.PrefixFrom(inetV4, 24)})
	// A default route in the server namespace gives -nat auto its egress.
	tp.srv.AddRoute(t, netip.MustParsePrefix("0.0.0.0/0"), inetV4)
	return tp
}

// server is a running process of these tests: 4over6d, or a 4over6c in
// the fleet tests.
type server struct {
	cmd  *exec.Cmd
	logs *syncBuffer
	done chan error
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// waitLine waits (up to e2eWait) until one line of the log holds every
// one of subs: a count in /metrics can be seen before the line that the
// same event logs.
func (s *syncBuffer) waitLine(t *testing.T, subs ...string) {
	t.Helper()
	deadline := time.Now().Add(e2eWait)
	for {
		for _, line := range strings.Split(s.String(), "\n") {
			if containsAll(line, subs) {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no log line with %q:\n%s", subs, s.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func containsAll(s string, subs []string) bool {
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			return false
		}
	}
	return true
}

func (tp *topology) startServer(t *testing.T, extra ...string) *server {
	t.Helper()
	return tp.startServerArgs(t, append([]string{"-dns", e2eDNS}, extra...))
}

// startServerArgs starts 4over6d with the common flags plus args.
func (tp *topology) startServerArgs(t *testing.T, args []string) *server {
	t.Helper()
	return tp.startBinary(t, binary(t), args)
}

// startBinary is startServerArgs for a given build of 4over6d.
func (tp *topology) startBinary(t *testing.T, bin string, args []string) *server {
	t.Helper()
	args = append([]string{"-listen", "[" + srvV6.String() + "]:5678", "-pool", e2ePool, "-log-level", "debug"}, args...)
	s := startProcess(t, tp.srv, bin, args)
	s.awaitServing(t, e2eWait)
	return s
}

// startProcess starts bin in ns with its output collected; the cleanup
// kills it (by PID) if it still runs, and shows its output if the test
// failed.
func startProcess(t *testing.T, ns *netnstest.NS, bin string, args []string) *server {
	t.Helper()
	s := &server{cmd: ns.Command(context.Background(), bin, args...), logs: &syncBuffer{}, done: make(chan error, 1)}
	s.cmd.Stdout, s.cmd.Stderr = s.logs, s.logs
	if err := s.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", filepath.Base(bin), err)
	}
	go func() { s.done <- s.cmd.Wait() }()
	t.Cleanup(func() {
		if s.cmd.ProcessState == nil {
			_ = s.cmd.Process.Signal(syscall.SIGKILL)
			<-s.done
		}
		if t.Failed() {
			t.Logf("%s %s logs:\n%s", filepath.Base(bin), strings.Join(args, " "), s.logs.String())
		}
	})
	return s
}

// awaitServing waits until 4over6d has logged that it serves, failing the
// test if it exits first or takes longer than limit.
func (s *server) awaitServing(t *testing.T, limit time.Duration) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !strings.Contains(s.logs.String(), "4over6d serving") {
		select {
		case err := <-s.done:
			t.Fatalf("4over6d exited at start: %v\n%s", err, s.logs.String())
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("4over6d did not start:\n%s", s.logs.String())
		}
	}
}

// stop sends SIGTERM and returns the exit error and how long it took.
func (s *server) stop(t *testing.T) (error, time.Duration) {
	t.Helper()
	start := time.Now()
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-s.done:
		return err, time.Since(start)
	case <-time.After(10 * time.Second):
		t.Fatal("4over6d ignored SIGTERM for 10 s")
		return nil, 0
	}
}

// rawClient speaks frames over a TCP connection dialled from the client
// namespace; it needs no TUN.
type rawClient struct {
	t    *testing.T
	conn net.Conn
	dec  *wire.Decoder
	addr netip.Addr
}

func (tp *topology) dial(t *testing.T) *rawClient {
	t.Helper()
	return tp.dialFrom(t, cliV6)
}

// dialFrom connects from one of the client namespace's addresses, so a
// test can play two client hosts.
func (tp *topology) dialFrom(t *testing.T, src netip.Addr) *rawClient {
	t.Helper()
	var conn net.Conn
	err := tp.cli.Do(func() (err error) {
		d := net.Dialer{Timeout: e2eWait, LocalAddr: net.TCPAddrFromAddrPort(netip.AddrPortFrom(src, 0))}
		conn, err = d.Dial("tcp6", netip.AddrPortFrom(srvV6, 5678).String())
		return err
	})
	if err != nil {
		t.Fatalf("dial server: %v", err)
	}
	c := &rawClient{t: t, conn: conn, dec: wire.NewDecoder(conn)}
	t.Cleanup(func() { _ = conn.Close(); c.dec.Release() })
	return c
}

func (c *rawClient) send(typ byte, payload []byte) {
	c.t.Helper()
	if _, err := c.conn.Write(wire.AppendFrame(nil, typ, payload)); err != nil {
		c.t.Fatalf("write: %v", err)
	}
}

func (c *rawClient) handshake() {
	c.t.Helper()
	c.send(wire.TypeIPRequest, nil)
	_ = c.conn.SetReadDeadline(time.Now().Add(e2eWait))
	f, err := c.dec.Next()
	if err != nil || f.Type != wire.TypeIPReply {
		c.t.Fatalf("handshake: frame %d, %v", f.Type, err)
	}
	r, err := wire.ParseIPReply(f.Payload)
	if err != nil {
		c.t.Fatalf("parse 101: %v", err)
	}
	c.addr = r.Addr
}

// await reads 103 frames until match accepts one; heartbeats and other
// packets (such as ICMP redirects) are skipped.
func (c *rawClient) await(what string, match func(tuntest.Summary) bool) tuntest.Summary {
	c.t.Helper()
	_ = c.conn.SetReadDeadline(time.Now().Add(e2eWait))
	for {
		f, err := c.dec.Next()
		if err != nil {
			c.t.Fatalf("waiting for %s: %v", what, err)
		}
		if f.Type != wire.TypeDataReply {
			continue
		}
		s, err := tuntest.Parse(f.Payload)
		if err == nil && match(s) {
			return s
		}
	}
}

func TestHandshakeBytesOnTheWire(t *testing.T) {
	tp := newTopology(t)
	tp.startServer(t)
	c := tp.dial(t)
	c.send(wire.TypeIPRequest, nil)
	want := wire.AppendFrame(nil, wire.TypeIPReply, []byte("192.0.2.2 0.0.0.0 198.51.100.53 198.51.100.54 203.0.113.53 \x00"))
	buf := make([]byte, 4096)
	_ = c.conn.SetReadDeadline(time.Now().Add(e2eWait))
	n, err := c.conn.Read(buf) // one read, as the C clients do
	if err != nil || !bytes.Equal(buf[:n], want) {
		t.Fatalf("first read = %q, %v; want exactly %q", buf[:n], err, want)
	}
}

// TestPingServerAndInternetThroughNAT runs with the default TUN queues
// (one per CPU), a single queue, and more queues than clients: three
// clients, so that with several queues they write to different ones.
func TestPingServerAndInternetThroughNAT(t *testing.T) {
	for _, tc := range []struct {
		name  string
		extra []string
		want  string // in the startup line
	}{
		{"default queues", nil, fmt.Sprintf("tun_queues=%d", min(runtime.GOMAXPROCS(0), 8))},
		{"one queue", []string{"-tun-queues", "1"}, "tun_queues=1"},
		{"four queues", []string{"-tun-queues", "4"}, "tun_queues=4"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tp := newTopology(t)
			s := tp.startServer(t, tc.extra...)
			s.logs.waitLine(t, "4over6d serving", tc.want)
			for range 3 {
				c := tp.dial(t)
				c.handshake()
				for i, dst := range []netip.Addr{tunAddr, inetV4} {
					seq := uint16(i + 1)
					c.send(wire.TypeDataRequest, tuntest.Ping(c.addr, dst, 0x4646, seq, []byte("e2e ping")))
					c.await("echo reply from "+dst.String(), func(s tuntest.Summary) bool {
						return s.Proto == 1 && s.ICMPType == 0 && s.Src == dst && s.Dst == c.addr && s.Seq == seq
					})
				}
			}
		})
	}
}

func TestUDPIsMasqueradedAndRepliesReturn(t *testing.T) {
	tp := newTopology(t)
	tp.startServer(t)
	var pc net.PacketConn
	if err := tp.inet.Do(func() (err error) {
		pc, err = net.ListenPacket("udp4", netip.AddrPortFrom(inetV4, 7777).String())
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	c := tp.dial(t)
	c.handshake()
	c.send(wire.TypeDataRequest, tuntest.UDP(netip.AddrPortFrom(c.addr, 40000), netip.AddrPortFrom(inetV4, 7777), []byte("hello internet")))

	_ = pc.SetReadDeadline(time.Now().Add(e2eWait))
	buf := make([]byte, 2048)
	n, from, err := pc.ReadFrom(buf)
	if err != nil || string(buf[:n]) != "hello internet" {
		t.Fatalf("internet host read %q, %v", buf[:n], err)
	}
	if got := from.(*net.UDPAddr).AddrPort().Addr(); got != srvV4 {
		t.Fatalf("datagram arrived from %v, want the server's NAT address %v", got, srvV4)
	}
	if _, err := pc.WriteTo([]byte("hello client"), from); err != nil {
		t.Fatal(err)
	}
	got := c.await("UDP reply", func(s tuntest.Summary) bool { return s.Proto == 17 && s.Src == inetV4 })
	if got.Dst != c.addr || got.DstPort != 40000 || string(got.Payload) != "hello client" {
		t.Fatalf("reply = %+v, want to %v:40000 with our payload", got, c.addr)
	}
}

func TestTwoClientsReachEachOther(t *testing.T) {
	tp := newTopology(t)
	tp.startServer(t)
	a, b := tp.dial(t), tp.dial(t)
	a.handshake()
	b.handshake()
	a.send(wire.TypeDataRequest, tuntest.Ping(a.addr, b.addr, 0x4242, 1, []byte("a to b")))
	b.await("A's echo request", func(s tuntest.Summary) bool {
		return s.Proto == 1 && s.ICMPType == 8 && s.Src == a.addr && s.Seq == 1
	})
}

func TestSIGTERMCleansUp(t *testing.T) {
	tp := newTopology(t)
	s := tp.startServer(t, "-tun", "e2etun0")
	c := tp.dial(t)
	c.handshake()
	if out := tp.srv.Run(t, "nft", "list", "tables"); !strings.Contains(out, "4over6d") {
		t.Fatalf("nftables table missing while running: %q", out)
	}
	err, took := s.stop(t)
	if err != nil || took > 2*time.Second {
		t.Fatalf("exit after SIGTERM: %v after %v; want status 0 within 2 s", err, took)
	}
	if _, err := tp.srv.Netlink().LinkByName("e2etun0"); err == nil {
		t.Fatal("TUN device still exists after shutdown")
	}
	if out := tp.srv.Run(t, "nft", "list", "tables"); strings.Contains(out, "4over6d") {
		t.Fatalf("nftables table left behind: %q", out)
	}
	_ = c.conn.SetReadDeadline(time.Now().Add(e2eWait))
	if _, err := io.ReadAll(c.conn); err != nil && !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("client connection not closed cleanly: %v", err)
	}
}

func TestMissingPrivilegesExitWithOneLine(t *testing.T) {
	tp := newTopology(t)
	for _, tool := range []string{"setpriv", "unshare"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s (util-linux) is needed: %v", tool, err)
		}
	}
	tests := []struct {
		name    string
		command []string
		want    string
	}{
		{"no CAP_NET_ADMIN", []string{"setpriv", "--bounding-set=-net_admin", "--", binary(t), "-pool", e2ePool}, "CAP_NET_ADMIN"},
		// A private mount namespace with an empty /dev/net hides the
		// TUN device node from the server only.
		{"no /dev/net/tun", []string{"unshare", "--mount", "sh", "-c",
			"mount -t tmpfs none /dev/net && exec " + binary(t) + " -pool " + e2ePool}, "/dev/net/tun"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out, err := tp.srv.Command(context.Background(), tc.command[0], tc.command[1:]...).CombinedOutput()
			var exit *exec.ExitError
			if !errors.As(err, &exit) || exit.ExitCode() != 1 {
				t.Fatalf("exit = %v, want status 1; output %q", err, out)
			}
			if lines := strings.Split(strings.TrimSpace(string(out)), "\n"); len(lines) != 1 || !strings.Contains(lines[0], tc.want) {
				t.Fatalf("output %q: want one line naming %s", out, tc.want)
			}
		})
	}
}

// adminGet fetches a path from the admin endpoint inside the server
// namespace (it listens on the namespace's loopback).
func (tp *topology) adminGet(t *testing.T, path string) string {
	t.Helper()
	return tp.admin(t, "GET", path)
}

func (tp *topology) admin(t *testing.T, method, path string) string {
	t.Helper()
	return tp.srv.HTTP(t, method, "127.0.0.1:9604", path, e2eWait)
}

func TestAdminEndpointAfterTraffic(t *testing.T) {
	tp := newTopology(t)
	tp.startServer(t)
	c := tp.dial(t)
	c.handshake()
	c.send(wire.TypeDataRequest, tuntest.Ping(c.addr, inetV4, 0x4646, 1, []byte("metrics")))
	c.await("echo reply", func(s tuntest.Summary) bool { return s.Proto == 1 && s.ICMPType == 0 })
	c.send(wire.TypeDataRequest, tuntest.Ping(netip.MustParseAddr("203.0.113.9"), inetV4, 1, 1, nil)) // spoofed
	deadline := time.Now().Add(e2eWait)
	for {
		m := tp.adminGet(t, "/metrics")
		if strings.Contains(m, `fourover6d_packets_total{direction="in"} 1`) &&
			strings.Contains(m, `fourover6d_packets_total{direction="out"} 1`) &&
			strings.Contains(m, `fourover6d_drops_total{reason="spoofed"} 1`) &&
			strings.Contains(m, "fourover6d_sessions 1") && strings.Contains(m, "fourover6d_pool_leased 1") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("metrics never matched the traffic:\n%s", m)
		}
		time.Sleep(50 * time.Millisecond)
	}
	status := tp.adminGet(t, "/status")
	for _, want := range []string{`"addr": "` + c.addr.String() + `"`, `"client": "[` + cliV6.String() + `]:`, `"packets_in": 1`, `"leased": 1`,
		fmt.Sprintf(`"tun_queues": %d`, min(runtime.GOMAXPROCS(0), 8))} {
		if !strings.Contains(status, want) {
			t.Fatalf("/status lacks %s:\n%s", want, status)
		}
	}
	if h := tp.adminGet(t, "/healthz"); !strings.Contains(h, "200 OK") {
		t.Fatalf("/healthz: %s", h)
	}
	out := tp.srv.Run(t, binary(t), "status")
	if !strings.Contains(out, c.addr.String()) || !strings.Contains(out, "(1 of 253 leased)") {
		t.Fatalf("4over6d status output:\n%s", out)
	}
}

// pingThrough sends echo requests to the internet host until one answer
// comes back within the deadline (after a fault the path may need a moment).
func (c *rawClient) pingThrough(t *testing.T, seq uint16) {
	t.Helper()
	c.send(wire.TypeDataRequest, tuntest.Ping(c.addr, inetV4, 0x5151, seq, []byte("chaos")))
	c.await("echo reply", func(s tuntest.Summary) bool { return s.Proto == 1 && s.ICMPType == 0 && s.Seq == seq })
}

func TestDebugPanicEndpoint(t *testing.T) {
	tp := newTopology(t)
	tp.startServer(t, "-debug-faults")
	victim, other := tp.dial(t), tp.dial(t)
	victim.handshake()
	other.handshake()
	if r := tp.admin(t, "POST", "/debug/panic?actor=session&addr="+victim.addr.String()); !strings.Contains(r, "200 OK") {
		t.Fatalf("panic session: %s", r)
	}
	_ = victim.conn.SetReadDeadline(time.Now().Add(e2eWait))
	for {
		if _, err := victim.dec.Next(); err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatal("the panicked session's connection stayed open")
			}
			break
		}
	}
	for i, kind := range []string{"router", "tun", "pool"} {
		if r := tp.admin(t, "POST", "/debug/panic?actor="+kind); !strings.Contains(r, "200 OK") {
			t.Fatalf("panic %s: %s", kind, r)
		}
		other.pingThrough(t, uint16(i+1))
	}
	// The endpoint only sends the panic; a ping that needs no pool can be
	// answered before the pool has even failed, so wait for the counts.
	var m string
	counted := func() bool {
		m = tp.adminGet(t, "/metrics")
		for _, kind := range []string{"session", "router", "tun", "pool"} {
			if !strings.Contains(m, `fourover6d_actor_failures_total{actor="`+kind+`"} 1`) {
				return false
			}
		}
		return true
	}
	for deadline := time.Now().Add(e2eWait); !counted(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("failures not counted within %v:\n%s", e2eWait, m)
		}
	}
	if !strings.Contains(m, "fourover6d_pool_leased 1") {
		t.Fatalf("lease count after the faults is wrong:\n%s", m)
	}
}

func TestDebugEndpointsAreOffByDefault(t *testing.T) {
	tp := newTopology(t)
	tp.startServer(t)
	if r := tp.admin(t, "POST", "/debug/panic?actor=router"); strings.Contains(r, "200 OK") {
		t.Fatalf("fault injection answered without -debug-faults: %s", r)
	}
	if r := tp.adminGet(t, "/debug/pprof/"); strings.Contains(r, "200 OK") {
		t.Fatalf("pprof answered without -pprof: %s", r)
	}
}

func TestPprofEndpoint(t *testing.T) {
	tp := newTopology(t)
	tp.startServer(t, "-pprof")
	if r := tp.adminGet(t, "/debug/pprof/goroutine?debug=1"); !strings.Contains(r, "200 OK") || !strings.Contains(r, "goroutine profile") {
		t.Fatalf("pprof goroutine profile: %.300s", r)
	}
}

func TestLeaseFileSurvivesRealRestart(t *testing.T) {
	tp := newTopology(t)
	leases := filepath.Join(t.TempDir(), "leases.json")
	s := tp.startServer(t, "-lease-file", leases)
	first, second := tp.dialFrom(t, cliV6), tp.dialFrom(t, cliV6b)
	first.handshake()
	second.handshake()
	if err, _ := s.stop(t); err != nil {
		t.Fatalf("stop: %v", err)
	}
	tp.startServer(t, "-lease-file", leases)
	// The second host comes back first: without the lease file it would
	// get the first free address, which was the first host's.
	again := tp.dialFrom(t, cliV6b)
	again.handshake()
	if again.addr != second.addr {
		t.Fatalf("after restart %v got %v, want its old %v (first host had %v)", cliV6b, again.addr, second.addr, first.addr)
	}
}

func TestSIGHUPReloadsDNSFromResolvConf(t *testing.T) {
	tp := newTopology(t)
	// `ip netns exec` bind-mounts /etc/netns/NAME/resolv.conf over
	// /etc/resolv.conf for the processes it starts.
	dir := filepath.Join("/etc/netns", tp.srv.Name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	conf := filepath.Join(dir, "resolv.conf")
	if err := os.WriteFile(conf, []byte("nameserver 198.51.100.53\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	s := tp.startServerArgs(t, nil)
	before := tp.dial(t)
	if r := before.reply(t); !strings.HasSuffix(r, " 198.51.100.53 198.51.100.53 198.51.100.53 \x00") {
		t.Fatalf("101 before reload = %q", r)
	}
	if err := os.WriteFile(conf, []byte("nameserver 203.0.113.53\nnameserver 203.0.113.54\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := s.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(e2eWait)
	for !strings.Contains(s.logs.String(), "reply settings reloaded") {
		if time.Now().After(deadline) {
			t.Fatalf("no reload logged:\n%s", s.logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	after := tp.dialFrom(t, cliV6b)
	if r := after.reply(t); !strings.HasSuffix(r, " 203.0.113.53 203.0.113.54 203.0.113.53 \x00") {
		t.Fatalf("101 after reload = %q", r)
	}
	before.pingThrough(t, 1) // the old session was not dropped
}

// reply sends 100 and returns the 101 payload as text, recording the
// address.
func (c *rawClient) reply(t *testing.T) string {
	t.Helper()
	c.send(wire.TypeIPRequest, nil)
	_ = c.conn.SetReadDeadline(time.Now().Add(e2eWait))
	f, err := c.dec.Next()
	if err != nil || f.Type != wire.TypeIPReply {
		t.Fatalf("waiting for 101: type %d, %v", f.Type, err)
	}
	r, err := wire.ParseIPReply(f.Payload)
	if err != nil {
		t.Fatal(err)
	}
	c.addr = r.Addr
	return string(f.Payload)
}
