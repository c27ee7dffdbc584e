package main

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/4over6d/4over6d/actors"
)

// A fleet node that cannot join (nothing answers at -etcd) does not
// start: exit status 1, a last line naming the etcd endpoints and the
// node, and nothing left on the host (TUN, VXLAN device, nftables table).
func TestFleetJoinFailureExits1(t *testing.T) {
	tp := newTopology(t)
	const tunName = "e2efleet0"
	etcd := "http://[" + srvV6.String() + "]:2379" // in the server's namespace, where nothing listens
	// A server that starts anyway is killed, and the test fails on it.
	ctx, cancel := context.WithTimeout(context.Background(), 4*e2eWait)
	defer cancel()
	out, err := tp.srv.Command(ctx, binary(t), "-listen", "["+srvV6.String()+"]:5678", "-pool", e2ePool, "-dns", e2eDNS,
		"-tun", tunName, "-etcd", etcd, "-node", "e2e-n1", "-etcd-ttl", "2s").CombinedOutput()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 1 {
		t.Fatalf("exit = %v, want status 1; output:\n%s", err, out)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	last := lines[len(lines)-1]
	for _, want := range []string{"4over6d:", "failed to join the fleet", etcd, `"e2e-n1"`} {
		if !strings.Contains(last, want) {
			t.Fatalf("last line %q lacks %q; output:\n%s", last, want, out)
		}
	}
	for _, name := range []string{tunName, actors.DefaultOverlayName} {
		if _, err := tp.srv.Netlink().LinkByName(name); err == nil {
			t.Errorf("%s left behind", name)
		}
	}
	if out := tp.srv.Run(t, "nft", "list", "tables"); strings.Contains(out, natTable) {
		t.Errorf("nftables table left behind: %q", out)
	}
}

// crashBudget is how soon the clients of a crashed node must have their
// addresses back on the others (issue #16: -etcd-ttl plus the client's
// backoff): the TTL, after which the crashed node's registration is gone,
// plus the client's backoff through five failed attempts (0.25, 0.5, 1, 2
// and 4 s, each ±20 %; cmd/4over6c/backoff.go).
const crashBudget = fleetTTL + 10*time.Second

// etcdBackBudget is how soon after etcd starts again a node must lease
// new addresses: an election (about two election timeouts of 1 s) and
// the node's reconnect (gRPC backoff capped at 1 s) with margin.
const etcdBackBudget = 10 * time.Second

// Series of the nodes' /metrics these tests read.
const (
	fleetStateSeries   = "fourover6d_fleet_state"
	fleetRefusedSeries = `fourover6d_connections_refused_total{reason="fleet_unavailable"}`
	fleetRenewSeries   = "fourover6d_fleet_lease_renew_failures_total"
)

// readOnlyLog is what a node logs when it turns read-only.
const readOnlyLog = "etcd cannot be reached safely"

// inOwn reports whether a is inside one of node's blocks or claims.
func inOwn(a netip.Addr, node actors.FleetNode) bool {
	return slices.ContainsFunc(node.Blocks, func(b netip.Prefix) bool { return b.Contains(a) }) || slices.Contains(node.Claims, a)
}

// clientsOn are the clients whose session is on node, by placed.
func (r *fleetE2E) clientsOn(placed map[netip.Addr]fleetSession, node string) []*fleetClient {
	var out []*fleetClient
	for _, c := range r.clients {
		if s, ok := placed[c.addr]; ok && s.node == node {
			out = append(out, c)
		}
	}
	return out
}

// checkUnchanged fails the test for every client of before whose session
// is not on the same node with the same address in now.
func checkUnchanged(t *testing.T, before, now map[netip.Addr]fleetSession) {
	t.Helper()
	for client, was := range before {
		if is, ok := now[client]; !ok || is != was {
			t.Errorf("client %v was on %s with %v; now %+v (present %v)", client, was.node, was.addr, is, ok)
		}
	}
}

// checkDistinct fails the test if an address is leased twice now.
func (r *fleetE2E) checkDistinct(t *testing.T) {
	t.Helper()
	for _, d := range duplicates(r.sessions(t)) {
		t.Errorf("address leased twice: %s", d)
	}
}

// pingAcross pings, from a client on each node of nodes, a client on the
// next one: traffic between nodes crosses their VXLAN overlay.
func (r *fleetE2E) pingAcross(t *testing.T, placed map[netip.Addr]fleetSession, nodes []*fleetNode) {
	t.Helper()
	for i, a := range nodes {
		b := nodes[(i+1)%len(nodes)]
		from, to := r.clientsOn(placed, a.name), r.clientsOn(placed, b.name)
		if len(from) == 0 || len(to) == 0 {
			t.Fatalf("no client on %s or %s to ping between", a.name, b.name)
		}
		r.ping(t, from[0], placed[to[0].addr].addr)
	}
}

// checkOwn fails the test for every session of placed whose address is
// not inside its node's own blocks or claims (as the node's
// /api/v1/fleet lists them), and returns those entries by node.
func (r *fleetE2E) checkOwn(t *testing.T, placed map[netip.Addr]fleetSession) map[string]actors.FleetNode {
	t.Helper()
	own := map[string]actors.FleetNode{}
	for _, n := range r.running() {
		own[n.name] = r.self(t, n)
	}
	for _, s := range placed {
		if self := own[s.node]; !inOwn(s.addr, self) {
			t.Errorf("node %s leased %v outside its blocks %v and claims %v", s.node, s.addr, self.Blocks, self.Claims)
		}
	}
	return own
}

// checkViewsAgree waits until every node's /api/v1/fleet shows every
// node with the blocks and claims that node lists as its own: the nodes
// route to each other's blocks by these views.
func (r *fleetE2E) checkViewsAgree(t *testing.T) {
	t.Helper()
	var diff []string
	waitFor(t, fleetWait, func() bool {
		diff = nil
		own := map[string]string{}
		for _, n := range r.running() {
			self := r.self(t, n)
			own[n.name] = fmt.Sprint(self.Blocks, self.Claims)
		}
		for _, n := range r.running() {
			for _, e := range r.fleetStatus(t, n).Nodes {
				if got := fmt.Sprint(e.Blocks, e.Claims); got != own[e.Name] {
					diff = append(diff, fmt.Sprintf("%s sees %s with %s, which has %s", n.name, e.Name, got, own[e.Name]))
				}
			}
		}
		return len(diff) == 0
	}, func() string { return "the nodes' views of each other to agree:\n" + strings.Join(diff, "\n") })
}

// Thirty clients spread over three nodes: every address is distinct in
// the fleet, each node's are inside the blocks (or single claims) it
// holds, the nodes' blocks do not overlap, every client's TUN has the
// address its node reports, and clients on different nodes reach each
// other through the nodes' VXLAN overlay (and the internet through each
// node's NAT).
func TestE2EFleetSpread(t *testing.T) {
	requirePing(t)
	r := newFleetE2E(t, 30)
	placed := r.waitPlaced(t, r.clients, fleetWait)
	r.checkDistinct(t)
	for _, c := range r.clients {
		want := placed[c.addr].addr
		waitFor(t, fleetWait, func() bool { return c.tunAddr() == want },
			func() string { return fmt.Sprintf("client %v's TUN to have %v (has %v)", c.addr, want, c.tunAddr()) })
	}
	own := r.checkOwn(t, placed)
	var spread []string
	for _, n := range r.nodes {
		on := r.clientsOn(placed, n.name)
		if len(on) == 0 {
			t.Errorf("node %s serves no client: the clients did not spread", n.name)
		}
		spread = append(spread, fmt.Sprintf("%s: %d sessions in %v", n.name, len(on), own[n.name].Blocks))
	}
	for i, a := range r.nodes {
		for _, b := range r.nodes[i+1:] {
			for _, pa := range own[a.name].Blocks {
				for _, pb := range own[b.name].Blocks {
					if pa.Overlaps(pb) {
						t.Errorf("blocks overlap: %v of %s and %v of %s", pa, a.name, pb, b.name)
					}
				}
			}
		}
	}
	t.Logf("spread: %s", strings.Join(spread, "; "))
	r.checkViewsAgree(t)
	r.pingAcross(t, placed, r.nodes)
	for _, n := range r.nodes {
		r.ping(t, r.clientsOn(placed, n.name)[0], fleetInetHost)
	}
	r.mon.verify(t)
}

// kill -9 of a node: its clients reconnect to the other two and, within
// -etcd-ttl plus their backoff, have their old addresses back; the other
// clients are untouched, clients on different nodes reach each other
// again, and no address is ever on two nodes at once.
func TestE2EFleetNodeCrash(t *testing.T) {
	requirePing(t)
	r := newFleetE2E(t, 30)
	before := r.waitPlaced(t, r.clients, fleetWait)
	victim := r.nodes[1]
	moving := r.clientsOn(before, victim.name)
	if len(moving) == 0 {
		t.Fatalf("no client on %s", victim.name)
	}
	killed := time.Now()
	r.killNode(t, victim)
	back := map[netip.Addr]time.Duration{}
	var after map[netip.Addr]fleetSession
	waitFor(t, crashBudget+fleetWait, func() bool {
		after = placements(r.sessions(t))
		for _, c := range moving {
			if _, done := back[c.addr]; !done {
				if _, ok := after[c.addr]; ok {
					back[c.addr] = time.Since(killed)
				}
			}
		}
		return len(back) == len(moving)
	}, func() string {
		return fmt.Sprintf("the %d clients of %s to lease again (%d did)", len(moving), victim.name, len(back))
	})
	times := slices.Sorted(maps.Values(back))
	t.Logf("the %d clients of the killed %s had their addresses back after %v (median), %v (last); -etcd-ttl %v, budget %v",
		len(moving), victim.name, times[len(times)/2].Round(time.Millisecond), times[len(times)-1].Round(time.Millisecond), fleetTTL, crashBudget)
	if last := times[len(times)-1]; last > crashBudget {
		t.Errorf("the last client was back %v after the crash, more than -etcd-ttl plus the client's backoff (%v)", last, crashBudget)
	}
	stayed := maps.Clone(before)
	for _, c := range moving {
		was, now := before[c.addr], after[c.addr]
		if now.addr != was.addr {
			t.Errorf("client %v had %v on %s, got %v on %s", c.addr, was.addr, was.node, now.addr, now.node)
		}
		delete(stayed, c.addr)
	}
	checkUnchanged(t, stayed, after)
	r.checkDistinct(t)
	r.checkOwn(t, after)
	r.checkViewsAgree(t)
	live := r.running()
	r.pingAcross(t, after, live)
	// The moved clients themselves reach the other node's clients and
	// the internet.
	for i, n := range live {
		on := slices.DeleteFunc(slices.Clone(moving), func(c *fleetClient) bool { return after[c.addr].node != n.name })
		if len(on) == 0 {
			continue
		}
		other := r.clientsOn(after, live[(i+1)%len(live)].name)
		r.ping(t, on[0], after[other[0].addr].addr)
		r.ping(t, on[0], fleetInetHost)
	}
	r.mon.verify(t)
}

// etcd outages: with one member of three (the leader) stopped nothing
// changes; with all stopped the nodes turn read-only (existing sessions
// keep moving traffic, new ones are refused as fleet_unavailable, no address is
// leased twice), and once etcd is back new sessions are leased within a
// few seconds.
func TestE2EFleetEtcdOutage(t *testing.T) {
	requirePing(t)
	r := newFleetE2E(t, 6)
	before := r.waitPlaced(t, r.clients, fleetWait)

	// One member down, the leader: the other two elect a new one, and the
	// nodes ride it out.
	leader := r.etcd.Leader(t)
	r.etcd.StopMember(t, leader)
	stopped := time.Now()
	first := r.addClient(t)
	placed := r.waitPlaced(t, []*fleetClient{first}, fleetWait)
	checkUnchanged(t, before, placed)
	r.checkDistinct(t)
	// A renewal lost to the election shows within one TTL: watch that long.
	time.Sleep(fleetTTL - time.Since(stopped))
	for _, n := range r.nodes {
		if s := r.metric(t, n, fleetStateSeries); s != 0 {
			t.Errorf("node %s is in fleet state %v with one etcd member of three down, want 0 (ok)", n.name, s)
		}
		if strings.Contains(n.proc.logs.String(), readOnlyLog) {
			t.Errorf("node %s turned read-only with one etcd member of three down", n.name)
		}
	}
	t.Logf("etcd leader e%d stopped: client %v leased %v, nothing else changed (renewal failures: %v)", leader+1, first.addr,
		placed[first.addr].addr, r.metricSum(t, fleetRenewSeries))

	// All members down.
	before = placed
	// Timed from the start of the stop: quorum is lost part-way through.
	down := time.Now()
	r.etcd.StopAll(t)
	waitFor(t, fleetWait, func() bool { return r.metricSum(t, fleetStateSeries) == float64(len(r.nodes)) },
		func() string { return "every node to turn read-only (fleet state 1)" })
	// Each node renewed its lease last before the quorum was lost; etcd
	// could let it run out a TTL after that, and the node must stop
	// leasing before (it aims at half the TTL).
	if ro := time.Since(down); ro >= fleetTTL {
		t.Errorf("the nodes turned read-only %v after etcd began to stop: not before their lease (-etcd-ttl %v) could have run out", ro, fleetTTL)
	}
	t.Logf("every node read-only %v after etcd began to stop (-etcd-ttl %v)", time.Since(down).Round(time.Millisecond), fleetTTL)
	refused := r.metricSum(t, fleetRefusedSeries)
	late := r.addClient(t)
	waitFor(t, fleetWait, func() bool { return r.metricSum(t, fleetRefusedSeries) > refused },
		func() string { return "the new client to be refused as fleet_unavailable" })
	r.pingAcross(t, before, r.nodes)
	for _, n := range r.nodes {
		r.ping(t, r.clientsOn(before, n.name)[0], fleetInetHost)
	}
	now := placements(r.sessions(t))
	if s, ok := now[late.addr]; ok {
		t.Errorf("client %v leased %v on %s while etcd was down", late.addr, s.addr, s.node)
	}
	checkUnchanged(t, before, now)
	r.checkDistinct(t)
	// The outage outlasts the nodes' lease TTL, so they come back through
	// the re-check of everything they hold, not within one renewal.
	time.Sleep(2*fleetTTL - time.Since(down))

	r.etcd.StartAll(t)
	up := time.Now()
	var probe netip.Addr
	var probeErr error
	waitFor(t, etcdBackBudget, func() bool { probe, probeErr = r.tryLease(r.nodes[0]); return probeErr == nil },
		func() string {
			return fmt.Sprintf("%s to lease a new session again (last: %v)", r.nodes[0].name, probeErr)
		})
	accepted := time.Since(up)
	waitFor(t, fleetWait, func() bool { return r.metricSum(t, fleetStateSeries) == 0 },
		func() string { return "every node to leave read-only" })
	ok := time.Since(up)
	after := r.waitPlaced(t, []*fleetClient{late}, fleetWait)
	t.Logf("etcd started again: %s leased a new session (%v) %v later, every node ok after %v, the refused client had %v after %v",
		r.nodes[0].name, probe, accepted.Round(time.Millisecond), ok.Round(time.Millisecond), after[late.addr].addr, time.Since(up).Round(time.Millisecond))
	checkUnchanged(t, before, after)
	r.checkDistinct(t)
	r.mon.verify(t)
}

// A node restarted gracefully (SIGTERM, then started again with the same
// -node): its registration, blocks and claims leave etcd at once, its
// clients move to the other nodes with their addresses, a new client of
// the restarted node gets an address no one else has, and once the
// fleet has settled etcd holds exactly what the live fleet accounts for:
// no key of a node that left, no binding without a session.
func TestE2EFleetGracefulRestart(t *testing.T) {
	r := newFleetE2E(t, 12)
	cli := r.etcd.Client(t)
	before := r.waitPlaced(t, r.clients, fleetWait)
	victim := r.nodes[0]
	moving := r.clientsOn(before, victim.name)
	if len(moving) == 0 {
		t.Fatalf("no client on %s", victim.name)
	}
	term := time.Now()
	took := r.stopNode(t, victim)
	// Bindings (addrs/, clients/) stay for -grace, for the moving
	// clients; everything under the node's lease is gone.
	for k, v := range r.etcdRecords(t, cli) {
		if strings.HasPrefix(k, "addrs/") || strings.HasPrefix(k, "clients/") {
			continue
		}
		if f := strings.Fields(v); len(f) > 0 && f[0] == victim.name {
			t.Errorf("%s = %q left in etcd after %s left the fleet", k, v, victim.name)
		}
	}
	after := r.waitPlaced(t, moving, fleetWait)
	t.Logf("%s exited %v after SIGTERM; its %d clients were on the other nodes with their addresses %v after it", victim.name,
		took.Round(time.Millisecond), len(moving), time.Since(term).Round(time.Millisecond))
	for _, c := range moving {
		if was, now := before[c.addr], after[c.addr]; now.addr != was.addr || now.node == victim.name {
			t.Errorf("client %v had %v on %s, got %v on %s", c.addr, was.addr, was.node, now.addr, now.node)
		}
	}
	r.startNode(t, victim)
	waitFor(t, fleetWait, func() bool {
		for _, n := range r.nodes {
			if len(r.fleetStatus(t, n).Nodes) != len(r.nodes) {
				return false
			}
		}
		return true
	}, func() string {
		return fmt.Sprintf("every node to list %d nodes after %s came back", len(r.nodes), victim.name)
	})
	// A new client of the restarted node: its block may hold the others'
	// single claims, which it must not lease.
	fresh := r.addClient(t)
	if k := fresh.order[0]; r.nodes[k] != victim {
		t.Fatalf("the new client lists %s first, want %s", r.nodes[k].name, victim.name)
	}
	placed := r.waitPlaced(t, []*fleetClient{fresh}, fleetWait)
	if s := placed[fresh.addr]; s.node != victim.name {
		t.Errorf("the new client is on %s, want the restarted %s", s.node, victim.name)
	}
	r.checkDistinct(t)
	r.checkOwn(t, placed)
	// Bindings of sessions that ended go -grace after them: wait that out.
	var diff []string
	waitFor(t, fleetGrace+fleetWait, func() bool {
		diff = recordDiff(r.etcdRecords(t, cli), r.liveRecords(t))
		return len(diff) == 0
	}, func() string { return "etcd to hold exactly the live fleet's keys:\n" + strings.Join(diff, "\n") })
	want := r.liveRecords(t)
	if n := r.etcd.CountKeys(t, fleetPrefix); n != len(want) {
		t.Errorf("%d keys under %s, want %d (plan, nodes, blocks, claims, two per session)", n, fleetPrefix, len(want))
	}
	t.Logf("%v after the SIGTERM etcd holds exactly the live fleet's %d keys", time.Since(term).Round(time.Millisecond), len(want))
	r.checkDistinct(t)
	r.checkViewsAgree(t)
	r.mon.verify(t)
}
