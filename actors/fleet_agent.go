package actors

import (
	"context"
	"errors"
	"log/slog"
	"net/netip"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// fleetAgent is one AddressPool incarnation's goroutines on the fleet: a
// watcher that keeps the pool's view current, a keeper that renews the
// node's leases and says when it is no longer safe to lease, workers that
// run the pool's transactions, and the data-plane programmer. Each talks
// to the pool only by messages (send); the pool talks to them by
// non-blocking channel sends, so Receive never waits on etcd.
type fleetAgent struct {
	f       *Fleet
	send    func(any)
	metrics *Metrics
	log     *slog.Logger
	ctx     context.Context
	cancel  context.CancelFunc
	ops     chan *fleetOp
	urgent  chan *fleetOp // block claims and re-registering: ahead of the queue of binds
	plane   chan planeState
	wg      sync.WaitGroup
}

// fleetWorkers bounds the transactions in flight: each waits for a quorum
// write (some tens of ms on a loaded machine), and etcd batches the ones
// that arrive together into one Raft entry and fsync, so setups/s grow
// with this number until etcd's own limit (~850/s on the 2-core test
// machine: 64 workers gave no more, with twice the round trip).
const fleetWorkers = 32

// fleetOpQueue bounds the transactions waiting for a worker; a pool that
// finds it full answers fleet_unavailable rather than wait.
const fleetOpQueue = 4096

// fleetUrgentQueue bounds the block claims and re-registrations waiting;
// the pool has at most a few claims in flight.
const fleetUrgentQueue = 64

// Messages from the agent to the pool.
type (
	// fleetSnapshot is the whole prefix at Rev (after a start or a lost
	// watch): the pool rebuilds its view from it.
	fleetSnapshot struct {
		Events []fleetEvent
		Rev    int64
	}
	// fleetEvents are changes after the snapshot, in order.
	fleetEvents struct{ Events []fleetEvent }
	// fleetHealth is the keeper's verdict: ReadOnly when the node lease
	// may be close to running out (no renewal for TTL/2).
	fleetHealth struct{ ReadOnly bool }
	// fleetLeaseLost says etcd no longer knows one of the node's leases:
	// what it carried is gone and must be claimed again.
	fleetLeaseLost struct{ Node, Bind bool }
	// fleetBindingsExpiring says the binding lease has not been renewed
	// for so long that it may run out before the next attempt: the
	// addresses it protects are about to be free for other nodes.
	fleetBindingsExpiring struct{}
	// fleetOpDone is a transaction's outcome.
	fleetOpDone struct{ Op *fleetOp }
)

func (*fleetSnapshot) IgnoreDeadLetterLogging()         {}
func (*fleetEvents) IgnoreDeadLetterLogging()           {}
func (*fleetHealth) IgnoreDeadLetterLogging()           {}
func (*fleetLeaseLost) IgnoreDeadLetterLogging()        {}
func (*fleetBindingsExpiring) IgnoreDeadLetterLogging() {}
func (*fleetOpDone) IgnoreDeadLetterLogging()           {}

// planeState is the data plane's desired state.
type planeState struct {
	peers []FleetPeer
	local []netip.Addr
}

func startFleetAgent(f *Fleet, send func(any), m *Metrics, log *slog.Logger) *fleetAgent {
	ctx, cancel := context.WithCancel(context.Background())
	a := &fleetAgent{f: f, send: send, metrics: m, log: log, ctx: ctx, cancel: cancel,
		ops: make(chan *fleetOp, fleetOpQueue), urgent: make(chan *fleetOp, fleetUrgentQueue), plane: make(chan planeState, 1)}
	a.wg.Go(a.watch)
	a.wg.Go(a.keep)
	a.wg.Go(a.keepBindings)
	for range fleetWorkers {
		a.wg.Go(a.work)
	}
	if f.cfg.DataPlane != nil {
		a.wg.Go(a.program)
	}
	return a
}

// stop ends every goroutine; requests in flight are cancelled.
func (a *fleetAgent) stop() {
	a.cancel()
	a.wg.Wait()
}

// submit queues a transaction; false when the queue is full. What
// unblocks many setups at once (a block) or the whole node (a lease)
// goes ahead of the binds waiting.
func (a *fleetAgent) submit(op *fleetOp) bool {
	q := a.ops
	if op.kind == opClaimBlock || op.kind == opRejoin {
		q = a.urgent
	}
	select {
	case q <- op:
		return true
	default:
		return false
	}
}

// setPlane replaces the data plane's pending state (latest wins).
func (a *fleetAgent) setPlane(s planeState) {
	select {
	case <-a.plane:
	default:
	}
	a.plane <- s // the only sender, and the slot was just emptied
}

func (a *fleetAgent) sleep(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-a.ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// watch sends a snapshot, then every change after it; a broken watch
// (compaction, a member without a leader) starts over with a snapshot.
func (a *fleetAgent) watch() {
	prefix := a.f.keys.prefix
	for a.ctx.Err() == nil {
		rev, ok := a.snapshot(prefix)
		if !ok {
			a.sleep(500 * time.Millisecond)
			continue
		}
		wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(a.ctx))
		for wr := range a.f.cli.Watch(wctx, prefix, clientv3.WithPrefix(), clientv3.WithRev(rev+1)) {
			if err := wr.Err(); err != nil {
				if a.ctx.Err() == nil {
					a.log.Warn("fleet: etcd watch broke; reloading", slog.Any("err", err))
				}
				break
			}
			if len(wr.Events) > 0 {
				a.send(&fleetEvents{Events: watchEvents(wr.Events)})
			}
		}
		cancel()
	}
}

func (a *fleetAgent) snapshot(prefix string) (int64, bool) {
	ctx, cancel := context.WithTimeout(a.ctx, a.f.cfg.DialTimeout)
	defer cancel()
	start := time.Now()
	resp, err := a.f.cli.Get(ctx, prefix, clientv3.WithPrefix())
	if err != nil {
		if a.ctx.Err() == nil {
			a.log.Debug("fleet: reading the fleet's state failed; retrying", slog.Any("err", err))
		}
		return 0, false
	}
	a.metrics.EtcdRTT(time.Since(start))
	evs := make([]fleetEvent, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		evs = append(evs, fleetEvent{Key: string(kv.Key), Value: kv.Value, ModRev: kv.ModRevision, Lease: kv.Lease})
	}
	a.send(&fleetSnapshot{Events: evs, Rev: resp.Header.Revision})
	return resp.Header.Revision, true
}

func watchEvents(in []*clientv3.Event) []fleetEvent {
	out := make([]fleetEvent, 0, len(in))
	for _, e := range in {
		out = append(out, fleetEvent{Key: string(e.Kv.Key), Value: e.Kv.Value, Deleted: e.Type == clientv3.EventTypeDelete,
			ModRev: e.Kv.ModRevision, Lease: e.Kv.Lease})
	}
	return out
}

// keep renews the node lease every TTL/6. The node turns read-only when
// the node lease has not been renewed for TTL/2, measured from when the
// last successful renewal was sent (etcd counts the TTL from when it
// received it, which is later): it then stops leasing before the lease
// can have run out, so no other node can be given a block it still
// leases from. While the node is not read-only, no renewal or pause runs
// past that deadline, so the verdict is never late because etcd hangs;
// renewing at TTL/6 leaves a slow renewal TTL/3, and a failed one two
// more tries, before the deadline. The binding lease has its own loop
// (keepBindings), so that a slow renewal of it never takes the node
// lease's time.
func (a *fleetAgent) keep() {
	ttl := a.f.cfg.TTL
	every := max(ttl/6, 200*time.Millisecond)
	var lastNode time.Time
	readOnly, told := true, false
	judge := func() {
		if ro := lastNode.IsZero() || time.Since(lastNode) >= ttl/2; ro != readOnly || !told {
			readOnly, told = ro, true
			a.send(&fleetHealth{ReadOnly: ro})
		}
	}
	// left is the time to the read-only deadline; while read-only there
	// is none, and renewals and pauses take every.
	left := func() time.Duration {
		if readOnly {
			return every
		}
		return max(time.Until(lastNode.Add(ttl/2)), time.Millisecond)
	}
	for {
		sent := time.Now()
		if okAt, ok := a.renew(a.f.leases.Load().node, "node", left(), func() { a.send(&fleetLeaseLost{Node: true}) }); ok {
			lastNode = okAt
		}
		judge()
		if !a.sleep(min(max(time.Until(sent.Add(every)), time.Millisecond), left())) {
			return
		}
		judge()
	}
}

// keepBindings renews the binding lease every TTL/6 and, when it has not
// been renewed for so long that it might run out (a TTL before its end,
// or half its life when that is shorter), tells the pool to close every
// session while the bindings surely still stand.
func (a *fleetAgent) keepBindings() {
	every := max(a.f.cfg.TTL/6, 200*time.Millisecond)
	last, warned := time.Now(), false
	for {
		l := a.f.leases.Load()
		if okAt, ok := a.renew(l.bind, "binding", every, func() { a.send(&fleetLeaseLost{Bind: true}) }); ok {
			last, warned = okAt, false
		}
		if !warned && time.Since(last) > l.bindTTL-min(a.f.cfg.TTL, l.bindTTL/2) {
			warned = true
			a.send(&fleetBindingsExpiring{})
		}
		if !a.sleep(every) {
			return
		}
	}
}

// renew sends one keep-alive, waiting at most timeout; it reports when the
// successful one was sent.
func (a *fleetAgent) renew(id clientv3.LeaseID, which string, timeout time.Duration, lost func()) (time.Time, bool) {
	ctx, cancel := context.WithTimeout(a.ctx, timeout)
	defer cancel()
	start := time.Now()
	_, err := a.f.cli.KeepAliveOnce(ctx, id)
	if err == nil {
		a.metrics.EtcdRTT(time.Since(start))
		return start, true
	}
	if a.ctx.Err() != nil {
		return time.Time{}, false
	}
	a.metrics.FleetRenewFailures.Add(1)
	if errors.Is(err, rpctypes.ErrLeaseNotFound) {
		a.log.Error("fleet: etcd no longer has the "+which+" lease; claiming again", slog.Any("err", err))
		lost()
		return time.Time{}, false
	}
	a.log.Warn("fleet: renewing the "+which+" lease failed", slog.Any("err", err))
	return time.Time{}, false
}

func (a *fleetAgent) work() {
	for {
		var op *fleetOp
		select {
		case op = <-a.urgent:
		default:
			select {
			case <-a.ctx.Done():
				return
			case op = <-a.urgent:
			case op = <-a.ops:
			}
		}
		start := time.Now()
		op.err = op.run(a.ctx, a.f)
		if op.err == nil {
			a.metrics.EtcdRTT(time.Since(start))
		}
		if a.ctx.Err() != nil {
			return
		}
		a.send(&fleetOpDone{Op: op})
	}
}

// program applies the data plane's latest state; a failure is logged and
// retried after a second (or at the next change).
func (a *fleetAgent) program() {
	var want *planeState
	retry := time.NewTimer(time.Hour)
	defer retry.Stop()
	for {
		select {
		case <-a.ctx.Done():
			return
		case s := <-a.plane:
			want = &s
		case <-retry.C:
		}
		if want == nil {
			continue
		}
		if err := a.apply(*want); err != nil {
			a.log.Error("fleet: programming routes to other nodes failed; retrying", slog.Any("err", err))
			retry.Reset(time.Second)
			continue
		}
		want = nil
	}
}

func (a *fleetAgent) apply(s planeState) error {
	dp := a.f.cfg.DataPlane
	if err := dp.SetPeers(s.peers); err != nil {
		return err
	}
	return dp.SetLocal(s.local)
}
