//go:build linux

package fleettest

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// WaitHealthy waits until every running member names the same leader, one
// of them, and the cluster commits a Put that a Get then reads (so a
// quorum is up), failing the test after timeout, or at once when a
// running member has exited on its own.
func (c *Cluster) WaitHealthy(t testing.TB, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		c.failOnExit(t)
		err := c.healthy(t.Context())
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("etcd cluster not healthy after %v: %v", timeout, err)
		}
		time.Sleep(pollEvery)
	}
}

// failOnExit fails the test if a member that should be running has exited.
func (c *Cluster) failOnExit(t testing.TB) {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, m := range c.members {
		if m.proc != nil && !m.proc.running() {
			t.Fatalf("etcd %s (PID %d) exited on its own: %v; last lines of %s:\n%s",
				m.name, m.proc.cmd.Process.Pid, m.proc.err, m.logPath, tail(m.logPath, 30))
		}
	}
}

// healthy checks the leader and a write and read, for WaitHealthy.
func (c *Cluster) healthy(ctx context.Context) error {
	if _, err := c.leader(ctx); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	want := strconv.FormatInt(time.Now().UnixNano(), 10)
	if _, err := c.admin.Put(ctx, healthKey, want); err != nil {
		return fmt.Errorf("failed to put %s: %w", healthKey, err)
	}
	resp, err := c.admin.Get(ctx, healthKey)
	if err != nil {
		return fmt.Errorf("failed to get %s: %w", healthKey, err)
	}
	if len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != want {
		return fmt.Errorf("get %s read %v, want the value %q just put", healthKey, resp.Kvs, want)
	}
	if _, err := c.admin.Delete(ctx, healthKey); err != nil {
		return fmt.Errorf("failed to delete %s: %w", healthKey, err)
	}
	return nil
}

// Leader returns the index (0-based) of the current leader, waiting up
// to Wait for the running members to agree on one.
func (c *Cluster) Leader(t testing.TB) int {
	t.Helper()
	deadline := time.Now().Add(Wait)
	for {
		i, err := c.leader(t.Context())
		if err == nil {
			return i
		}
		if time.Now().After(deadline) {
			t.Fatalf("no etcd leader after %v: %v", Wait, err)
		}
		time.Sleep(pollEvery)
	}
}

// leader asks every running member for its status and returns the index
// of the leader they all name, or why there is none.
func (c *Cluster) leader(ctx context.Context) (int, error) {
	running := c.runningMembers()
	var leader uint64
	index := -1
	for i, m := range c.members {
		if !running[i] {
			continue
		}
		st, err := c.status(ctx, m.clientURL())
		if err != nil {
			return -1, fmt.Errorf("status of %s: %w", m.name, err)
		}
		switch {
		case st.Leader == 0:
			return -1, fmt.Errorf("%s has no leader", m.name)
		case leader != 0 && st.Leader != leader:
			return -1, fmt.Errorf("%s names leader %x, others %x", m.name, st.Leader, leader)
		}
		leader = st.Leader
		if st.Header.MemberId == leader {
			index = i
		}
	}
	if index < 0 {
		return -1, fmt.Errorf("the leader %x is none of the running members", leader)
	}
	return index, nil
}

func (c *Cluster) status(ctx context.Context, endpoint string) (*clientv3.StatusResponse, error) {
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	st, err := c.admin.Status(ctx, endpoint)
	if err != nil {
		return nil, err
	}
	if st.Header == nil {
		return nil, errors.New("status without a header")
	}
	return st, nil
}

// CountKeys returns how many keys exist under prefix (a count-only range
// read), e.g. to check that nodes leave nothing behind.
func (c *Cluster) CountKeys(t testing.TB, prefix string) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), requestTimeout)
	defer cancel()
	resp, err := c.admin.Get(ctx, prefix, clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		t.Fatalf("failed to count keys under %q: %v", prefix, err)
	}
	return int(resp.Count)
}

// Keys returns the keys under prefix, sorted, to show what was left
// behind when CountKeys finds something.
func (c *Cluster) Keys(t testing.TB, prefix string) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), requestTimeout)
	defer cancel()
	resp, err := c.admin.Get(ctx, prefix, clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		t.Fatalf("failed to list keys under %q: %v", prefix, err)
	}
	keys := make([]string, len(resp.Kvs))
	for i, kv := range resp.Kvs {
		keys[i] = string(kv.Key)
	}
	return keys
}

// Value returns the value stored at key, or "" when it does not exist, to
// check who holds a record.
func (c *Cluster) Value(t testing.TB, key string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), requestTimeout)
	defer cancel()
	resp, err := c.admin.Get(ctx, key)
	if err != nil {
		t.Fatalf("failed to read %q: %v", key, err)
	}
	if len(resp.Kvs) == 0 {
		return ""
	}
	return string(resp.Kvs[0].Value)
}
