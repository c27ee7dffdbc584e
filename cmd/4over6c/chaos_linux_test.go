package main

// Fault-injection tests with the real binaries: panics injected into every
// actor of a running 4over6d while several 4over6c clients move traffic,
// and a server killed with SIGKILL and started again.

import (
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/4over6d/4over6d/tun/netnstest"
)

// recoverWithin is how fast the other clients' traffic must flow again
// after a fault (the requirement).
const recoverWithin = time.Second

// flow sends a UDP datagram from a client namespace to the internet echo
// server every 10 ms and records when the last reply arrived.
type flow struct {
	last atomic.Int64 // unix nanoseconds of the last echo
	conn net.Conn
}

func startFlow(t *testing.T, ns *netnstest.NS, echo netip.AddrPort) *flow {
	t.Helper()
	f := &flow{}
	if err := ns.Do(func() (err error) {
		f.conn, err = net.Dial("udp4", echo.String())
		return err
	}); err != nil {
		t.Fatalf("udp flow from %s: %v", ns.Name, err)
	}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		for {
			if _, err := f.conn.Write([]byte("chaos")); err != nil && isClosed(err) {
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	}()
	go func() {
		defer wg.Done()
		buf := make([]byte, 64)
		for {
			if _, err := f.conn.Read(buf); err != nil {
				if isClosed(err) {
					return
				}
				continue // e.g. ICMP unreachable while the tunnel is down
			}
			f.last.Store(time.Now().UnixNano())
		}
	}()
	t.Cleanup(func() { _ = f.conn.Close(); wg.Wait() })
	return f
}

func isClosed(err error) bool { return err != nil && strings.Contains(err.Error(), "use of closed") }

// flowingSince waits until the flow has an echo newer than since, and
// returns how long after since that was.
func (f *flow) flowingSince(t *testing.T, since time.Time, limit time.Duration) time.Duration {
	t.Helper()
	deadline := since.Add(limit)
	for time.Now().Before(deadline) {
		if last := time.Unix(0, f.last.Load()); last.After(since) {
			return last.Sub(since)
		}
		time.Sleep(5 * time.Millisecond)
	}
	return limit
}

// udpEcho answers every datagram in the internet namespace.
func udpEcho(t *testing.T, ns *netnstest.NS) netip.AddrPort {
	t.Helper()
	var pc net.PacketConn
	if err := ns.Do(func() (err error) {
		pc, err = net.ListenPacket("udp4", netip.AddrPortFrom(inetV4, 7).String())
		return err
	}); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 2048)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			_, _ = pc.WriteTo(buf[:n], from)
		}
	}()
	t.Cleanup(func() { _ = pc.Close(); <-done })
	return netip.AddrPortFrom(inetV4, 7)
}

// admin sends one HTTP request to the server's admin endpoint, which
// listens on the server namespace's loopback.
func admin(t *testing.T, ns *netnstest.NS, method, path string) string {
	t.Helper()
	return ns.HTTP(t, method, "127.0.0.1:9604", path, e2eStart)
}

func TestE2EChaosPanicsUnderTraffic(t *testing.T) {
	tp := newTopology(t, 3)
	srv := tp.runServer(t, "-debug-faults")
	echo := udpEcho(t, tp.inet)
	clients := make([]*process, 3)
	addrs := make([]netip.Addr, 3)
	flows := make([]*flow, 3)
	for i := range clients {
		clients[i] = tp.runClient(t, i)
		addrs[i] = connectedAddr(t, clients[i], tp.clients[i])
		flows[i] = startFlow(t, tp.clients[i], echo)
	}
	for i, f := range flows {
		if d := f.flowingSince(t, time.Now(), e2eStart); d >= e2eStart {
			t.Fatalf("client %d: no traffic before the faults", i)
		}
	}

	// A panicking session: only its client is disconnected, and it comes
	// back by itself with the same address.
	at := time.Now()
	if r := admin(t, tp.srv, "POST", "/debug/panic?actor=session&addr="+addrs[0].String()); !strings.Contains(r, "200 OK") {
		t.Fatalf("inject session panic: %s", r)
	}
	for i := 1; i < 3; i++ {
		if d := flows[i].flowingSince(t, at, recoverWithin); d >= recoverWithin {
			t.Fatalf("client %d's traffic stalled after another client's session panicked", i)
		}
	}
	waitUntil(t, e2eStart, func() bool { return strings.Count(clients[0].logs.String(), "msg=connected") == 2 },
		"the victim client to reconnect")
	if d := flows[0].flowingSince(t, time.Now(), e2eStart); d >= e2eStart {
		t.Fatal("the victim client's traffic did not come back")
	}

	for _, kind := range []string{"router", "tun", "pool"} {
		at := time.Now()
		if r := admin(t, tp.srv, "POST", "/debug/panic?actor="+kind); !strings.Contains(r, "200 OK") {
			t.Fatalf("inject %s panic: %s", kind, r)
		}
		for i, f := range flows {
			if d := f.flowingSince(t, at, recoverWithin); d >= recoverWithin {
				t.Fatalf("after a %s panic, client %d's traffic did not resume within %v", kind, i, recoverWithin)
			}
		}
	}
	if !srv.running() {
		t.Fatal("the server process exited")
	}
	for i, c := range clients {
		if n := strings.Count(c.logs.String(), "msg=connected"); (i == 0 && n != 2) || (i > 0 && n != 1) {
			t.Fatalf("client %d connected %d times; only the session that panicked may reconnect", i, n)
		}
		if got := currentTUNAddr(tp.clients[i]); got != addrs[i] {
			t.Fatalf("client %d has %v, had %v", i, got, addrs[i])
		}
	}
	status := admin(t, tp.srv, "GET", "/status")
	for _, a := range addrs {
		if strings.Count(status, `"addr": "`+a.String()+`"`) != 1 {
			t.Fatalf("/status does not list %v exactly once:\n%s", a, status)
		}
	}
	metrics := admin(t, tp.srv, "GET", "/metrics")
	for _, want := range []string{"fourover6d_pool_leased 3", "fourover6d_sessions 3",
		`fourover6d_actor_failures_total{actor="session"} 1`, `fourover6d_actor_failures_total{actor="router"} 1`,
		`fourover6d_actor_failures_total{actor="tun"} 1`, `fourover6d_actor_failures_total{actor="pool"} 1`} {
		if !strings.Contains(metrics, want) {
			t.Fatalf("metrics lack %q:\n%s", want, metrics)
		}
	}
}

func TestE2EServerKilledAndRestarted(t *testing.T) {
	tp := newTopology(t, 1)
	srv := tp.runServer(t)
	client := tp.runClient(t, 0)
	addr := connectedAddr(t, client, tp.clients[0])
	if _, err := srv.stop(t, syscall.SIGKILL); err == nil {
		t.Fatal("SIGKILL reported a clean exit")
	}
	if out := tp.srv.Run(t, "nft", "list", "tables"); !strings.Contains(out, "4over6d") {
		t.Fatalf("expected the stale nftables table after SIGKILL, got %q", out)
	}
	srv = tp.runServer(t) // must replace the stale table and TUN
	waitUntil(t, e2eStart, func() bool { return strings.Count(client.logs.String(), "msg=connected") == 2 }, "the client to reconnect")
	if err := ping(t, tp.clients[0], 2); err != nil {
		t.Fatal(err)
	}
	if got := currentTUNAddr(tp.clients[0]); got != addr {
		t.Fatalf("after the restart the client has %v, had %v", got, addr)
	}
	if out := tp.srv.Run(t, "nft", "list", "tables"); strings.Count(out, "4over6d") != 1 {
		t.Fatalf("want exactly one 4over6d table, got %q", out)
	}
	if _, err := srv.stop(t, syscall.SIGTERM); err != nil {
		t.Fatalf("SIGTERM: %v", err)
	}
	if out := tp.srv.Run(t, "nft", "list", "tables"); strings.Contains(out, "4over6d") {
		t.Fatalf("table left after SIGTERM: %q", out)
	}
	if _, err := tp.srv.Netlink().LinkByName("4over6"); err == nil {
		t.Fatal("server TUN left after SIGTERM")
	}
}
