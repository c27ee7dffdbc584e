package main

// End-to-end tests of static reservations (-reservations FILE) with the
// real binary: a small pool (192.0.2.0/29: .2 to .6) is filled by one
// client host, and the address reserved for the other host is never among
// what the first gets, at start, after restarts and after a SIGHUP reload.

import (
	"context"
	"errors"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/4over6d/4over6d/messages/wire"
)

const staticPool = "192.0.2.0/29"

// writeReservations writes a reservations file as an operator would.
func writeReservations(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

// expectNoAddress sends 100 and expects the server to close the connection
// without a 101 (the pool has nothing left for this client).
func (c *rawClient) expectNoAddress(t *testing.T) {
	t.Helper()
	c.send(wire.TypeIPRequest, nil)
	_ = c.conn.SetReadDeadline(time.Now().Add(e2eWait))
	for {
		f, err := c.dec.Next()
		if errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatal("the server kept a connection open it has no address for")
		}
		if err != nil {
			return
		}
		if f.Type == wire.TypeIPReply {
			t.Fatalf("got a 101 %q; want the connection closed", f.Payload)
		}
	}
}

// fillFrom connects n sessions from src, fails if any gets one of the
// addresses in never, and returns their addresses.
func (tp *topology) fillFrom(t *testing.T, src netip.Addr, n int, never ...netip.Addr) []netip.Addr {
	t.Helper()
	var got []netip.Addr
	for i := range n {
		c := tp.dialFrom(t, src)
		c.handshake()
		for _, x := range never {
			if c.addr == x {
				t.Fatalf("session %d from %v got %v, reserved for another client (so far %v)", i, src, x, got)
			}
		}
		got = append(got, c.addr)
	}
	return got
}

// A reserved address goes to its client and to nobody else, also when the
// pool is otherwise full, also when the lease file remembers another
// client holding it, and after a restart.
func TestReservationsE2E(t *testing.T) {
	tp := newTopology(t)
	dir := t.TempDir()
	resv, leases := filepath.Join(dir, "reservations.json"), filepath.Join(dir, "leases.json")
	reserved := netip.MustParseAddr("192.0.2.5")

	// Without reservations the first host takes .2 to .5, and the lease
	// file remembers it had .5.
	s := tp.startServer(t, "-pool", staticPool, "-lease-file", leases)
	if got := tp.fillFrom(t, cliV6, 4); got[3] != reserved {
		t.Fatalf("first run: %v, want .5 last", got)
	}
	if err, _ := s.stop(t); err != nil {
		t.Fatalf("stop: %v", err)
	}
	writeReservations(t, resv, `{"reservations": [{"client": "`+cliV6b.String()+`", "addr": "192.0.2.5", "rate": "20mbit"}]}`)
	for run := range 2 {
		s := tp.startServer(t, "-pool", staticPool, "-lease-file", leases, "-reservations", resv)
		tp.fillFrom(t, cliV6, 4, reserved)
		tp.dialFrom(t, cliV6).expectNoAddress(t)
		owner := tp.dialFrom(t, cliV6b)
		owner.handshake()
		if owner.addr != reserved {
			t.Fatalf("run %d: the reserved host %v got %v, want %v", run, cliV6b, owner.addr, reserved)
		}
		owner.pingThrough(t, uint16(run+1))
		if m := tp.adminGet(t, "/metrics"); !strings.Contains(m, "fourover6d_pool_reserved 1") || !strings.Contains(m, "fourover6d_pool_leased 5") {
			t.Fatalf("run %d: metrics lack the reservation or the leases:\n%s", run, fourover6dSeries(m))
		}
		if err, _ := s.stop(t); err != nil {
			t.Fatalf("run %d: stop: %v", run, err)
		}
	}
	if data, _ := os.ReadFile(resv); !strings.Contains(string(data), `"addr": "192.0.2.5"`) {
		t.Fatalf("the reservations file changed without a change of reservations:\n%s", data)
	}
}

// SIGHUP reads the file again: a removed reservation frees its address,
// as does a changed one, an added one takes effect, and an entry for an address in use by
// another client or a bad one is skipped with a log line.
func TestSIGHUPReloadsReservations(t *testing.T) {
	tp := newTopology(t)
	resv := filepath.Join(t.TempDir(), "reservations.json")
	writeReservations(t, resv, `{"reservations": [
		{"client": "`+cliV6b.String()+`", "addr": "192.0.2.5"},
		{"client": "2001:db8:1::97", "addr": "192.0.2.4"}
	]}`)
	s := tp.startServer(t, "-pool", staticPool, "-reservations", resv)
	first := tp.fillFrom(t, cliV6, 1, netip.MustParseAddr("192.0.2.5"), netip.MustParseAddr("192.0.2.4"))[0]

	writeReservations(t, resv, `{"reservations": [
		{"client": "`+cliV6b.String()+`", "addr": "192.0.2.6"},
		{"client": "2001:db8:1::99", "addr": "`+first.String()+`"},
		{"client": "2001:db8:1::98", "addr": "192.0.2.1"}
	]}`)
	if err := s.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	s.logs.waitLine(t, "reservations reloaded")
	logs := s.logs.String()
	for _, want := range []string{"reservations=1 removed=1 skipped=2", "server's own address", "is leased now to"} {
		if !strings.Contains(logs, want) {
			t.Fatalf("reload log lacks %q:\n%s", want, logs)
		}
	}
	got := tp.fillFrom(t, cliV6, 3, netip.MustParseAddr("192.0.2.6"))
	for _, freed := range []string{"192.0.2.4", "192.0.2.5"} {
		if !containsAddr(got, netip.MustParseAddr(freed)) {
			t.Fatalf("%s, no longer reserved, was not leased: %v (and %v)", freed, got, first)
		}
	}
	tp.dialFrom(t, cliV6).expectNoAddress(t)
	owner := tp.dialFrom(t, cliV6b)
	owner.handshake()
	if owner.addr != netip.MustParseAddr("192.0.2.6") {
		t.Fatalf("after the reload %v got %v, want 192.0.2.6", cliV6b, owner.addr)
	}
}

func containsAddr(list []netip.Addr, a netip.Addr) bool {
	for _, x := range list {
		if x == a {
			return true
		}
	}
	return false
}

// A bad reservations file stops the start with exit status 1 and a line
// that names the file and the entry, and leaves nothing behind.
func TestBadReservationsFileExits1(t *testing.T) {
	tp := newTopology(t)
	resv := filepath.Join(t.TempDir(), "reservations.json")
	writeReservations(t, resv, `{"reservations": [
		{"client": "2001:db8:1::2", "addr": "192.0.2.5"},
		{"client": "2001:db8:1::3", "addr": "192.0.2.5"}
	]}`)
	const tunName = "e2eresv0"
	// A server that starts anyway is killed, and the test fails on it.
	ctx, cancel := context.WithTimeout(context.Background(), 4*e2eWait)
	defer cancel()
	out, err := tp.srv.Command(ctx, binary(t), "-listen", "["+srvV6.String()+"]:5678", "-pool", staticPool,
		"-dns", e2eDNS, "-tun", tunName, "-reservations", resv).CombinedOutput()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 1 {
		t.Fatalf("exit = %v, want status 1; output:\n%s", err, out)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	last := lines[len(lines)-1]
	for _, want := range []string{"4over6d:", resv, "entry 2", "192.0.2.5", "already reserved in entry 1"} {
		if !strings.Contains(last, want) {
			t.Fatalf("last line %q lacks %q; output:\n%s", last, want, out)
		}
	}
	if _, err := tp.srv.Netlink().LinkByName(tunName); err == nil {
		t.Error("TUN device left behind")
	}
	if out := tp.srv.Run(t, "nft", "list", "tables"); strings.Contains(out, natTable) {
		t.Errorf("nftables table left behind: %q", out)
	}
}
