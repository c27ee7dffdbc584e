package actors

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
)

// Fleet is this node's membership of a fleet: its etcd client and leases,
// made by JoinFleet before the engine starts and closed after it stops.
// While the engine runs, the AddressPool owns all I/O on it (fleet_agent.go).
type Fleet struct {
	cfg     FleetConfig
	keys    fleetKeys
	cli     *clientv3.Client
	upSince time.Time
	// leases is the pool's hand-over to its next incarnation: the leases
	// it renews, replaced only by the pool when it had to re-grant them.
	leases    atomic.Pointer[fleetLeases]
	closeOnce sync.Once
	closeErr  error
}

// fleetLeases are a node's two etcd leases (see fleet_keys.go).
type fleetLeases struct {
	node, bind clientv3.LeaseID
	bindTTL    time.Duration
}

func (c FleetConfig) withDefaults() FleetConfig {
	if c.BlockBits == 0 {
		c.BlockBits = DefaultBlockBits
	}
	if c.TTL == 0 {
		c.TTL = DefaultEtcdTTL
	}
	if c.Prefix == "" {
		c.Prefix = DefaultEtcdPrefix
	}
	if c.Grace == 0 {
		c.Grace = DefaultGrace
	}
	if c.DialTimeout == 0 {
		// A transaction that commits late is still right (etcd decides),
		// so requests may wait longer than the renewals, which must not.
		c.DialTimeout = max(c.TTL/3, 5*time.Second)
	}
	if c.SourcePrefix == 0 {
		c.SourcePrefix = DefaultSourcePrefix
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

func (c FleetConfig) validate() error {
	switch {
	case len(c.Endpoints) == 0:
		return errors.New("no etcd endpoints")
	case c.Node == "":
		return errors.New("no node name")
	case !c.NodeAddr.Is6() || c.NodeAddr.IsUnspecified():
		return fmt.Errorf("node address %v is not a specific IPv6 address", c.NodeAddr)
	case !c.Pool.IsValid() || !c.Pool.Addr().Is4():
		return fmt.Errorf("pool %v is not an IPv4 prefix", c.Pool)
	case c.BlockBits <= c.Pool.Bits() || c.BlockBits > 30:
		return fmt.Errorf("block length /%d must be longer than the pool's /%d and at most /30", c.BlockBits, c.Pool.Bits())
	}
	return nil
}

// JoinFleet connects to etcd, checks that the fleet's address plan is
// cfg's (a node with another pool must not join: it would lease addresses
// the others do not know of) and registers this node under a lease of
// cfg.TTL. A registration of the same name left by a crashed process is
// waited out (at most one TTL); a live node of that name fails the join.
func JoinFleet(ctx context.Context, cfg FleetConfig) (*Fleet, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("join fleet: %w", err)
	}
	cc := clientv3.Config{Endpoints: cfg.Endpoints, DialTimeout: cfg.DialTimeout, Logger: quietZap(),
		DialKeepAliveTime: cfg.TTL, DialKeepAliveTimeout: cfg.DialTimeout}
	// gRPC's default backoff grows to 2 minutes between attempts to reach
	// a member that refused us: after an etcd outage the node would stay
	// read-only long after etcd is back. A second is plenty of politeness.
	bo := backoff.DefaultConfig
	bo.MaxDelay = time.Second
	cc.DialOptions = []grpc.DialOption{grpc.WithConnectParams(grpc.ConnectParams{Backoff: bo, MinConnectTimeout: cfg.DialTimeout})}
	if cfg.Dialer != nil {
		cc.DialOptions = append(cc.DialOptions, grpc.WithContextDialer(cfg.Dialer))
	}
	cli, err := clientv3.New(cc)
	if err != nil {
		return nil, fmt.Errorf("join fleet: connect to etcd %v: %w", cfg.Endpoints, err)
	}
	f := &Fleet{cfg: cfg, keys: fleetKeys{prefix: cfg.Prefix}, cli: cli, upSince: time.Now().UTC().Truncate(time.Second)}
	if err := f.join(ctx); err != nil {
		cli.Close()
		return nil, fmt.Errorf("join fleet at %v as %q: %w", cfg.Endpoints, cfg.Node, err)
	}
	return f, nil
}

func (f *Fleet) join(ctx context.Context) error {
	if err := f.checkPlan(ctx); err != nil {
		return err
	}
	node, err := f.grant(ctx, f.cfg.TTL)
	if err != nil {
		return err
	}
	bindTTL := max(f.cfg.Grace, f.cfg.TTL)
	bind, err := f.grant(ctx, bindTTL)
	if err != nil {
		return err
	}
	f.leases.Store(&fleetLeases{node: node, bind: bind, bindTTL: bindTTL})
	return f.register(ctx, node)
}

// checkPlan creates the config record if the fleet is new, else compares.
func (f *Fleet) checkPlan(ctx context.Context) error {
	want := fleetPlan{Pool: f.cfg.Pool.Masked().String(), BlockBits: f.cfg.BlockBits, SourcePrefix: f.cfg.SourcePrefix}
	key := f.keys.config()
	resp, err := f.commit(ctx, func(t clientv3.Txn) clientv3.Txn {
		return t.If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
			Then(clientv3.OpPut(key, encode(want))).Else(clientv3.OpGet(key))
	})
	if err != nil {
		return fmt.Errorf("check the address plan: %w", err)
	}
	if resp.Succeeded {
		f.cfg.Logger.Info("fleet: created the address plan", slog.String("pool", want.Pool), slog.Int("block_bits", want.BlockBits),
			slog.Int("source_prefix", want.SourcePrefix))
		return nil
	}
	kvs := resp.Responses[0].GetResponseRange().Kvs
	if len(kvs) == 0 {
		return errors.New("check the address plan: config record vanished; try again")
	}
	var have fleetPlan
	if err := json.Unmarshal(kvs[0].Value, &have); err != nil {
		return fmt.Errorf("check the address plan: %s is not a plan: %w", key, err)
	}
	if have != want {
		return fmt.Errorf("refusing to join: the fleet's plan is pool %s with /%d blocks and /%d sources, ours is pool %s with /%d blocks and /%d sources (every node needs the same -pool, -block-bits and -source-prefix)",
			have.Pool, have.BlockBits, have.SourcePrefix, want.Pool, want.BlockBits, want.SourcePrefix)
	}
	return nil
}

func (f *Fleet) grant(ctx context.Context, ttl time.Duration) (clientv3.LeaseID, error) {
	cctx, cancel := context.WithTimeout(ctx, f.cfg.DialTimeout)
	defer cancel()
	resp, err := f.cli.Grant(cctx, int64((ttl+time.Second-1)/time.Second))
	if err != nil {
		return 0, fmt.Errorf("grant a lease of %v: %w", ttl, err)
	}
	return resp.ID, nil
}

// register puts nodes/NAME if absent. A record of the same name is a
// crashed predecessor (its lease runs out within one TTL) or a live node
// (it never does): wait one TTL and a bit, then give up.
func (f *Fleet) register(ctx context.Context, lease clientv3.LeaseID) error {
	key := f.keys.node(f.cfg.Node)
	deadline := time.Now().Add(f.cfg.TTL + 2*time.Second)
	logged := false
	for {
		resp, err := f.commit(ctx, func(t clientv3.Txn) clientv3.Txn {
			return t.If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
				Then(clientv3.OpPut(key, encode(f.record(0, 0)), clientv3.WithLease(lease)))
		})
		if err != nil {
			return fmt.Errorf("register: %w", err)
		}
		if resp.Succeeded {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("register: node name %q is held by a live node (choose another -node)", f.cfg.Node)
		}
		if !logged {
			f.cfg.Logger.Warn("fleet: a node of this name is registered; waiting for its lease to run out (a crashed predecessor) or giving up (a live node)",
				slog.String("node", f.cfg.Node), slog.Duration("at_most", f.cfg.TTL+2*time.Second))
			logged = true
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
}

func (f *Fleet) record(sessions, leased int) nodeRecord {
	mac := ""
	if f.cfg.MAC != nil {
		mac = f.cfg.MAC.String()
	}
	return nodeRecord{Name: f.cfg.Node, Addr: f.cfg.NodeAddr.String(), MAC: mac, UpSince: f.upSince, Sessions: sessions, Leased: leased}
}

// commit runs one transaction bounded by the request timeout.
func (f *Fleet) commit(ctx context.Context, build func(clientv3.Txn) clientv3.Txn) (*clientv3.TxnResponse, error) {
	cctx, cancel := context.WithTimeout(ctx, f.cfg.DialTimeout)
	defer cancel()
	return build(f.cli.Txn(cctx)).Commit()
}

// Close leaves the fleet: it revokes the node's lease, so its blocks and
// claims go at once (bindings stay for -grace, for clients that move), and
// closes the etcd client. Safe to call twice.
func (f *Fleet) Close() error {
	f.closeOnce.Do(func() {
		if l := f.leases.Load(); l != nil {
			ctx, cancel := context.WithTimeout(context.Background(), f.cfg.DialTimeout)
			_, err := f.cli.Revoke(ctx, l.node)
			cancel()
			if err != nil {
				f.closeErr = fmt.Errorf("leave fleet: revoke the node lease (its blocks go when it runs out, within %v): %w", f.cfg.TTL, err)
			}
		}
		if err := f.cli.Close(); err != nil && f.closeErr == nil {
			f.closeErr = fmt.Errorf("leave fleet: close the etcd client: %w", err)
		}
	})
	return f.closeErr
}

// quietZap keeps the etcd client's own logger quiet: its errors reach us
// as returned errors, which we log with context.
func quietZap() *zap.Logger { return zap.NewNop() }
