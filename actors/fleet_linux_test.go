//go:build linux

package actors

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/4over6d/4over6d/internal/fleettest"
	"github.com/4over6d/4over6d/messages/wire"
)

// fleetRig is three engines of one fleet on a real etcd: the engines run
// in this process on fake TUNs, listening in the fabric's hub namespace,
// where each test client dials from an address of its own (stickiness is
// by client address).
type fleetRig struct {
	t      *testing.T
	fab    *fleettest.Fabric
	etcd   *fleettest.Cluster
	nodes  map[string]*fleetNode
	prefix string
	grace  time.Duration
}

type fleetNode struct {
	name  string
	h     *harness
	fleet *Fleet
}

const rigTTL = 3 * time.Second

func newFleetRig(t *testing.T, names ...string) *fleetRig {
	return newFleetRigGrace(t, 30*time.Second, names...)
}

func newFleetRigGrace(t *testing.T, grace time.Duration, names ...string) *fleetRig {
	t.Helper()
	fab := fleettest.NewFabric(t, "afl")
	r := &fleetRig{t: t, fab: fab, etcd: fleettest.StartCluster(t, fab, 1), nodes: make(map[string]*fleetNode), prefix: "/t/", grace: grace}
	for i := range 48 {
		fab.Hub.Run(t, "ip", "addr", "add", clientAddr(i).String()+"/128", "dev", "lo")
	}
	for _, n := range names {
		r.start(n)
	}
	return r
}

func clientAddr(i int) netip.Addr {
	return netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 0, 0x0c, 14: byte(i >> 8), 15: byte(i + 1)})
}

func (r *fleetRig) join(name string) *Fleet {
	return r.joinVia(name, func(ctx context.Context, addr string) (net.Conn, error) {
		return r.fab.DialContext(ctx, "tcp", addr)
	})
}

func (r *fleetRig) joinVia(name string, dial func(ctx context.Context, addr string) (net.Conn, error)) *Fleet {
	r.t.Helper()
	f, err := r.tryJoin(name, dial)
	if err != nil {
		r.t.Fatalf("JoinFleet %s: %v", name, err)
	}
	return f
}

// tryJoin joins the rig's fleet with its plan, changed by opts.
func (r *fleetRig) tryJoin(name string, dial func(ctx context.Context, addr string) (net.Conn, error), opts ...func(*FleetConfig)) (*Fleet, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cfg := FleetConfig{Endpoints: r.etcd.Endpoints(), Node: name,
		NodeAddr: netip.MustParseAddr("2001:db8:f::a1"), Pool: testPool, BlockBits: 28, TTL: rigTTL,
		Prefix: r.prefix, Grace: r.grace, Dialer: dial}
	for _, o := range opts {
		o(&cfg)
	}
	return JoinFleet(ctx, cfg)
}

// A node whose plan differs from the fleet's (pool, block length, source
// prefix) is refused with an error naming both plans and the flags; the
// fleet goes on.
func TestFleetJoinRefusesAnotherPlan(t *testing.T) {
	r := newFleetRig(t, "n1")
	dial := func(ctx context.Context, addr string) (net.Conn, error) { return r.fab.DialContext(ctx, "tcp", addr) }
	for _, tc := range []struct {
		name   string
		change func(*FleetConfig)
		want   string
	}{
		{"pool", func(c *FleetConfig) { c.Pool = netip.MustParsePrefix("203.0.113.0/24") }, "ours is pool 203.0.113.0/24"},
		{"block bits", func(c *FleetConfig) { c.BlockBits = 27 }, "with /27 blocks"},
		{"source prefix", func(c *FleetConfig) { c.SourcePrefix = 64 }, "and /64 sources"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, err := r.tryJoin("other", dial, tc.change)
			if err == nil {
				_ = f.Close()
				t.Fatal("joined a fleet with another plan")
			}
			for _, want := range []string{"refusing to join", "pool 192.0.2.0/24 with /28 blocks and /128 sources", tc.want, "-source-prefix"} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q lacks %q", err, want)
				}
			}
		})
	}
	if got := r.etcd.Keys(t, r.prefix+"nodes/"); len(got) != 1 {
		t.Errorf("nodes after the refusals: %v, want n1 alone", got)
	}
	handshakeWithin(r.dial(r.nodes["n1"], 0), 10*time.Second)
}

func (r *fleetRig) start(name string) *fleetNode {
	r.t.Helper()
	return r.startWith(name, r.join(name))
}

func (r *fleetRig) startWith(name string, f *Fleet, opts ...func(*Config)) *fleetNode {
	r.t.Helper()
	r.t.Cleanup(func() { _ = f.Close() }) // after the engine's Close (cleanups run last-in first-out)
	var ln net.Listener
	if err := r.fab.Hub.Do(func() (err error) { ln, err = net.Listen("tcp6", "[::1]:0"); return err }); err != nil {
		r.t.Fatalf("listen in the hub: %v", err)
	}
	h := newHarness(r.t, func(c *Config) {
		c.Listener, c.Fleet, c.Grace = ln, f, r.grace
		for _, o := range opts {
			o(c)
		}
	})
	n := &fleetNode{name: name, h: h, fleet: f}
	r.nodes[name] = n
	return n
}

// dial connects client i to node n from client i's own address.
func (r *fleetRig) dial(n *fleetNode, i int) *client {
	r.t.Helper()
	var conn net.Conn
	err := r.fab.Hub.Do(func() (err error) {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: clientAddr(i).AsSlice()}, Timeout: 5 * time.Second}
		conn, err = d.Dial("tcp6", n.h.ln.Addr().String())
		return err
	})
	if err != nil {
		r.t.Fatalf("dial %s as client %d: %v", n.name, i, err)
	}
	return n.h.adopt(conn)
}

func (r *fleetRig) status(n *fleetNode) FleetStatus {
	r.t.Helper()
	st, err := n.h.srv.Fleet()
	if err != nil {
		r.t.Fatalf("Fleet() on %s: %v", n.name, err)
	}
	return st
}

func inBlocks(a netip.Addr, node FleetNode) bool {
	for _, b := range node.Blocks {
		if b.Contains(a) {
			return true
		}
	}
	for _, c := range node.Claims {
		if c == a {
			return true
		}
	}
	return false
}

func TestFleetAddressesAreDistinctAndInTheirNodesBlocks(t *testing.T) {
	r := newFleetRig(t, "n1", "n2", "n3")
	names := []string{"n1", "n2", "n3"}
	seen := make(map[netip.Addr]string)
	got := make(map[string][]netip.Addr)
	for i := range 24 { // 8 per node: more than one /28 block each
		n := r.nodes[names[i%3]]
		a := handshakeWithin(r.dial(n, i), 10*time.Second)
		if prev, dup := seen[a]; dup {
			t.Fatalf("client %d on %s got %v, already leased by %s", i, n.name, a, prev)
		}
		seen[a] = n.name
		got[n.name] = append(got[n.name], a)
	}
	st := r.status(r.nodes["n1"])
	if len(st.Nodes) != 3 || st.State != "ok" {
		t.Fatalf("fleet status: %+v, want 3 nodes, ok", st)
	}
	for _, node := range st.Nodes {
		for _, a := range got[node.Name] {
			if !inBlocks(a, node) {
				t.Errorf("%s leased %v outside its blocks %v", node.Name, a, node.Blocks)
			}
		}
	}
}

func TestFleetClientMovesWithItsAddress(t *testing.T) {
	r := newFleetRig(t, "n1", "n2")
	first := r.dial(r.nodes["n1"], 5)
	a := handshakeWithin(first, 10*time.Second)
	second := r.dial(r.nodes["n2"], 5)
	if b := handshakeWithin(second, 10*time.Second); b != a {
		t.Fatalf("moved client got %v on n2, had %v on n1", b, a)
	}
	first.expectClosed(10 * time.Second)
	eventually(t, 5*time.Second, "n1 counts the session closed as moved", func() bool {
		return r.nodes["n1"].h.srv.Metrics().ClosedBy(CloseMoved) == 1
	})
	st := r.status(r.nodes["n2"])
	for _, node := range st.Nodes {
		if node.Name == "n2" && !inBlocks(a, node) {
			t.Errorf("n2 serves %v but holds no block or claim for it: %+v", a, node)
		}
	}
}

func TestFleetDeadNodesClientGetsItsAddressBack(t *testing.T) {
	r := newFleetRig(t, "n1", "n2")
	victim := r.nodes["n2"]
	c := r.dial(victim, 7)
	a := handshakeWithin(c, 10*time.Second)
	// A crash: the engine stops without leaving the fleet (no revoke),
	// so its registration and blocks stay until the lease runs out.
	victim.fleet.abandon()
	victim.h.closeWithin(10*time.Second, "engine Close hung")
	start := time.Now()
	again := r.dial(r.nodes["n1"], 7)
	if b := handshakeWithin(again, rigTTL+10*time.Second); b != a {
		t.Fatalf("client of the dead node got %v, had %v", b, a)
	}
	t.Logf("address back after %v (TTL %v)", time.Since(start).Round(time.Millisecond), rigTTL)
	keys := r.etcd.Keys(t, r.prefix+"nodes/")
	if fmt.Sprint(keys) != fmt.Sprint([]string{r.prefix + "nodes/n1"}) {
		t.Errorf("nodes after the crash: %v, want only n1", keys)
	}
}

// tryHandshake is a 100/101 exchange that reports a closed connection
// instead of failing (a refused client).
func tryHandshake(c *client, d time.Duration) (netip.Addr, bool) {
	c.t.Helper()
	if _, err := c.conn.Write(wire.AppendFrame(nil, wire.TypeIPRequest, nil)); err != nil {
		return netip.Addr{}, false
	}
	f, err := c.tryNext(d)
	if err != nil || f.Type != wire.TypeIPReply {
		return netip.Addr{}, false
	}
	rep, err := wire.ParseIPReply(f.Payload)
	return rep.Addr, err == nil
}

func TestFleetWithoutEtcdKeepsSessionsAndRefusesNewOnes(t *testing.T) {
	r := newFleetRig(t, "n1")
	n := r.nodes["n1"]
	c := r.dial(n, 1)
	a := handshakeWithin(c, 10*time.Second)

	r.etcd.StopAll(t)
	eventually(t, 10*time.Second, "the node to turn read-only", func() bool { return n.h.srv.Metrics().FleetState.Load() == 1 })
	// The existing session still carries traffic both ways.
	c.send(wire.TypeDataRequest, ping(a, inetHost, 1))
	if got := n.h.written(5 * time.Second); netip.AddrFrom4([4]byte(got[12:16])) != a {
		t.Fatalf("packet from the existing session not written to the TUN")
	}
	// A new client is refused, and counted.
	refused := n.h.srv.Metrics().Refused(RefuseFleetUnavailable)
	if b, ok := tryHandshake(r.dial(n, 2), 5*time.Second); ok {
		t.Fatalf("a new client got %v while etcd was down", b)
	}
	if got := n.h.srv.Metrics().Refused(RefuseFleetUnavailable); got != refused+1 {
		t.Fatalf("fleet_unavailable refusals: %d, want %d", got, refused+1)
	}

	start := time.Now()
	r.etcd.StartAll(t)
	eventually(t, 20*time.Second, "the node to take sessions again", func() bool { return n.h.srv.Metrics().FleetState.Load() == 0 })
	b := handshakeWithin(r.dial(n, 3), 10*time.Second)
	t.Logf("new sessions accepted %v after etcd started again", time.Since(start).Round(time.Millisecond))
	if b == a {
		t.Fatalf("the new client got the existing session's address %v", a)
	}
}

func TestFleetGracefulLeaveLeavesNoKeys(t *testing.T) {
	r := newFleetRig(t, "n1", "n2")
	n2 := r.nodes["n2"]
	for i := range 3 {
		handshakeWithin(r.dial(n2, 10+i), 10*time.Second)
	}
	if got := len(r.etcd.Keys(t, r.prefix+"blocks/")); got == 0 {
		t.Fatal("no block held after three sessions")
	}
	n2.h.closeWithin(10*time.Second, "engine Close hung")
	if err := n2.fleet.Close(); err != nil {
		t.Fatalf("leaving the fleet: %v", err)
	}
	// The node lease is revoked: registration and blocks go at once; the
	// bindings stay for -grace, for clients moving to another node.
	if keys := r.etcd.Keys(t, r.prefix+"blocks/"); len(keys) != 0 {
		t.Errorf("blocks left after a graceful leave: %v", keys)
	}
	if keys := r.etcd.Keys(t, r.prefix+"nodes/"); fmt.Sprint(keys) != fmt.Sprint([]string{r.prefix + "nodes/n1"}) {
		t.Errorf("nodes after n2 left: %v", keys)
	}
	if got := len(r.etcd.Keys(t, r.prefix+"addrs/")); got != 3 {
		t.Errorf("bindings right after the leave: %d, want the 3 kept for -grace", got)
	}
}

func TestFleetBindingsAndBlocksGoAfterGrace(t *testing.T) {
	const grace = 3 * time.Second
	r := newFleetRigGrace(t, grace, "n1")
	c := r.dial(r.nodes["n1"], 1)
	handshakeWithin(c, 10*time.Second)
	if got := r.etcd.CountKeys(t, r.prefix+"addrs/"); got != 1 {
		t.Fatalf("bindings with one session: %d, want 1", got)
	}
	_ = c.conn.Close()
	// The binding waits out -grace after the session, then goes; the
	// empty block goes -grace after that.
	eventually(t, grace+10*time.Second, "the binding to go after -grace", func() bool {
		return r.etcd.CountKeys(t, r.prefix+"addrs/") == 0 && r.etcd.CountKeys(t, r.prefix+"clients/") == 0
	})
	eventually(t, grace+10*time.Second, "the empty block to be given back", func() bool {
		return r.etcd.CountKeys(t, r.prefix+"blocks/") == 0
	})
	if keys := r.etcd.Keys(t, r.prefix); fmt.Sprint(keys) != fmt.Sprint([]string{r.prefix + "config", r.prefix + "nodes/n1"}) {
		t.Errorf("keys left: %v, want only the plan and the node", keys)
	}
}
