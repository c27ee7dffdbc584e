package main

// The rig of the fleet's end-to-end tests (issue #16): a real etcd cluster
// of three members (internal/fleettest), three real 4over6d nodes and real
// 4over6c clients, each in a namespace of its own on one fabric (an IPv6
// segment that is both the clients' access network and the nodes'
// underlay), and an internet namespace behind every node for its NAT.

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net/netip"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/4over6d/4over6d/actors"
	"github.com/4over6d/4over6d/internal/fleettest"
	"github.com/4over6d/4over6d/messages/wire"
	"github.com/4over6d/4over6d/tun/netnstest"
	"github.com/vishvananda/netlink"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// The fleet's settings in these tests.
const (
	// fleetTTL is -etcd-ttl: a crashed node's blocks stay taken this long.
	fleetTTL = 3 * time.Second
	// fleetGrace is -grace: a client's binding outlives its session (and
	// a crashed node) this long, well beyond fleetTTL plus a reconnect.
	fleetGrace     = 15 * time.Second
	fleetPrefix    = "/e2efleet/"
	fleetBlockBits = 28 // blocks of 16 addresses: a busy node holds several
	fleetPort      = 5678
	// fleetWait bounds every wait for the fleet to settle on a loaded
	// 2-core machine; the waits end as soon as their condition holds.
	fleetWait = 30 * time.Second
	// fleetPoll is how often the waits and the duplicate monitor look.
	fleetPoll = 100 * time.Millisecond
	// clientTUN is the client's default TUN name, one client per namespace.
	clientTUN = "4over6c"
)

// fleetInetHost is the internet host every node's NAT reaches (on the
// internet namespace's loopback, behind a /30 link to each node).
var fleetInetHost = netip.MustParseAddr("198.51.100.100")

// clientOrders are the six orders of the three nodes: client i lists the
// servers in order i%6, so the clients spread evenly over the nodes, and
// the clients of any one node over the other two when it goes.
var clientOrders = [][]int{{0, 1, 2}, {1, 2, 0}, {2, 0, 1}, {0, 2, 1}, {1, 0, 2}, {2, 1, 0}}

// fleetE2E is one fleet under test.
type fleetE2E struct {
	fab     *fleettest.Fabric
	etcd    *fleettest.Cluster
	inet    *netnstest.NS
	nodes   []*fleetNode
	clients []*fleetClient
	mon     *dupMonitor
}

// fleetNode is one 4over6d node: its namespace, on the fabric and linked
// to the internet, and its process while it runs.
type fleetNode struct {
	name string
	ns   *netnstest.NS
	addr netip.Addr // on the fabric: -listen, -node-addr
	proc *server    // nil while stopped
}

// fleetClient is one 4over6c in a namespace of its own.
type fleetClient struct {
	ns    *netnstest.NS
	addr  netip.Addr // on the fabric: the source the fleet knows it by
	proc  *server
	order []int // the nodes in its -server order
}

// fabricAddr is 2001:db8:f::HI:LO (hi 0x0a: nodes, 0x0c: clients; the
// hub is ::1 and the etcd members ::e1 to ::e3).
func fabricAddr(hi, lo byte) netip.Addr {
	a := fleettest.FabricPrefix.Addr().As16()
	a[14], a[15] = hi, lo
	return netip.AddrFrom16(a)
}

// newFleetE2E starts etcd, three nodes and n clients, and returns once
// every node serves; the duplicate monitor runs from then on.
func newFleetE2E(t *testing.T, n int) *fleetE2E {
	t.Helper()
	netnstest.RequireRoot(t)
	start := time.Now()
	fab := fleettest.NewFabric(t, "e2f")
	r := &fleetE2E{fab: fab, etcd: fleettest.StartCluster(t, fab, 3), inet: netnstest.New(t, "e2f-net")}
	r.inet.Run(t, "ip", "addr", "add", fleetInetHost.String()+"/32", "dev", "lo")
	for i := range 3 {
		node := &fleetNode{name: fmt.Sprintf("n%d", i+1), ns: netnstest.New(t, fmt.Sprintf("e2f-n%d", i+1)), addr: fabricAddr(0x0a, byte(i+1))}
		fab.Attach(t, node.ns, netip.PrefixFrom(node.addr, fleettest.FabricPrefix.Bits()))
		// A /30 to the internet per node: its NAT's egress and default route.
		own, far := netip.AddrFrom4([4]byte{198, 51, 100, byte(4*i + 1)}), netip.AddrFrom4([4]byte{198, 51, 100, byte(4*i + 2)})
		netnstest.Link(t, node.ns, []netip.Prefix{netip.PrefixFrom(own, 30)}, r.inet, []netip.Prefix{netip.PrefixFrom(far, 30)})
		node.ns.AddRoute(t, netip.MustParsePrefix("0.0.0.0/0"), far)
		r.nodes = append(r.nodes, node)
	}
	for _, node := range r.nodes {
		r.spawnNode(t, node)
	}
	for _, node := range r.nodes {
		node.proc.awaitServing(t, fleetWait)
	}
	for range n {
		r.addClient(t)
	}
	r.mon = startDupMonitor(t, r.nodes)
	t.Logf("fleet of 3 nodes, 3 etcd members and %d clients set up in %v", n, time.Since(start).Round(time.Millisecond))
	return r
}

// nodeArgs are the flags of node n: the fleet's, the admin endpoint on
// the namespace's loopback, and timers a loaded machine keeps up with.
func (r *fleetE2E) nodeArgs(n *fleetNode) []string {
	return []string{
		"-listen", netip.AddrPortFrom(n.addr, fleetPort).String(), "-node", n.name, "-node-addr", n.addr.String(),
		"-etcd", strings.Join(r.etcd.Endpoints(), ","), "-etcd-ttl", fleetTTL.String(), "-etcd-prefix", fleetPrefix,
		"-pool", e2ePool, "-block-bits", strconv.Itoa(fleetBlockBits), "-grace", fleetGrace.String(),
		"-nat", "auto", "-admin", adminAddr, "-dns", e2eDNS, "-heartbeat", "2s", "-timeout", "10s", "-log-level", "debug",
	}
}

// spawnNode starts node n's 4over6d without waiting for it.
func (r *fleetE2E) spawnNode(t *testing.T, n *fleetNode) {
	t.Helper()
	if n.proc != nil {
		t.Fatalf("node %s is already running", n.name)
	}
	n.proc = startProcess(t, n.ns, binary(t), r.nodeArgs(n))
}

// startNode starts node n again (same -node) and waits until it serves.
func (r *fleetE2E) startNode(t *testing.T, n *fleetNode) {
	t.Helper()
	r.spawnNode(t, n)
	n.proc.awaitServing(t, fleetWait)
}

// killNode kills node n with SIGKILL, as a crash: it leaves the fleet
// without a word, its etcd lease runs out after fleetTTL.
func (r *fleetE2E) killNode(t *testing.T, n *fleetNode) {
	t.Helper()
	if err := n.proc.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatalf("kill node %s: %v", n.name, err)
	}
	<-n.proc.done
	n.proc = nil
}

// stopNode stops node n with SIGTERM and returns how long it took; the
// node must exit with status 0.
func (r *fleetE2E) stopNode(t *testing.T, n *fleetNode) time.Duration {
	t.Helper()
	err, took := n.proc.stop(t)
	if err != nil {
		t.Fatalf("node %s exited with %v after SIGTERM; logs:\n%s", n.name, err, n.proc.logs.String())
	}
	n.proc = nil
	return took
}

// running are the nodes whose process runs.
func (r *fleetE2E) running() []*fleetNode {
	var out []*fleetNode
	for _, n := range r.nodes {
		if n.proc != nil {
			out = append(out, n)
		}
	}
	return out
}

// addClient starts one more 4over6c in a namespace of its own, listing
// every node in its turn of clientOrders.
func (r *fleetE2E) addClient(t *testing.T) *fleetClient {
	t.Helper()
	i := len(r.clients)
	c := &fleetClient{ns: netnstest.New(t, "e2f-c"), addr: fabricAddr(0x0c, byte(i+1)), order: clientOrders[i%len(clientOrders)]}
	r.fab.Attach(t, c.ns, netip.PrefixFrom(c.addr, fleettest.FabricPrefix.Bits()))
	var servers []string
	for _, k := range c.order {
		servers = append(servers, netip.AddrPortFrom(r.nodes[k].addr, fleetPort).String())
	}
	c.proc = startProcess(t, c.ns, raceClient.get(t), []string{"-server", strings.Join(servers, ","),
		"-heartbeat", "2s", "-timeout", "10s", "-log-level", "info"})
	r.clients = append(r.clients, c)
	return c
}

// fleetSession is one session as a node's /status shows it.
type fleetSession struct {
	node   string
	client netip.Addr // the client's IPv6 address (its source)
	addr   netip.Addr // invalid while the session waits for its lease
}

// readSessions reads node n's /status, failing softly: a node that is
// down or starting answers nothing.
func readSessions(n *fleetNode) ([]fleetSession, error) {
	code, body, err := tryAdminIn(n.ns, "GET", "/status")
	if err != nil {
		return nil, err
	}
	if code != 200 {
		return nil, fmt.Errorf("GET /status on %s: %d %s", n.name, code, body)
	}
	var doc statusDoc
	if err := json.Unmarshal([]byte(body), &doc); err != nil {
		return nil, fmt.Errorf("GET /status on %s: %w", n.name, err)
	}
	out := make([]fleetSession, 0, len(doc.Sessions))
	for _, s := range doc.Sessions {
		client, err := netip.ParseAddrPort(s.Client)
		if err != nil {
			return nil, fmt.Errorf("GET /status on %s: client %q: %w", n.name, s.Client, err)
		}
		fs := fleetSession{node: n.name, client: client.Addr()}
		if s.Addr != "" {
			if fs.addr, err = netip.ParseAddr(s.Addr); err != nil {
				return nil, fmt.Errorf("GET /status on %s: addr %q: %w", n.name, s.Addr, err)
			}
		}
		out = append(out, fs)
	}
	return out, nil
}

// sessions reads every running node's sessions.
func (r *fleetE2E) sessions(t *testing.T) []fleetSession {
	t.Helper()
	var all []fleetSession
	for _, n := range r.running() {
		s, err := readSessions(n)
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, s...)
	}
	return all
}

// duplicates lists every address that more than one session holds.
func duplicates(sessions []fleetSession) []string {
	holders := map[netip.Addr][]string{}
	for _, s := range sessions {
		if s.addr.IsValid() {
			holders[s.addr] = append(holders[s.addr], s.node+" ("+s.client.String()+")")
		}
	}
	var out []string
	for a, h := range holders {
		if len(h) > 1 {
			out = append(out, fmt.Sprintf("%v on %s", a, strings.Join(h, " and ")))
		}
	}
	slices.Sort(out)
	return out
}

// placements are the leased sessions of sessions by client; a client
// with two (one of them ending) shows the last read.
func placements(sessions []fleetSession) map[netip.Addr]fleetSession {
	out := map[netip.Addr]fleetSession{}
	for _, s := range sessions {
		if s.addr.IsValid() {
			out[s.client] = s
		}
	}
	return out
}

// waitPlaced waits until every one of clients has a leased session and
// returns the placements of all clients then.
func (r *fleetE2E) waitPlaced(t *testing.T, clients []*fleetClient, limit time.Duration) map[netip.Addr]fleetSession {
	t.Helper()
	var got map[netip.Addr]fleetSession
	var missing []string
	waitFor(t, limit, func() bool {
		got, missing = placements(r.sessions(t)), nil
		for _, c := range clients {
			if _, ok := got[c.addr]; !ok {
				missing = append(missing, c.addr.String())
			}
		}
		return len(missing) == 0
	}, func() string { return fmt.Sprintf("clients %v to have an address", missing) })
	return got
}

// fleetStatus is GET /api/v1/fleet on node n.
func (r *fleetE2E) fleetStatus(t *testing.T, n *fleetNode) actors.FleetStatus {
	t.Helper()
	code, body, err := tryAdminIn(n.ns, "GET", "/api/v1/fleet")
	if err != nil || code != 200 {
		t.Fatalf("GET /api/v1/fleet on %s: %d %v %s", n.name, code, err, body)
	}
	var st actors.FleetStatus
	if err := json.Unmarshal([]byte(body), &st); err != nil {
		t.Fatalf("GET /api/v1/fleet on %s: %v\n%s", n.name, err, body)
	}
	return st
}

// self is node n's own entry in its /api/v1/fleet.
func (r *fleetE2E) self(t *testing.T, n *fleetNode) actors.FleetNode {
	t.Helper()
	st := r.fleetStatus(t, n)
	for _, e := range st.Nodes {
		if e.Self {
			return e
		}
	}
	t.Fatalf("/api/v1/fleet on %s lists no node as itself: %+v", n.name, st)
	return actors.FleetNode{}
}

// metric is one series of node n's /metrics (0 when absent).
func (r *fleetE2E) metric(t *testing.T, n *fleetNode, series string) float64 {
	t.Helper()
	code, body, err := tryAdminIn(n.ns, "GET", "/metrics")
	if err != nil || code != 200 {
		t.Fatalf("GET /metrics on %s: %d %v", n.name, code, err)
	}
	v, _ := metricValue(body, series)
	return v
}

// metricSum is metric summed over the running nodes.
func (r *fleetE2E) metricSum(t *testing.T, series string) float64 {
	t.Helper()
	var sum float64
	for _, n := range r.running() {
		sum += r.metric(t, n, series)
	}
	return sum
}

// tunAddr is the IPv4 address on client c's TUN, invalid when none.
func (c *fleetClient) tunAddr() netip.Addr {
	link, err := c.ns.Netlink().LinkByName(clientTUN)
	if err != nil {
		return netip.Addr{}
	}
	addrs, err := c.ns.Netlink().AddrList(link, netlink.FAMILY_V4)
	if err != nil || len(addrs) == 0 {
		return netip.Addr{}
	}
	a, _ := netip.AddrFromSlice(addrs[0].IP)
	return a.Unmap()
}

// ping waits until an echo request from client c's namespace to dst is
// answered (through c's tunnel: the client routes all IPv4 into it).
func (r *fleetE2E) ping(t *testing.T, c *fleetClient, dst netip.Addr) {
	t.Helper()
	var out []byte
	waitFor(t, fleetWait, func() bool {
		var err error
		out, err = c.ns.Command(t.Context(), "ping", "-n", "-c", "1", "-W", "1", dst.String()).CombinedOutput()
		return err == nil
	}, func() string { return fmt.Sprintf("an answer to ping %v from %v: %s", dst, c.addr, out) })
}

// tryLease opens a session to node n from the fabric's hub with the raw
// protocol and returns the address the node leases (101), or why none.
func (r *fleetE2E) tryLease(n *fleetNode) (netip.Addr, error) {
	ctx, cancel := context.WithTimeout(context.Background(), e2eWait)
	defer cancel()
	conn, err := r.fab.DialContext(ctx, "tcp6", netip.AddrPortFrom(n.addr, fleetPort).String())
	if err != nil {
		return netip.Addr{}, err
	}
	defer conn.Close()
	dec := wire.NewDecoder(conn)
	defer dec.Release()
	_ = conn.SetDeadline(time.Now().Add(e2eWait))
	if _, err := conn.Write(wire.AppendFrame(nil, wire.TypeIPRequest, nil)); err != nil {
		return netip.Addr{}, err
	}
	f, err := dec.Next()
	if err != nil {
		return netip.Addr{}, err
	}
	if f.Type != wire.TypeIPReply {
		return netip.Addr{}, fmt.Errorf("frame %d from %s, want 101", f.Type, n.name)
	}
	rep, err := wire.ParseIPReply(f.Payload)
	return rep.Addr, err
}

// etcdRecords reads every key under the fleet's prefix with what its
// value says (see describeRecord), straight from etcd.
func (r *fleetE2E) etcdRecords(t *testing.T, cli *clientv3.Client) map[string]string {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), e2eWait)
	defer cancel()
	resp, err := cli.Get(ctx, fleetPrefix, clientv3.WithPrefix())
	if err != nil {
		t.Fatalf("read %s from etcd: %v", fleetPrefix, err)
	}
	out := make(map[string]string, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		out[strings.TrimPrefix(string(kv.Key), fleetPrefix)] = describeRecord(kv.Value)
	}
	return out
}

// describeRecord is the part of a fleet record these tests compare: the
// node of a registration, block, claim or move, the node and client of a
// binding, the address of a client index (docs/fleet.md); "" for the
// plan.
func describeRecord(v []byte) string {
	var rec struct {
		Name, Node, Client, Addr, Pool string
	}
	if err := json.Unmarshal(v, &rec); err != nil {
		return "malformed: " + string(v)
	}
	if rec.Pool != "" {
		return ""
	}
	return strings.Join(slices.DeleteFunc([]string{rec.Name, rec.Node, rec.Client, rec.Addr}, func(s string) bool { return s == "" }), " ")
}

// liveRecords is what etcd must hold for the fleet as its nodes report
// it: the plan, one registration per running node (with its underlay
// address), the blocks and claims
// each node lists as its own, and a binding and client index per leased
// session, naming the node that serves it.
func (r *fleetE2E) liveRecords(t *testing.T) map[string]string {
	t.Helper()
	want := map[string]string{"config": ""}
	for _, n := range r.running() {
		want["nodes/"+n.name] = n.name + " " + n.addr.String()
		self := r.self(t, n)
		for _, b := range self.Blocks {
			want["blocks/"+b.Addr().String()] = n.name
		}
		for _, c := range self.Claims {
			want["claims/"+c.String()] = n.name
		}
	}
	for _, s := range r.sessions(t) {
		if s.addr.IsValid() {
			want["addrs/"+s.addr.String()] = s.node + " " + s.client.String()
			want["clients/"+s.client.String()] = s.addr.String()
		}
	}
	return want
}

// recordDiff lists the keys on which got and want differ.
func recordDiff(got, want map[string]string) []string {
	var out []string
	for _, k := range slices.Sorted(maps.Keys(got)) {
		if w, ok := want[k]; !ok {
			out = append(out, fmt.Sprintf("%s = %q should not be there", k, got[k]))
		} else if w != got[k] {
			out = append(out, fmt.Sprintf("%s = %q, want %q", k, got[k], w))
		}
	}
	for _, k := range slices.Sorted(maps.Keys(want)) {
		if _, ok := got[k]; !ok {
			out = append(out, fmt.Sprintf("%s missing (want %q)", k, want[k]))
		}
	}
	return out
}

// waitFor polls cond every fleetPoll until it holds, failing the test
// after limit with what() as the reason.
func waitFor(t *testing.T, limit time.Duration, cond func() bool, what func() string) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", limit, what())
		}
		time.Sleep(fleetPoll)
	}
}

// requirePing fails the test early without ping (iputils-ping).
func requirePing(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("ping"); err != nil {
		t.Fatalf("ping (iputils-ping) is needed: %v", err)
	}
}

// dupMonitor samples every node's /status every fleetPoll, all nodes at
// the same moment, from its start to its verify, and records each address
// that two sessions held in one sample (on two nodes, or twice on one).
// It owns one goroutine, which verify (or the cleanup) ends.
type dupMonitor struct {
	nodes []*fleetNode // name and namespace only: nodes down just do not answer
	stop  chan struct{}
	done  chan struct{}
	halt  sync.Once

	mu      sync.Mutex
	samples int // samples taken
	leased  int // samples in which some address was leased
	dups    []string
}

func startDupMonitor(t *testing.T, nodes []*fleetNode) *dupMonitor {
	m := &dupMonitor{nodes: nodes, stop: make(chan struct{}), done: make(chan struct{})}
	go m.run()
	t.Cleanup(m.end)
	return m
}

func (m *dupMonitor) run() {
	defer close(m.done)
	tick := time.NewTicker(fleetPoll)
	defer tick.Stop()
	for {
		select {
		case <-m.stop:
			return
		case <-tick.C:
			m.sample()
		}
	}
}

// sample reads all nodes concurrently, so the answers describe one instant
// as closely as the endpoints allow.
func (m *dupMonitor) sample() {
	at := time.Now()
	answers := make([][]fleetSession, len(m.nodes))
	var wg sync.WaitGroup
	for i, n := range m.nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			answers[i], _ = readSessions(n)
		}()
	}
	wg.Wait()
	all := slices.Concat(answers...)
	dups := duplicates(all)
	m.mu.Lock()
	defer m.mu.Unlock()
	m.samples++
	if len(placements(all)) > 0 {
		m.leased++
	}
	for _, d := range dups {
		m.dups = append(m.dups, fmt.Sprintf("%s: %s", at.Format("15:04:05.000"), d))
	}
}

func (m *dupMonitor) end() {
	m.halt.Do(func() { close(m.stop) })
	<-m.done
}

// verify stops the monitor and fails the test for every duplicate seen;
// a monitor that never saw a leased address proves nothing and fails too.
func (m *dupMonitor) verify(t *testing.T) {
	t.Helper()
	m.end()
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, d := range m.dups {
		t.Errorf("address leased twice at one sample: %s", d)
	}
	if m.leased == 0 {
		t.Errorf("the duplicate monitor took %d samples and saw no leased address in any", m.samples)
	}
	t.Logf("duplicate monitor: %d samples of every node's /status every %v, %d with leases, %d duplicates", m.samples, fleetPoll, m.leased, len(m.dups))
}
