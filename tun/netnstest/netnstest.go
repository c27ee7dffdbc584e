//go:build linux

// Package netnstest gives tests throwaway network namespaces, so that TUN
// devices, veth links, routes and nftables tables created by a test never
// touch the host and disappear with the test. Every helper fails the test
// on error rather than returning it, and registers its cleanup with
// t.Cleanup, so a failing test still leaves nothing behind.
package netnstest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// RequireRootEnv, when set to "1", turns the skip of RequireRoot into a
// failure, so CI cannot report skipped namespace tests as passing.
const RequireRootEnv = "FOUR6_REQUIRE_ROOT_TESTS"

// SkipRootEnv, when set to "1", skips the namespace tests even as root:
// `make check`, the quick run for contributors, needs neither root nor
// minutes of namespace setup. It is never set by scripts/test.sh or CI.
const SkipRootEnv = "FOUR6_SKIP_ROOT_TESTS"

// operUpTimeout and operUpPoll bound the wait for a new veth's carrier.
const (
	operUpTimeout = 5 * time.Second
	operUpPoll    = 5 * time.Millisecond
)

// netnsDir is where named namespaces are bind-mounted, as `ip netns` expects.
const netnsDir = "/run/netns"

// NS is a named network namespace created for one test, visible to
// `ip netns` under Name while the test runs.
type NS struct {
	// Name is the namespace's name under /run/netns.
	Name   string
	handle netns.NsHandle
	links  *netlink.Handle
}

// RequireRoot skips the test when not running as root, since creating
// namespaces needs it, or fails it when RequireRootEnv is "1".
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Getenv(SkipRootEnv) == "1" && os.Getenv(RequireRootEnv) != "1" {
		t.Skip("namespace test skipped: " + SkipRootEnv + "=1 (make check); the full suite is scripts/test.sh")
	}
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv(RequireRootEnv) == "1" {
		t.Fatalf("needs root: creates network namespaces (%s=1 forbids skipping)", RequireRootEnv)
	}
	t.Skip("needs root: creates network namespaces")
}

// New creates a namespace named prefix-<random>, brings its loopback up and
// deletes it when the test ends. Processes and sockets the test left inside
// keep the namespace alive but nameless; tests own and stop them.
func New(t testing.TB, prefix string) *NS {
	t.Helper()
	RequireRoot(t)
	ns := &NS{Name: fmt.Sprintf("%s-%08x", prefix, rand.Uint32()), handle: -1}
	err := onFreshThread(func() error {
		var err error
		ns.handle, err = netns.NewNamed(ns.Name)
		return err
	})
	t.Cleanup(func() {
		if err := ns.remove(); err != nil {
			t.Errorf("failed to remove network namespace %s: %v", ns.Name, err)
		}
	})
	if err != nil {
		t.Fatalf("failed to create network namespace %s: %v", ns.Name, err)
	}
	if ns.links, err = netlink.NewHandleAt(ns.handle); err != nil {
		t.Fatalf("failed to open netlink handle in %s: %v", ns.Name, err)
	}
	ns.setUp(t, "lo")
	return ns
}

// remove closes the handles and unmounts the name; the kernel frees the
// namespace, with its links, once nothing references it any more. It copes
// with a half-created namespace whose name file exists but is not mounted.
func (n *NS) remove() error {
	if n.links != nil {
		n.links.Close()
	}
	if n.handle.IsOpen() {
		n.handle.Close()
	}
	path := filepath.Join(netnsDir, n.Name)
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err := unix.Unmount(path, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) {
		return fmt.Errorf("failed to unmount %s: %w", path, err)
	}
	return os.Remove(path)
}

// Netlink returns a netlink handle bound to the namespace, for inspecting
// or changing its links, addresses and routes from any goroutine.
func (n *NS) Netlink() *netlink.Handle { return n.links }

// Do runs f on a locked OS thread switched into the namespace and waits for
// it. Sockets and TUN devices created inside f stay in the namespace after
// f returns; goroutines started by f do not run in it. f runs on another
// goroutine, so it must return errors rather than call t.Fatal.
func (n *NS) Do(f func() error) error {
	return onFreshThread(func() error {
		if err := netns.Set(n.handle); err != nil {
			return fmt.Errorf("failed to enter network namespace %s: %w", n.Name, err)
		}
		return f()
	})
}

// onFreshThread runs f on a new goroutine locked to its thread and puts the
// thread back into the original namespace afterwards. If that fails, or f
// never returns (runtime.Goexit), the thread stays locked and the runtime
// destroys it with the goroutine, so no other goroutine ever runs in the
// wrong namespace.
func onFreshThread(f func() error) error {
	done := make(chan error, 1)
	go func() {
		err := errors.New("function run in a namespace exited without returning")
		defer func() { done <- err }()
		runtime.LockOSThread()
		err = runAndRestore(f)
	}()
	return <-done
}

func runAndRestore(f func() error) error {
	orig, err := netns.Get()
	if err != nil {
		return fmt.Errorf("failed to get current network namespace: %w", err)
	}
	defer orig.Close()
	fErr := f()
	if err := netns.Set(orig); err != nil {
		return errors.Join(fErr, fmt.Errorf("failed to restore network namespace: %w", err))
	}
	runtime.UnlockOSThread()
	return fErr
}

// Command prepares `ip netns exec <ns> name args...`, for tools (ping, nft,
// a built daemon) that must run inside the namespace.
func (n *NS) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", n.Name, name}, args...)...)
}

// Run runs a command inside the namespace and returns its combined output,
// failing the test with that output if the command fails.
func (n *NS) Run(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := n.Command(t.Context(), name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %q in %s failed: %v\n%s", name, args, n.Name, err, out)
	}
	return string(out)
}

// Link connects two namespaces with a veth pair, assigns the addresses
// (IPv6 ones without duplicate address detection, so they are usable at
// once), brings both ends up and waits until the kernel reports them
// operationally up: the carrier change is applied asynchronously, up to a
// second later, and packets sent before that are dropped. It returns the
// interface names in a and b. The pair disappears with either namespace.
func Link(t testing.TB, a *NS, aAddrs []netip.Prefix, b *NS, bAddrs []netip.Prefix) (aIf, bIf string) {
	t.Helper()
	id := rand.Uint32() & 0xffffff
	aIf, bIf = fmt.Sprintf("va%06x", id), fmt.Sprintf("vb%06x", id)
	veth := &netlink.Veth{
		LinkAttrs:     netlink.LinkAttrs{Name: aIf},
		PeerName:      bIf,
		PeerNamespace: netlink.NsFd(b.handle),
	}
	if err := a.links.LinkAdd(veth); err != nil {
		t.Fatalf("failed to create veth %s in %s to %s in %s: %v", aIf, a.Name, bIf, b.Name, err)
	}
	a.addAddrs(t, aIf, aAddrs)
	b.addAddrs(t, bIf, bAddrs)
	a.setUp(t, aIf)
	b.setUp(t, bIf)
	a.waitOperUp(t, aIf)
	b.waitOperUp(t, bIf)
	return aIf, bIf
}

func (n *NS) addAddrs(t testing.TB, ifName string, addrs []netip.Prefix) {
	t.Helper()
	link := n.link(t, ifName)
	for _, p := range addrs {
		addr := &netlink.Addr{IPNet: ipNet(p)}
		if p.Addr().Is6() {
			addr.Flags = unix.IFA_F_NODAD
		}
		if err := n.links.AddrAdd(link, addr); err != nil {
			t.Fatalf("failed to add %v to %s in %s: %v", p, ifName, n.Name, err)
		}
	}
}

func (n *NS) setUp(t testing.TB, ifName string) {
	t.Helper()
	if err := n.links.LinkSetUp(n.link(t, ifName)); err != nil {
		t.Fatalf("failed to bring %s up in %s: %v", ifName, n.Name, err)
	}
}

// waitOperUp polls the link until its operational state is up.
func (n *NS) waitOperUp(t testing.TB, ifName string) {
	t.Helper()
	deadline := time.Now().Add(operUpTimeout)
	for n.link(t, ifName).Attrs().OperState != netlink.OperUp {
		if time.Now().After(deadline) {
			t.Fatalf("%s in %s is not operationally up after %v", ifName, n.Name, operUpTimeout)
		}
		time.Sleep(operUpPoll)
	}
}

func (n *NS) link(t testing.TB, ifName string) netlink.Link {
	t.Helper()
	link, err := n.links.LinkByName(ifName)
	if err != nil {
		t.Fatalf("failed to look up %s in %s: %v", ifName, n.Name, err)
	}
	return link
}

// AddRoute adds a route to dst via the gateway, e.g. a default route
// (0.0.0.0/0 or ::/0) towards the namespace on the other end of a Link.
func (n *NS) AddRoute(t testing.TB, dst netip.Prefix, via netip.Addr) {
	t.Helper()
	route := &netlink.Route{Dst: ipNet(dst.Masked()), Gw: via.AsSlice()}
	if err := n.links.RouteAdd(route); err != nil {
		t.Fatalf("failed to add route to %v via %v in %s: %v", dst, via, n.Name, err)
	}
}

// HTTP sends one plain HTTP/1.0 request to addr (host:port) from inside the
// namespace and returns the raw response, status line and headers
// included, so tests can check both. It fails the test if the exchange
// does not complete within timeout.
func (n *NS) HTTP(t testing.TB, method, addr, path string, timeout time.Duration) string {
	t.Helper()
	var resp []byte
	err := n.Do(func() error {
		conn, err := net.DialTimeout("tcp", addr, timeout)
		if err != nil {
			return err
		}
		defer conn.Close()
		_ = conn.SetDeadline(time.Now().Add(timeout))
		if _, err := fmt.Fprintf(conn, "%s %s HTTP/1.0\r\nHost: %s\r\n\r\n", method, path, addr); err != nil {
			return err
		}
		resp, err = io.ReadAll(conn)
		return err
	})
	if err != nil {
		t.Fatalf("%s http://%s%s in %s: %v", method, addr, path, n.Name, err)
	}
	return string(resp)
}

// IPv4Routes lists, sorted, the destinations of the main table's IPv4
// routes in the namespace: all of them, or those through link if it is not
// nil. Tests use it to check the routes a tunnel installs and removes.
func (n *NS) IPv4Routes(t testing.TB, link netlink.Link) []string {
	t.Helper()
	routes, err := n.links.RouteList(link, netlink.FAMILY_V4)
	if err != nil {
		t.Fatalf("failed to list routes in %s: %v", n.Name, err)
	}
	var out []string
	for _, r := range routes {
		if r.Dst != nil && r.Table == unix.RT_TABLE_MAIN {
			out = append(out, r.Dst.String())
		}
	}
	slices.Sort(out)
	return out
}

func ipNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}
