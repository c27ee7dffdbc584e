//go:build linux

package fleettest

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/4over6d/4over6d/tun/netnstest"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/goleak"
)

// ctxFor is a request deadline under the test's context.
func ctxFor(t *testing.T, d time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), d)
	t.Cleanup(cancel)
	return ctx
}

// putWithin retries a Put (each try bounded by a second) until one
// succeeds, and returns how long that took, failing after limit.
func putWithin(t *testing.T, cli *clientv3.Client, key, value string, limit time.Duration) (time.Duration, *clientv3.PutResponse) {
	t.Helper()
	start := time.Now()
	for {
		ctx, cancel := context.WithTimeout(t.Context(), time.Second)
		resp, err := cli.Put(ctx, key, value)
		cancel()
		if err == nil {
			return time.Since(start), resp
		}
		if time.Since(start) > limit {
			t.Fatalf("put %s still failing after %v: %v", key, limit, err)
		}
	}
}

func TestClusterStartsAndAnswers(t *testing.T) {
	netnstest.RequireRoot(t)
	f := NewFabric(t, "ftup")
	c := StartCluster(t, f, 3)
	want := []string{"http://[2001:db8:f::e1]:2379", "http://[2001:db8:f::e2]:2379", "http://[2001:db8:f::e3]:2379"}
	if got := c.Endpoints(); !slices.Equal(got, want) {
		t.Errorf("Endpoints() = %v, want %v", got, want)
	}
	cli := c.Client(t)
	if _, err := cli.Put(ctxFor(t, Wait), "/fleettest/hello", "world"); err != nil {
		t.Fatalf("put: %v", err)
	}
	resp, err := cli.Get(ctxFor(t, Wait), "/fleettest/hello")
	if err != nil || len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != "world" {
		t.Fatalf("get = %v, %v; want world", resp, err)
	}
	members, err := cli.MemberList(ctxFor(t, Wait))
	if err != nil {
		t.Fatalf("member list: %v", err)
	}
	var peers []string
	for _, m := range members.Members {
		peers = append(peers, m.Name+"="+m.PeerURLs[0])
	}
	slices.Sort(peers)
	wantPeers := []string{"e1=http://[2001:db8:f::e1]:2380", "e2=http://[2001:db8:f::e2]:2380", "e3=http://[2001:db8:f::e3]:2380"}
	if !slices.Equal(peers, wantPeers) {
		t.Errorf("members %v, want %v", peers, wantPeers)
	}
	st, err := cli.Status(ctxFor(t, Wait), c.Endpoints()[0])
	if err != nil {
		t.Fatalf("status: %v", err)
	}
	t.Logf("etcd server %s, leader is member %d", st.Version, c.Leader(t))
	if got := c.CountKeys(t, ""); got != 1 {
		t.Errorf("%d keys in the cluster (%v), want only /fleettest/hello: WaitHealthy must leave nothing", got, c.Keys(t, ""))
	}
}

func TestClusterStaysWritableWithoutOneMember(t *testing.T) {
	netnstest.RequireRoot(t)
	tests := []struct {
		name   string
		leader bool
		lose   func(c *Cluster, t testing.TB, i int)
	}{
		{"leader stopped", true, (*Cluster).StopMember},
		{"leader killed", true, (*Cluster).KillMember},
		{"follower killed", false, (*Cluster).KillMember},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := StartCluster(t, NewFabric(t, "ft1"), 3)
			cli := c.Client(t)
			victim := c.Leader(t)
			if !tt.leader {
				victim = (victim + 1) % 3
			}
			tt.lose(c, t, victim)
			took, put := putWithin(t, cli, "/fleettest/after", "loss", Wait)
			t.Logf("writable again %v after losing member %d", took.Round(time.Millisecond), victim)

			c.StartMember(t, victim)
			c.WaitHealthy(t, Wait)
			waitFor(t, Wait, "the restarted member to catch up", func() bool {
				st, err := cli.Status(ctxFor(t, time.Second), c.Endpoints()[victim])
				return err == nil && st.Header.Revision >= put.Header.Revision
			})
		})
	}
}

func TestClusterOutageAndRecovery(t *testing.T) {
	netnstest.RequireRoot(t)
	c := StartCluster(t, NewFabric(t, "ftall"), 3)
	cli := c.Client(t)
	const ttl = 3
	lease, err := cli.Grant(ctxFor(t, Wait), ttl)
	if err != nil {
		t.Fatalf("grant: %v", err)
	}
	if _, err := cli.Put(ctxFor(t, Wait), "/fleettest/claim", "node-a", clientv3.WithLease(lease.ID)); err != nil {
		t.Fatalf("put with lease: %v", err)
	}

	c.StopAll(t)
	down := time.Now()
	// Requests fail with their deadline throughout an outage longer than
	// the lease's TTL.
	for time.Since(down) < (ttl+1)*time.Second {
		ctx, cancel := context.WithTimeout(t.Context(), 500*time.Millisecond)
		_, putErr := cli.Put(ctx, "/fleettest/during", "x")
		_, getErr := cli.Get(ctx, "/fleettest/claim")
		cancel()
		for _, err := range []error{putErr, getErr} {
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("request while every member is down returned %v, want context.DeadlineExceeded", err)
			}
		}
	}

	c.StartAll(t)
	took, _ := putWithin(t, cli, "/fleettest/after", "outage", 15*time.Second)
	t.Logf("writable %v after starting all members again (down for %v)", took.Round(time.Millisecond), time.Since(down).Round(time.Millisecond))
	if took > 10*time.Second {
		t.Errorf("writable only %v after the restart, want within a few seconds", took)
	}

	// A new leader renews every lease: the claim outlived an outage longer
	// than its TTL, and lives on for about a TTL from here.
	live, err := cli.TimeToLive(ctxFor(t, Wait), lease.ID)
	if err != nil {
		t.Fatalf("time to live: %v", err)
	}
	t.Logf("lease of TTL %ds after the outage: %ds left", live.GrantedTTL, live.TTL)
	if live.TTL <= 0 {
		t.Errorf("lease expired during the outage (TTL %d), want it renewed by the new leader", live.TTL)
	}
	c.WaitHealthy(t, Wait)
}

// TestCleanupLeavesNothing runs a cluster in a subtest, restarts a member
// on the way, and checks after the subtest that no process it started
// (by PID) and none of its namespaces is left, and no goroutine.
func TestCleanupLeavesNothing(t *testing.T) {
	netnstest.RequireRoot(t)
	t.Cleanup(func() { goleak.VerifyNone(t) })
	var pids []int
	var names []string
	t.Run("cluster", func(t *testing.T) {
		f := NewFabric(t, "ftcl")
		c := StartCluster(t, f, 3)
		c.Client(t)
		c.KillMember(t, 0)
		c.StartMember(t, 0)
		c.WaitHealthy(t, Wait)
		names = append(names, f.Hub.Name)
		c.mu.Lock()
		for _, m := range c.members {
			pids = append(pids, m.pids...)
			names = append(names, m.ns.Name)
		}
		c.mu.Unlock()
	})
	if len(pids) != 4 {
		t.Fatalf("started PIDs %v, want 4 (3 members, one of them twice)", pids)
	}
	for _, pid := range pids {
		if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
			t.Errorf("PID %d still exists after cleanup (signal 0: %v)", pid, err)
		}
	}
	for _, name := range names {
		if _, err := os.Stat(filepath.Join("/run/netns", name)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("namespace %s still exists after cleanup (%v)", name, err)
		}
	}
}
