package actors

import (
	"context"
	"fmt"
	"net/netip"

	"github.com/4over6d/4over6d/messages"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// opKind names the fleet's transactions (fleet_keys.go has the keys).
type opKind int

const (
	opClaimBlock   opKind = iota // create blocks/FIRST for us if absent
	opReleaseBlock               // delete our empty block
	opBind                       // create or take over (by revision) addrs/ADDR for a client of ours
	opTakeover                   // bind an address of a dead node's client to us, and claim it
	opMove                       // ask the live holder of a client's address to hand it over
	opHandover                   // rebind our client's address to the node that asked for it
	opClaim                      // create claims/ADDR for us if absent
	opUnbind                     // delete a binding whose grace ran out
	opDeleteMove                 // withdraw a move request
	opNodeUpdate                 // refresh our node record's numbers
	opRejoin                     // grant a lease etcd lost, and register again
	opRead                       // read a binding and a client record the view does not have yet
	opStatics                    // replace the static reservations' table (by revision)
)

// fleetOp is one transaction the pool asked for, and its outcome. The
// pool fills the inputs; a worker runs it and sets ok, rev and err.
type fleetOp struct {
	kind    opKind
	session string            // the session it serves, if any
	addr    netip.Addr        // the address or block's first address
	src     netip.Addr        // the client's source (clients/ and moves/ key)
	client  netip.Addr        // the client's IPv6 address
	prev    int64             // addrs/ADDR revision to compare (0: must be absent)
	node    string            // opTakeover: the dead node; opHandover: the new holder
	lease   int64             // opHandover: the new holder's binding lease
	claim   bool              // opTakeover: also claim the address
	cleanup netip.Addr        // opBind: a stale clients/ key to delete (a stolen reservation's)
	srcRev  int64             // opBind: clients/SOURCE revision to compare (0: must be absent)
	numbers [2]int            // opNodeUpdate: sessions, leased
	lost    [2]bool           // opRejoin: node lease, binding lease
	statics []messages.Static // opStatics: the new table (prev: the statics key's revision)

	answer []fleetEvent // a failed opBind/opTakeover: the records it compared, as they are

	ok  bool  // the transaction's conditions held
	rev int64 // the revision it wrote at
	err error // etcd failed: nothing is known to have changed
}

func (op *fleetOp) run(ctx context.Context, f *Fleet) error {
	if op.kind == opRejoin {
		return f.rejoin(ctx, op.lost)
	}
	resp, err := f.commit(ctx, func(t clientv3.Txn) clientv3.Txn { return op.txn(t, f) })
	if err != nil {
		return fmt.Errorf("fleet transaction %d on %v: %w", op.kind, op.addr, err)
	}
	op.ok, op.rev = resp.Succeeded, resp.Header.Revision
	if !op.ok || op.kind == opRead {
		op.answer = answerOf(resp, op, f.keys)
	}
	return nil
}

// txn builds the transaction; every write that decides who has an
// address is conditional on what the pool saw.
func (op *fleetOp) txn(t clientv3.Txn, f *Fleet) clientv3.Txn {
	k, me, l := f.keys, f.cfg.Node, f.leases.Load()
	node, bind := clientv3.WithLease(l.node), clientv3.WithLease(l.bind)
	absent := func(key string) clientv3.Cmp { return clientv3.Compare(clientv3.CreateRevision(key), "=", 0) }
	atRev := func(key string, rev int64) clientv3.Cmp { return clientv3.Compare(clientv3.ModRevision(key), "=", rev) }
	bindTo := func(who string, opt clientv3.OpOption) []clientv3.Op {
		return []clientv3.Op{
			clientv3.OpPut(k.addr(op.addr), encode(bindingRecord{Node: who, Client: op.client.String()}), opt),
			clientv3.OpPut(k.client(op.src), encode(clientRecord{Addr: op.addr.String()}), opt),
		}
	}
	mine := encode(ownerRecord{Node: me})
	switch op.kind {
	case opClaimBlock:
		return t.If(absent(k.block(op.addr))).Then(clientv3.OpPut(k.block(op.addr), mine, node))
	case opReleaseBlock:
		return t.If(clientv3.Compare(clientv3.Value(k.block(op.addr)), "=", mine)).Then(clientv3.OpDelete(k.block(op.addr)))
	case opBind:
		ops := bindTo(me, bind)
		if op.cleanup.IsValid() {
			ops = append(ops, clientv3.OpDelete(k.client(op.cleanup)))
		}
		return t.If(atRev(k.addr(op.addr), op.prev), atRev(k.client(op.src), op.srcRev)).Then(ops...).Else(op.readBack(k)...)
	case opTakeover:
		cmps := []clientv3.Cmp{absent(k.node(op.node)), atRev(k.addr(op.addr), op.prev)}
		ops := bindTo(me, bind)
		if op.claim {
			cmps = append(cmps, absent(k.claim(op.addr)))
			ops = append(ops, clientv3.OpPut(k.claim(op.addr), mine, node))
		}
		return t.If(cmps...).Then(ops...).Else(op.readBack(k)...)
	case opMove:
		return t.Then(clientv3.OpPut(k.move(op.src), encode(moveRecord{Node: me, Lease: int64(l.bind)}), node))
	case opHandover:
		ops := append(bindTo(op.node, clientv3.WithLease(clientv3.LeaseID(op.lease))), clientv3.OpDelete(k.move(op.src)))
		if op.claim {
			ops = append(ops, clientv3.OpDelete(k.claim(op.addr)))
		}
		return t.If(atRev(k.addr(op.addr), op.prev)).Then(ops...)
	case opClaim:
		return t.If(absent(k.claim(op.addr))).Then(clientv3.OpPut(k.claim(op.addr), mine, node))
	case opUnbind:
		ops := []clientv3.Op{clientv3.OpDelete(k.addr(op.addr))}
		if op.src.IsValid() {
			ops = append(ops, clientv3.OpDelete(k.client(op.src)))
		}
		if op.claim {
			ops = append(ops, clientv3.OpDelete(k.claim(op.addr)))
		}
		return t.If(atRev(k.addr(op.addr), op.prev)).Then(ops...)
	case opDeleteMove:
		return t.If(clientv3.Compare(clientv3.LeaseValue(k.move(op.src)), "=", l.node)).Then(clientv3.OpDelete(k.move(op.src)))
	case opRead:
		return t.Then(op.readBack(k)...)
	case opStatics:
		return t.If(atRev(k.statics(), op.prev)).Then(clientv3.OpPut(k.statics(), encodeStatics(op.statics))).Else(op.readBack(k)...)
	case opNodeUpdate:
		return t.Then(clientv3.OpPut(k.node(me), encode(f.record(op.numbers[0], op.numbers[1])), node))
	}
	panic(fmt.Sprintf("fleet: unknown transaction kind %d", op.kind))
}

// rejoin replaces the leases etcd lost and registers the node again;
// what the old node lease carried (blocks, claims) the pool claims anew.
func (f *Fleet) rejoin(ctx context.Context, lost [2]bool) error {
	cur := *f.leases.Load()
	if lost[0] {
		id, err := f.grant(ctx, f.cfg.TTL)
		if err != nil {
			return err
		}
		cur.node = id
	}
	if lost[1] {
		id, err := f.grant(ctx, cur.bindTTL)
		if err != nil {
			return err
		}
		cur.bind = id
	}
	f.leases.Store(&cur)
	if lost[0] {
		return f.register(ctx, cur.node)
	}
	return nil
}

// readBack reads the records a bind or takeover compares, for the pool to
// learn what beat it without waiting for the watch.
func (op *fleetOp) readBack(k fleetKeys) []clientv3.Op {
	keys := op.readKeys(k)
	ops := make([]clientv3.Op, len(keys))
	for i, key := range keys {
		ops[i] = clientv3.OpGet(key)
	}
	return ops
}

func (op *fleetOp) readKeys(k fleetKeys) []string {
	if op.kind == opStatics {
		return []string{k.statics()}
	}
	return []string{k.addr(op.addr), k.client(op.src)}
}

// answerOf turns a failed transaction's reads into events: a record that
// is absent becomes a delete at the response's revision.
func answerOf(resp *clientv3.TxnResponse, op *fleetOp, k fleetKeys) []fleetEvent {
	keys := op.readKeys(k)
	if len(resp.Responses) != len(keys) {
		return nil
	}
	out := make([]fleetEvent, 0, len(keys))
	for i, r := range resp.Responses {
		kvs := r.GetResponseRange().GetKvs()
		if len(kvs) == 0 {
			out = append(out, fleetEvent{Key: keys[i], Deleted: true, ModRev: resp.Header.Revision})
			continue
		}
		kv := kvs[0]
		out = append(out, fleetEvent{Key: string(kv.Key), Value: kv.Value, ModRev: kv.ModRevision, Lease: kv.Lease})
	}
	return out
}
