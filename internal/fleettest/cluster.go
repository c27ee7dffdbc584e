//go:build linux

package fleettest

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
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
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
)

// EtcdEnv names an etcd binary to use instead of the first `etcd` on
// PATH (Debian's etcd-server installs /usr/bin/etcd; scripts/deps.sh
// installs it).
const EtcdEnv = "FOUR6_ETCD"

// The switches of tun/netnstest.RequireRoot: the full suite sets the
// first, so a missing etcd fails there instead of skipping.
const (
	requireEnv = netnstest.RequireRootEnv
	skipEnv    = netnstest.SkipRootEnv
)

// maxMembers keeps member addresses within ::e1 to ::e9.
const maxMembers = 9

// requestTimeout bounds each request the Cluster's own helpers send.
const requestTimeout = 2 * time.Second

// healthKey is written and deleted by WaitHealthy to prove a quorum; it is
// outside any prefix a fleet uses, and never left behind.
const healthKey = "fleettest/health"

// Cluster is a real etcd cluster for tests, each member in its own
// namespace on a Fabric, so a test can stop, kill and restart members
// and watch what a fleet does. Like netnstest's helpers, its methods fail
// the test on error, so they belong on the test's goroutine (they lock,
// so a helper goroutine may read Endpoints or count keys meanwhile).
type Cluster struct {
	fabric  *Fabric
	etcd    string
	token   string
	spawner *spawner
	admin   *clientv3.Client // the Cluster's own client (health, key counts)

	mu      sync.Mutex
	members []*member
}

// EtcdPath returns the etcd binary. Without one it skips the test, or
// fails it as root and when FOUR6_REQUIRE_ROOT_TESTS=1.
func EtcdPath(t testing.TB) string {
	t.Helper()
	if p := os.Getenv(EtcdEnv); p != "" {
		return p
	}
	if p, err := exec.LookPath("etcd"); err == nil {
		return p
	}
	const reason = "no etcd found (apt-get install etcd-server, or set %s)"
	switch {
	case os.Getenv(requireEnv) == "1":
		t.Fatalf(reason+"; %s=1 forbids skipping", EtcdEnv, requireEnv)
	case os.Geteuid() == 0 && os.Getenv(skipEnv) != "1":
		t.Fatalf(reason+"; as root the fleet tests must run", EtcdEnv)
	}
	t.Skipf(reason, EtcdEnv)
	return ""
}

// StartCluster starts members etcd servers (named e1, e2, ...) at
// 2001:db8:f::e1, ::e2, ... on the fabric, client port 2379 and peer port
// 2380, data directories and logs in t.TempDir(), and returns once the
// cluster has a leader and answers a Put and a Get. The cleanup stops
// every member (by PID), prints the members' log tails if the test
// failed, and the namespaces go with netnstest's cleanups.
func StartCluster(t testing.TB, f *Fabric, members int) *Cluster {
	t.Helper()
	if members < 1 || members > maxMembers {
		t.Fatalf("StartCluster: %d members, want 1 to %d", members, maxMembers)
	}
	c := &Cluster{fabric: f, etcd: EtcdPath(t), token: fmt.Sprintf("fleettest-%08x", rand.Uint32())}
	dir := t.TempDir()
	for i := range members {
		m := &member{
			name:    fmt.Sprintf("e%d", i+1),
			addr:    memberAddr(i),
			dataDir: filepath.Join(dir, fmt.Sprintf("e%d.etcd", i+1)),
			logPath: filepath.Join(dir, fmt.Sprintf("e%d.log", i+1)),
		}
		m.ns = netnstest.New(t, fmt.Sprintf("%s-e%d", f.prefix, i+1))
		f.Attach(t, m.ns, netip.PrefixFrom(m.addr, FabricPrefix.Bits()))
		c.members = append(c.members, m)
	}
	c.spawner = newSpawner()
	c.admin = c.newClient(t)
	t.Cleanup(func() { c.cleanup(t) })
	for i := range c.members {
		c.start(t, i, "new")
	}
	c.WaitHealthy(t, Wait)
	return c
}

// memberAddr is member i's address: 2001:db8:f::e1 for i == 0.
func memberAddr(i int) netip.Addr {
	a := FabricPrefix.Addr().As16()
	a[15] = 0xe1 + byte(i)
	return netip.AddrFrom16(a)
}

func (c *Cluster) cleanup(t testing.TB) {
	if err := c.admin.Close(); err != nil && !errors.Is(err, context.Canceled) {
		t.Errorf("failed to close the cluster's client: %v", err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, m := range c.members {
		if m.proc == nil {
			continue
		}
		if err := m.proc.stop(syscall.SIGTERM); err != nil {
			t.Errorf("failed to stop etcd %s: %v", m.name, err)
		}
		m.proc = nil
	}
	c.spawner.close()
	if t.Failed() {
		for _, m := range c.members {
			t.Logf("last lines of etcd %s (%s):\n%s", m.name, m.logPath, tail(m.logPath, 40))
		}
	}
}

// Endpoints are the members' client URLs, "http://[2001:db8:f::e1]:2379"
// and so on, for nodes that run on the fabric.
func (c *Cluster) Endpoints() []string {
	eps := make([]string, len(c.members))
	for i, m := range c.members {
		eps[i] = m.clientURL()
	}
	return eps
}

// Client returns a client of the cluster for the test process, closed at
// cleanup. The test process runs in the host's namespace, which is not on
// the fabric (and gets no address there, see Fabric.DialContext), so the
// client's gRPC connections are opened from inside the hub namespace.
func (c *Cluster) Client(t testing.TB) *clientv3.Client {
	t.Helper()
	cli := c.newClient(t)
	t.Cleanup(func() { _ = cli.Close() })
	return cli
}

// newClient builds a client through the hub. gRPC waits up to 120 s
// (growing from 1 s) between reconnection attempts to an endpoint that
// refused it; capped at 1 s here, a test that restarts members measures
// etcd's recovery, not the client's backoff. Its log is discarded: it
// reports every retry while members are down, as tests make them.
func (c *Cluster) newClient(t testing.TB) *clientv3.Client {
	t.Helper()
	bo := backoff.DefaultConfig
	bo.MaxDelay = time.Second
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   c.Endpoints(),
		DialTimeout: requestTimeout,
		Logger:      zap.NewNop(),
		DialOptions: []grpc.DialOption{
			grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
				return c.fabric.DialContext(ctx, "tcp", addr)
			}),
			grpc.WithConnectParams(grpc.ConnectParams{Backoff: bo, MinConnectTimeout: requestTimeout}),
		},
	})
	if err != nil {
		t.Fatalf("failed to create an etcd client for %v: %v", c.Endpoints(), err)
	}
	return cli
}

// initialCluster is etcd's --initial-cluster value for every member.
func (c *Cluster) initialCluster() string {
	parts := make([]string, len(c.members))
	for i, m := range c.members {
		parts[i] = m.name + "=" + m.peerURL()
	}
	return strings.Join(parts, ",")
}

// start starts member i's etcd; state is etcd's initial cluster state.
func (c *Cluster) start(t testing.TB, i int, state string) {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	m := c.member(t, i)
	if m.proc != nil {
		t.Fatalf("etcd %s is already running (PID %d)", m.name, m.proc.cmd.Process.Pid)
	}
	p, err := startProcess(c.spawner, m, c.etcd, m.args(c.initialCluster(), state, c.token))
	if err != nil {
		t.Fatal(err)
	}
	m.proc = p
}

// member returns member i; the caller holds c.mu.
func (c *Cluster) member(t testing.TB, i int) *member {
	t.Helper()
	if i < 0 || i >= len(c.members) {
		t.Fatalf("no member %d: the cluster has members 0 to %d", i, len(c.members)-1)
	}
	return c.members[i]
}

// StartMember restarts member i (0-based: member 0 is e1 at ::e1) with
// its data directory, as a rebooted server would; it does not wait for
// the cluster (see WaitHealthy).
func (c *Cluster) StartMember(t testing.TB, i int) {
	t.Helper()
	c.start(t, i, "existing")
}

// StopMember stops member i gracefully (SIGTERM by PID) and waits for it
// to exit.
func (c *Cluster) StopMember(t testing.TB, i int) {
	t.Helper()
	c.signal(t, i, syscall.SIGTERM)
}

// KillMember kills member i (SIGKILL by PID), as a crash or power loss
// would, and waits for it to be gone.
func (c *Cluster) KillMember(t testing.TB, i int) {
	t.Helper()
	c.signal(t, i, syscall.SIGKILL)
}

func (c *Cluster) signal(t testing.TB, i int, sig syscall.Signal) {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	m := c.member(t, i)
	if m.proc == nil {
		t.Fatalf("etcd %s is not running", m.name)
	}
	err := m.proc.stop(sig)
	m.proc = nil
	if err != nil {
		t.Fatalf("failed to stop etcd %s: %v", m.name, err)
	}
}

// StopAll stops every running member (SIGTERM), as an etcd outage.
func (c *Cluster) StopAll(t testing.TB) {
	t.Helper()
	for i, running := range c.runningMembers() {
		if running {
			c.StopMember(t, i)
		}
	}
}

// StartAll starts every stopped member again; it does not wait for the
// cluster (see WaitHealthy), so a test can measure how long that takes.
func (c *Cluster) StartAll(t testing.TB) {
	t.Helper()
	for i, running := range c.runningMembers() {
		if !running {
			c.StartMember(t, i)
		}
	}
}

// runningMembers reports, per member, whether its process is started.
func (c *Cluster) runningMembers() []bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	running := make([]bool, len(c.members))
	for i, m := range c.members {
		running[i] = m.proc != nil
	}
	return running
}
