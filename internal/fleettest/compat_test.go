//go:build linux

package fleettest

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/4over6d/4over6d/tun/netnstest"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// TestClientFeaturesAgainstTheServer checks, with the client module the
// fleet builds on (3.5) against Debian's server (3.4), each feature the
// fleet uses: leases that expire and take their keys along, claims as
// create-if-absent transactions, watches from a revision, counts.
func TestClientFeaturesAgainstTheServer(t *testing.T) {
	netnstest.RequireRoot(t)
	c := StartCluster(t, NewFabric(t, "ftapi"), 3)
	t.Run("lease expiry deletes its key and the watch sees every event", func(t *testing.T) {
		testLeaseAndWatch(t, c)
	})
	t.Run("create-if-absent claim: one winner, the others see the owner", func(t *testing.T) {
		testClaim(t, c)
	})
	t.Run("count only", func(t *testing.T) {
		testCountOnly(t, c)
	})
}

func testLeaseAndWatch(t *testing.T, c *Cluster) {
	cli := c.Client(t)
	const prefix = "/fleettest/watch/"
	// etcd raises a TTL to its minimum, 1.5 election timeouts rounded up
	// to seconds: 2 s here.
	const ttl = 2
	short, err := cli.Grant(ctxFor(t, Wait), 1)
	if err != nil || short.TTL != ttl {
		t.Fatalf("grant of 1 s = %v, %v; want it raised to %d s", short, err, ttl)
	}
	lease, err := cli.Grant(ctxFor(t, Wait), ttl)
	if err != nil || lease.TTL != ttl {
		t.Fatalf("grant of %d s = %v, %v", ttl, lease, err)
	}
	before, err := cli.Get(ctxFor(t, Wait), prefix, clientv3.WithPrefix())
	if err != nil {
		t.Fatalf("get: %v", err)
	}
	rev := before.Header.Revision
	mustDo(t, cli, clientv3.OpPut(prefix+"leased", "a", clientv3.WithLease(lease.ID)))
	mustDo(t, cli, clientv3.OpPut(prefix+"plain", "b"))
	mustDo(t, cli, clientv3.OpDelete(prefix+"plain"))
	mustDo(t, cli, clientv3.OpPut("/fleettest/outside", "c"))
	ka, err := cli.KeepAliveOnce(ctxFor(t, Wait), lease.ID)
	if err != nil || ka.TTL != ttl {
		t.Fatalf("keep alive once = %v, %v; want TTL %d", ka, err, ttl)
	}
	renewed := time.Now()

	// Started after the writes: WithRev(rev+1) replays them first.
	events := cli.Watch(ctxFor(t, 4*ttl*time.Second+Wait), prefix, clientv3.WithPrefix(), clientv3.WithRev(rev+1))
	want := []string{"PUT leased", "PUT plain", "DELETE plain", "DELETE leased"}
	var got []string
	for len(got) < len(want) {
		resp, ok := <-events
		if !ok {
			t.Fatalf("watch closed after %v, want %v", got, want)
		}
		if err := resp.Err(); err != nil {
			t.Fatalf("watch: %v (after %v)", err, got)
		}
		for _, ev := range resp.Events {
			got = append(got, fmt.Sprintf("%s %s", ev.Type, string(ev.Kv.Key[len(prefix):])))
			if ev.Type == mvccpb.DELETE && string(ev.Kv.Key) == prefix+"leased" {
				t.Logf("lease of TTL %ds expired %v after its last renewal", ttl, time.Since(renewed).Round(time.Millisecond))
			}
		}
	}
	if !slices.Equal(got, want) {
		t.Fatalf("watch events %v, want %v", got, want)
	}
	if since := time.Since(renewed); since < ttl*time.Second {
		t.Errorf("key deleted %v after the renewal, before the TTL of %ds", since, ttl)
	}
	if n := c.CountKeys(t, prefix); n != 0 {
		t.Errorf("%d keys left under %s (%v), want the leased key gone", n, prefix, c.Keys(t, prefix))
	}
	live, err := cli.TimeToLive(ctxFor(t, Wait), lease.ID)
	if err != nil || live.TTL != -1 {
		t.Errorf("time to live of the expired lease = %v, %v; want TTL -1", live, err)
	}
}

func mustDo(t *testing.T, cli *clientv3.Client, op clientv3.Op) {
	t.Helper()
	if _, err := cli.Do(ctxFor(t, Wait), op); err != nil {
		t.Fatalf("%s %s: %v", opName(op), op.KeyBytes(), err)
	}
}

func opName(op clientv3.Op) string {
	switch {
	case op.IsPut():
		return "put"
	case op.IsDelete():
		return "delete"
	default:
		return "get"
	}
}

// claimResult is one contender's view of the claim transaction.
type claimResult struct {
	won   bool
	owner string           // the holder's value, when not won
	lease clientv3.LeaseID // the holder's lease, when not won
	err   error
}

func testClaim(t *testing.T, c *Cluster) {
	const key = "/fleettest/claims/192.0.2.0-26"
	const contenders = 5
	results := make([]claimResult, contenders)
	leases := make([]clientv3.LeaseID, contenders)
	var wg sync.WaitGroup
	for i := range contenders {
		cli := c.Client(t)
		lease, err := cli.Grant(ctxFor(t, Wait), 10)
		if err != nil {
			t.Fatalf("grant: %v", err)
		}
		leases[i] = lease.ID
		ctx := ctxFor(t, Wait)
		wg.Go(func() { results[i] = claim(ctx, cli, key, fmt.Sprintf("node-%d", i), lease.ID) })
	}
	wg.Wait()

	var winners []int
	for i, r := range results {
		if r.err != nil {
			t.Fatalf("contender %d: %v", i, r.err)
		}
		if r.won {
			winners = append(winners, i)
		}
	}
	if len(winners) != 1 {
		t.Fatalf("winners %v, want exactly one", winners)
	}
	w := winners[0]
	for i, r := range results {
		if !r.won && (r.owner != fmt.Sprintf("node-%d", w) || r.lease != leases[w]) {
			t.Errorf("contender %d saw owner %q with lease %x, want node-%d with %x", i, r.owner, r.lease, w, leases[w])
		}
	}
	cli := c.Client(t)
	if _, err := cli.Revoke(ctxFor(t, Wait), leases[w]); err != nil {
		t.Fatalf("revoke: %v", err)
	}
	if n := c.CountKeys(t, key); n != 0 {
		t.Errorf("the claim outlived its revoked lease")
	}
	late := leases[(w+1)%contenders]
	if r := claim(ctxFor(t, Wait), cli, key, "late", late); r.err != nil || !r.won {
		t.Errorf("claim after the owner's lease went: won %v (%v), want a win", r.won, r.err)
	}
}

// claim is the fleet's block claim: create the key bound to the lease if
// absent, else read who holds it. It runs on its own goroutine, so it
// reports errors instead of failing the test.
func claim(ctx context.Context, cli *clientv3.Client, key, node string, lease clientv3.LeaseID) claimResult {
	resp, err := cli.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
		Then(clientv3.OpPut(key, node, clientv3.WithLease(lease))).
		Else(clientv3.OpGet(key)).
		Commit()
	if err != nil {
		return claimResult{err: fmt.Errorf("txn: %w", err)}
	}
	if resp.Succeeded {
		return claimResult{won: true}
	}
	kvs := resp.Responses[0].GetResponseRange().Kvs
	if len(kvs) != 1 {
		return claimResult{err: fmt.Errorf("lost the claim but the else branch read %d keys", len(kvs))}
	}
	return claimResult{owner: string(kvs[0].Value), lease: clientv3.LeaseID(kvs[0].Lease)}
}

func testCountOnly(t *testing.T, c *Cluster) {
	cli := c.Client(t)
	const prefix = "/fleettest/count/"
	for _, k := range []string{prefix + "a", prefix + "b", prefix + "c/d", "/fleettest/countx"} {
		mustDo(t, cli, clientv3.OpPut(k, "v"))
	}
	resp, err := cli.Get(ctxFor(t, Wait), prefix, clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		t.Fatalf("count: %v", err)
	}
	if resp.Count != 3 || len(resp.Kvs) != 0 {
		t.Errorf("count-only get: count %d with %d values, want 3 and none", resp.Count, len(resp.Kvs))
	}
	if n, keys := c.CountKeys(t, prefix), c.Keys(t, prefix); n != 3 || !slices.Equal(keys, []string{prefix + "a", prefix + "b", prefix + "c/d"}) {
		t.Errorf("CountKeys %d, Keys %v; want 3: a, b, c/d", n, keys)
	}
}
